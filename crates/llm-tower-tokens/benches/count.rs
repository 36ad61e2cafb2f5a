//! Token counting throughput: exact (tiktoken) vs heuristic, on the shipped corpus.
//! `cargo bench -p llm-tower-tokens`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_tower_tokens::{Family, Heuristic, Tiktoken, TokenCounter};

fn corpus() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let one: String = files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    one.repeat(16)
}

fn counting(c: &mut Criterion) {
    let text = corpus();
    let exact = Tiktoken::new(Family::O200k).unwrap();
    let tokens = exact.count_text(&text);
    let mut g = c.benchmark_group("count_tokens");
    // Throughput in tokens (exact count of the text), so the figure reads as tokens/s.
    g.throughput(Throughput::Elements(u64::from(tokens)));
    g.bench_function("tiktoken_o200k", |b| b.iter(|| black_box(exact.count_text(black_box(&text)))));
    let cl = Tiktoken::new(Family::Cl100k).unwrap();
    g.bench_function("tiktoken_cl100k", |b| b.iter(|| black_box(cl.count_text(black_box(&text)))));
    let h = Heuristic::default();
    g.bench_function("heuristic", |b| b.iter(|| black_box(h.count_text(black_box(&text)))));
    g.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
