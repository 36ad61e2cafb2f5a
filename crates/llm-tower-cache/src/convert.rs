//! Chat completions in both forms: a streamed answer (SSE chunks) folded into
//! one `chat.completion` object, and a `chat.completion` object replayed as
//! SSE chunks. Used on cache hits whose form differs from the stored one.

use bytes::{BufMut, Bytes, BytesMut};
use llm_tower_core::sse::SseParser;
use serde_json::{Map, Value, json};

/// Folds an SSE chat completion stream into a `chat.completion` JSON object.
/// `None` if the stream holds no chat completion chunk.
///
/// ```
/// let sse = b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
/// data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
/// data: [DONE]\n\n";
/// let json = llm_tower_cache::convert::sse_to_json(sse).unwrap();
/// let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
/// assert_eq!(v["choices"][0]["message"]["content"], "Hi");
/// assert_eq!(v["object"], "chat.completion");
/// ```
pub fn sse_to_json(sse: &[u8]) -> Option<Bytes> {
    let mut head: Option<Map<String, Value>> = None;
    let mut choices: Vec<Map<String, Value>> = Vec::new();
    let mut usage = Value::Null;
    let mut parser = SseParser::default();
    parser.feed(sse, |ev| {
        let Ok(Value::Object(mut chunk)) = serde_json::from_slice::<Value>(ev.data) else { return };
        if let Some(u) = chunk.remove("usage").filter(|u| !u.is_null()) {
            usage = u;
        }
        let Some(Value::Array(cs)) = chunk.remove("choices") else { return };
        if head.is_none() {
            head = Some(chunk);
        }
        for c in cs {
            fold_choice(&mut choices, c);
        }
    });
    let mut out = head?;
    out.insert("object".into(), "chat.completion".into());
    let choices: Vec<Value> = choices.into_iter().map(Value::Object).collect();
    out.insert("choices".into(), Value::Array(choices));
    out.insert("usage".into(), usage);
    serde_json::to_vec(&Value::Object(out)).ok().map(Bytes::from)
}

/// Adds one chunk's choice delta to the folded choices.
fn fold_choice(choices: &mut Vec<Map<String, Value>>, c: Value) {
    let index = c["index"].as_u64().unwrap_or(0) as usize;
    while choices.len() <= index {
        let i = choices.len();
        let blank = json!({"index": i, "message": {"role": "assistant", "content": null}, "logprobs": null, "finish_reason": null});
        choices.push(blank.as_object().cloned().unwrap_or_default());
    }
    let choice = &mut choices[index];
    if let Some(r) = c.get("finish_reason").filter(|r| !r.is_null()) {
        choice.insert("finish_reason".into(), r.clone());
    }
    let Some(Value::Object(delta)) = c.get("delta") else { return };
    let Some(Value::Object(msg)) = choice.get_mut("message") else { return };
    for (k, v) in delta {
        match (k.as_str(), v) {
            (_, Value::Null) => {}
            ("content" | "refusal", Value::String(s)) => append(msg, k, s),
            ("tool_calls", Value::Array(calls)) => fold_tool_calls(msg, calls),
            _ => {
                msg.insert(k.clone(), v.clone());
            }
        }
    }
}

fn append(obj: &mut Map<String, Value>, key: &str, s: &str) {
    match obj.get_mut(key) {
        Some(Value::String(have)) => have.push_str(s),
        _ => {
            obj.insert(key.to_owned(), Value::String(s.to_owned()));
        }
    }
}

fn fold_tool_calls(msg: &mut Map<String, Value>, calls: &[Value]) {
    let list = msg.entry("tool_calls").or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(list) = list else { return };
    for call in calls {
        let i = call["index"].as_u64().unwrap_or(0) as usize;
        while list.len() <= i {
            list.push(json!({"id": null, "type": "function", "function": {"name": "", "arguments": ""}}));
        }
        let Value::Object(have) = &mut list[i] else { continue };
        for key in ["id", "type"] {
            if let Some(v) = call.get(key).filter(|v| !v.is_null()) {
                have.insert(key.into(), v.clone());
            }
        }
        if let (Some(Value::Object(f)), Some(Value::Object(hf))) =
            (call.get("function"), have.get_mut("function"))
        {
            for key in ["name", "arguments"] {
                if let Some(Value::String(s)) = f.get(key) {
                    append(hf, key, s);
                }
            }
        }
    }
}

/// Replays a `chat.completion` JSON object as an SSE stream of
/// `chat.completion.chunk` events: per choice, its message (role, content,
/// tool calls) then its finish reason; then, with `include_usage`, the usage
/// chunk; then `data: [DONE]`. `None` if `json` is not a chat completion.
///
/// ```
/// let json = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m",
///   "choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],
///   "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
/// let sse = llm_tower_cache::convert::json_to_sse(json, true).unwrap();
/// let text = std::str::from_utf8(&sse).unwrap();
/// assert!(text.contains(r#""content":"Hi""#));
/// assert!(text.contains(r#""completion_tokens":1"#));
/// assert!(text.ends_with("data: [DONE]\n\n"));
/// ```
pub fn json_to_sse(json: &[u8], include_usage: bool) -> Option<Bytes> {
    let Value::Object(mut obj) = serde_json::from_slice::<Value>(json).ok()? else { return None };
    let Some(Value::Array(choices)) = obj.remove("choices") else { return None };
    let usage = obj.remove("usage").unwrap_or(Value::Null);
    obj.insert("object".into(), "chat.completion.chunk".into());
    let mut out = BytesMut::new();
    let mut emit = |choices: Value, usage: Option<&Value>| {
        let mut chunk = obj.clone();
        chunk.insert("choices".into(), choices);
        if include_usage {
            chunk.insert("usage".into(), usage.cloned().unwrap_or(Value::Null));
        }
        out.put_slice(b"data: ");
        out.put_slice(&serde_json::to_vec(&Value::Object(chunk)).unwrap_or_default());
        out.put_slice(b"\n\n");
    };
    for c in &choices {
        let index = c.get("index").cloned().unwrap_or(Value::from(0));
        let mut delta = c.get("message").and_then(Value::as_object).cloned().unwrap_or_default();
        if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
            for (i, call) in calls.iter_mut().enumerate() {
                if let Value::Object(call) = call {
                    call.insert("index".into(), Value::from(i));
                }
            }
        }
        delta.retain(|_, v| !v.is_null());
        let logprobs = c.get("logprobs").cloned().unwrap_or(Value::Null);
        emit(json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null}]), None);
        let finish = c.get("finish_reason").cloned().unwrap_or(Value::Null);
        emit(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish}]), None);
    }
    if include_usage && !usage.is_null() {
        emit(json!([]), Some(&usage));
    }
    out.put_slice(b"data: [DONE]\n\n");
    Some(out.freeze())
}

/// Removes usage-only chunks (`choices: []` with a `usage`) from an SSE
/// stream, for a caller who did not ask for usage.
///
/// ```
/// let sse = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\ndata: [DONE]\n\n";
/// let out = llm_tower_cache::convert::strip_usage_chunks(sse);
/// assert_eq!(&out[..], &b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"[..]);
/// ```
pub fn strip_usage_chunks(sse: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(sse.len());
    let mut parser = SseParser::default();
    parser.feed(sse, |ev| {
        let usage_only = serde_json::from_slice::<Value>(ev.data).is_ok_and(|v| {
            v["choices"].as_array().is_some_and(Vec::is_empty) && v.get("usage").is_some_and(|u| !u.is_null())
        });
        if usage_only {
            return;
        }
        if let Some(name) = ev.event {
            out.put_slice(b"event: ");
            out.put_slice(name.as_bytes());
            out.put_slice(b"\n");
        }
        out.put_slice(b"data: ");
        out.put_slice(ev.data);
        out.put_slice(b"\n\n");
    });
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"system_fingerprint\":\"fp\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":1,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":4,\"total_tokens\":9}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn a_stream_folds_into_one_completion() {
        let v: Value = serde_json::from_slice(&sse_to_json(STREAM.as_bytes()).unwrap()).unwrap();
        assert_eq!(v["id"], "c");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["system_fingerprint"], "fp");
        assert_eq!(v["choices"][0]["message"], json!({"role": "assistant", "content": "Hello"}));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let call = &v["choices"][1]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "t1");
        assert_eq!(call["function"]["name"], "get");
        assert_eq!(call["function"]["arguments"], "{\"a\":1}");
        assert_eq!(v["choices"][1]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 9);
    }

    #[test]
    fn json_to_sse_and_back_is_the_same_completion() {
        let json = sse_to_json(STREAM.as_bytes()).unwrap();
        let sse = json_to_sse(&json, true).unwrap();
        let again = sse_to_json(&sse).unwrap();
        let (a, b): (Value, Value) =
            (serde_json::from_slice(&json).unwrap(), serde_json::from_slice(&again).unwrap());
        assert_eq!(a, b);
        // Without include_usage the replay has no usage chunk.
        let plain = json_to_sse(&json, false).unwrap();
        assert!(!std::str::from_utf8(&plain).unwrap().contains("usage"));
    }

    #[test]
    fn not_a_chat_completion() {
        assert!(sse_to_json(b"data: [DONE]\n\n").is_none());
        assert!(json_to_sse(br#"{"object":"list","data":[]}"#, false).is_none());
        assert!(json_to_sse(b"not json", false).is_none());
    }

    #[test]
    fn stripping_keeps_every_other_event() {
        let out = strip_usage_chunks(STREAM.as_bytes());
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text.matches("data: ").count(), 7);
        assert!(!text.contains("\"total_tokens\""));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
