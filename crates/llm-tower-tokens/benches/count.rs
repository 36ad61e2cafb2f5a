//! Token counting throughput: exact (tiktoken) vs heuristic, on the shipped
//! corpus; and a chat request's input count as a layer makes it, with the
//! request parsed once (`ChatParts`) or its body parsed again for the count.
//! `cargo bench -p llm-tower-tokens --bench count`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use llm_tower_tokens::{Family, Heuristic, Tiktoken, TokenCounter};

#[path = "support/chat_body.rs"]
mod chat_body;
use chat_body::{chat, parsed_once, parsed_twice};

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

fn request_count(c: &mut Criterion) {
    let text = corpus();
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut g = c.benchmark_group("count_body");
    // An exact count (tiktoken: most of the time is the tokenizer's) and an
    // estimate (a model without a tokenizer: most of it is the parse).
    for (model, turns) in [("gpt-4o-mini", 1), ("gpt-4o-mini", 7), ("llama-3.1-8b", 1), ("llama-3.1-8b", 7)] {
        let body = chat(model, turns, &words);
        let name = |how: &str| format!("{how}/{model}/{}B", body.len());
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name("parsed_twice"), |b| b.iter(|| black_box(parsed_twice(&body))));
        g.bench_function(name("parsed_once"), |b| b.iter(|| black_box(parsed_once(&body))));
    }
    g.finish();
}

criterion_group!(benches, counting, request_count);
criterion_main!(benches);
