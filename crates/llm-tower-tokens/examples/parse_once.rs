//! The input count of a chat request as a layer makes it, with the request
//! parsed once (the count reads the body's `chat_parts`) or twice (the count
//! parses the body again, as before `ChatParts`), for instruction counts under
//! callgrind: run it at two request counts and divide the difference.
//!
//! ```text
//! cargo build --release -p llm-tower-tokens --example parse_once
//! valgrind --tool=callgrind target/release/examples/parse_once once gpt-4o-mini 7 1200
//! ```
//!
//! Arguments: `once` or `twice`, the model (`gpt-4o-mini`: the exact count;
//! `llama-3.1-8b`: the estimate), the turns after the system prompt, the
//! requests. It prints the body's size and the count, the same either way.

use bytes::Bytes;
use llm_tower_core::{Api, LlmBody, RequestInfo};
use llm_tower_tokens::{count_body, count_input};
use std::sync::Arc;
fn chat(model: &str, turns: usize) -> Bytes {
    let words: Vec<String> = (0..400).map(|i| format!("word{}", i % 37)).collect();
    let say =
        |i: usize| serde_json::to_string(&words[i * 24 % (words.len() - 24)..][..24].join(" ")).unwrap();
    let mut messages = vec![format!(r#"{{"role":"system","content":{}}}"#, say(0))];
    for t in 0..turns {
        let role = if t % 2 == 0 { "user" } else { "assistant" };
        messages.push(format!(r#"{{"role":"{role}","content":{}}}"#, say(t + 1)));
    }
    Bytes::from(format!(r#"{{"model":"{model}","temperature":0.2,"messages":[{}]}}"#, messages.join(",")))
}
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let [_, mode, model, turns, n] = &a[..] else {
        eprintln!("usage: parse_once once|twice MODEL TURNS REQUESTS");
        std::process::exit(2);
    };
    let (turns, n): (usize, usize) = (turns.parse().expect("TURNS"), n.parse().expect("REQUESTS"));
    let body = chat(model, turns);
    assert!(mode == "once" || mode == "twice", "once or twice, not {mode}");
    let mut total = 0u64;
    for _ in 0..n {
        let mut req = http::Request::post("/v1/chat/completions").body(LlmBody::from(body.clone())).unwrap();
        total += u64::from(if mode == "twice" {
            let info = Arc::new(RequestInfo::parse(Api::ChatCompletions, req.body().as_bytes()).unwrap());
            req.extensions_mut().insert(info.clone());
            count_input(&info, req.body().as_bytes())
        } else {
            let info = RequestInfo::ensure(&mut req).unwrap();
            count_body(&info, req.body())
        });
    }
    println!("{} bytes, {}", body.len(), total / n.max(1) as u64);
}
