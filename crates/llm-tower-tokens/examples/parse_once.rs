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

#[path = "../benches/support/chat_body.rs"]
mod chat_body;
use chat_body::{chat, parsed_once, parsed_twice};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let [_, mode, model, turns, n] = &a[..] else {
        eprintln!("usage: parse_once once|twice MODEL TURNS REQUESTS");
        std::process::exit(2);
    };
    let (turns, n): (usize, usize) = (turns.parse().expect("TURNS"), n.parse().expect("REQUESTS"));
    let words: Vec<String> = (0..400).map(|i| format!("word{}", i % 37)).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let body = chat(model, turns, &words);
    let count = match mode.as_str() {
        "once" => parsed_once,
        "twice" => parsed_twice,
        _ => panic!("once or twice, not {mode}"),
    };
    let total: u64 = (0..n).map(|_| u64::from(count(&body))).sum();
    println!("{} bytes, {}", body.len(), total / n.max(1) as u64);
}
