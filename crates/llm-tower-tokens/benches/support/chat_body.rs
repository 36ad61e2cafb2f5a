//! What `benches/count.rs` and `examples/parse_once.rs` share: the chat
//! request they count, and the two ways of counting it (the request parsed
//! twice, as before `ChatParts`, or once). Included by both with `#[path]`.

use bytes::Bytes;
use llm_tower_core::{Api, LlmBody, RequestInfo};
use llm_tower_tokens::{count_body, count_input};
use std::sync::Arc;

/// A chat request of `turns` user/assistant turns after a system prompt,
/// each message 24 consecutive `words` (which must hold more than 24).
pub fn chat(model: &str, turns: usize, words: &[&str]) -> Bytes {
    let say =
        |i: usize| serde_json::to_string(&words[i * 24 % (words.len() - 24)..][..24].join(" ")).unwrap();
    let mut messages = vec![format!(r#"{{"role":"system","content":{}}}"#, say(0))];
    for t in 0..turns {
        let role = if t % 2 == 0 { "user" } else { "assistant" };
        messages.push(format!(r#"{{"role":"{role}","content":{}}}"#, say(t + 1)));
    }
    Bytes::from(format!(r#"{{"model":"{model}","temperature":0.2,"messages":[{}]}}"#, messages.join(",")))
}

fn request(body: &Bytes) -> http::Request<LlmBody> {
    http::Request::post("/v1/chat/completions").body(LlmBody::from(body.clone())).unwrap()
}

/// The input count as before `ChatParts`: the info's parse, then the
/// count's own parse of the body.
pub fn parsed_twice(body: &Bytes) -> u32 {
    let mut req = request(body);
    let info = Arc::new(RequestInfo::parse(Api::ChatCompletions, req.body().as_bytes()).unwrap());
    req.extensions_mut().insert(info.clone());
    count_input(&info, req.body().as_bytes())
}

/// The input count as a layer makes it now: `RequestInfo::ensure` keeps the
/// message offsets, and the count reads them.
pub fn parsed_once(body: &Bytes) -> u32 {
    let mut req = request(body);
    let info = RequestInfo::ensure(&mut req).unwrap();
    count_body(&info, req.body())
}
