//! RequestInfo parsing and usage extraction.
//!
//! `cargo bench -p llm-tower-core`. The lazy `RequestInfo` parse is measured
//! next to a full `serde_json::Value` parse of the same body, in the same run.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};
use llm_tower_core::{Api, RequestInfo};

/// A chat request of about `size` bytes.
fn chat_request(size: usize) -> Vec<u8> {
    let mut messages = vec![serde_json::json!({"role": "system", "content": "You are a careful assistant."})];
    let mut i = 0;
    while serde_json::to_vec(&messages).unwrap().len() < size.saturating_sub(200) {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": format!("message {i}: the quick brown fox jumps over the lazy dog. \"quoted\" and \\escaped\\ text")}));
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": 256, "temperature": 0.2, "messages": messages,
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    }))
    .unwrap()
}

/// An OpenAI chat SSE stream of `chunks` content chunks plus the usage chunk.
fn sse_stream(chunks: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..chunks {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5000,\"total_tokens\":5010}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

fn parse(c: &mut Criterion) {
    for (name, size) in [("1KiB", 1024), ("32KiB", 32 * 1024)] {
        let body = chat_request(size);
        let mut g = c.benchmark_group(format!("request_parse/{name}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("RequestInfo::parse", |b| {
            b.iter(|| RequestInfo::parse(Api::ChatCompletions, black_box(&body)).unwrap())
        });
        g.bench_function("serde_json::Value", |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
        });
        g.finish();
    }
}

fn extract(c: &mut Criterion) {
    let stream = sse_stream(5000);
    let pieces: Vec<Bytes> = stream.chunks(4096).map(Bytes::copy_from_slice).collect();
    let mut g = c.benchmark_group("usage_extract");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("sse_4KiB_reads", |b| {
        b.iter(|| {
            let mut x = UsageExtractor::new(BodyKind::Sse);
            for p in &pieces {
                x.feed(p);
            }
            let r = x.finish(StreamEnd::Complete);
            assert_eq!(r.usage.unwrap().output, 5000);
        })
    });
    let per_event: Vec<Bytes> = stream.split_inclusive(|&b| b == b'\n').map(Bytes::copy_from_slice).collect();
    g.bench_function("sse_line_reads", |b| {
        b.iter(|| {
            let mut x = UsageExtractor::new(BodyKind::Sse);
            for p in &per_event {
                x.feed(p);
            }
            x.finish(StreamEnd::Complete)
        })
    });
    g.finish();
}

criterion_group!(benches, parse, extract);
criterion_main!(benches);
