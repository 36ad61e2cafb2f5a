//! Token counting throughput: exact (tiktoken) vs heuristic, on the shipped
//! corpus; and a chat request's input count as a layer makes it, with the
//! request parsed once (`ChatParts`) or its body parsed again for the count.
//! `cargo bench -p llm-tower-tokens --bench count`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use bytes::Bytes;
use llm_tower_core::{Api, LlmBody, RequestInfo};
use llm_tower_tokens::{Family, Heuristic, Tiktoken, TokenCounter, count_body, count_input};

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

/// A chat request of `turns` user/assistant turns after a system prompt,
/// each message a sentence or two of the corpus.
fn chat(model: &str, turns: usize) -> Bytes {
    let text = corpus();
    let words: Vec<&str> = text.split_whitespace().collect();
    let say =
        |i: usize| serde_json::to_string(&words[i * 24 % (words.len() - 24)..][..24].join(" ")).unwrap();
    let mut messages = vec![format!(r#"{{"role":"system","content":{}}}"#, say(0))];
    for t in 0..turns {
        let role = if t % 2 == 0 { "user" } else { "assistant" };
        messages.push(format!(r#"{{"role":"{role}","content":{}}}"#, say(t + 1)));
    }
    let body = format!(r#"{{"model":"{model}","temperature":0.2,"messages":[{}]}}"#, messages.join(","));
    Bytes::from(body)
}

fn request(body: &Bytes) -> http::Request<LlmBody> {
    http::Request::post("/v1/chat/completions").body(LlmBody::from(body.clone())).unwrap()
}

fn request_count(c: &mut Criterion) {
    let mut g = c.benchmark_group("count_body");
    // An exact count (tiktoken: most of the time is the tokenizer's) and an
    // estimate (a model without a tokenizer: most of it is the parse).
    for (model, turns) in [("gpt-4o-mini", 1), ("gpt-4o-mini", 7), ("llama-3.1-8b", 1), ("llama-3.1-8b", 7)] {
        let body = chat(model, turns);
        let name = |how: &str| format!("{how}/{model}/{}B", body.len());
        g.throughput(Throughput::Bytes(body.len() as u64));
        // Before `ChatParts`: the info's parse, then the count's own parse of the body.
        g.bench_function(name("parsed_twice"), |b| {
            b.iter(|| {
                let mut req = request(&body);
                let info = Arc::new(RequestInfo::parse(Api::ChatCompletions, req.body().as_bytes()).unwrap());
                req.extensions_mut().insert(info.clone());
                black_box(count_input(&info, req.body().as_bytes()))
            })
        });
        // `RequestInfo::ensure` keeps the parts; the count reads them.
        g.bench_function(name("parsed_once"), |b| {
            b.iter(|| {
                let mut req = request(&body);
                let info = RequestInfo::ensure(&mut req).unwrap();
                black_box(count_body(&info, req.body()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, counting, request_count);
criterion_main!(benches);
