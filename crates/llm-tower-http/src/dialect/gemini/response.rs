//! A Gemini `generateContent` answer (or error) as an OpenAI chat completion (or error).

use serde_json::{Value, json};

use super::{call_id, finish_reason, usage};
use crate::dialect::Translation;
use crate::dialect::anthropic::now_secs;

/// The message and finish reason of one candidate; `calls` numbers the
/// function calls across the answer (ids stay unique in it).
pub(crate) fn candidate(c: &Value, response_id: Option<&str>, calls: &mut usize) -> (Value, &'static str) {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for p in c.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(f) = p.get("functionCall") {
            let args = f.get("args").map_or_else(|| "{}".to_owned(), Value::to_string);
            tool_calls.push(json!({
                "id": call_id(response_id, *calls),
                "type": "function",
                "function": { "name": f.get("name").cloned().unwrap_or(Value::Null), "arguments": args },
            }));
            *calls += 1;
        }
    }
    let reason = c.get("finishReason").and_then(Value::as_str).unwrap_or("STOP");
    let finish = finish_reason(reason, !tool_calls.is_empty());
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    (message, finish)
}

/// The whole answer as a `chat.completion`; `None` when it is not one (the
/// caller reports a bad response). A prompt blocked before any candidate is
/// an empty answer finished by `content_filter`.
pub(crate) fn to_chat_completion(body: &[u8], t: &Translation) -> Option<Vec<u8>> {
    let r: Value = serde_json::from_slice(body).ok()?;
    let response_id = r.get("responseId").and_then(Value::as_str);
    let mut calls = 0;
    let mut choices: Vec<Value> = r
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let (message, finish) = candidate(c, response_id, &mut calls);
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
            json!({ "index": index, "message": message, "finish_reason": finish, "logprobs": null })
        })
        .collect();
    if choices.is_empty() {
        r.get("promptFeedback").or(r.get("usageMetadata"))?;
        choices.push(json!({ "index": 0, "message": { "role": "assistant", "content": "" },
                             "finish_reason": "content_filter", "logprobs": null }));
    }
    let out = json!({
        "id": format!("chatcmpl-{}", response_id.unwrap_or("gemini")),
        "object": "chat.completion",
        "created": now_secs(),
        "model": &*t.model,
        "choices": choices,
        "usage": usage(r.get("usageMetadata").unwrap_or(&Value::Null)),
    });
    serde_json::to_vec(&out).ok()
}

/// A Gemini error body (`{"error":{"code","message","status"}}`) in
/// OpenAI's shape; an error already in OpenAI's shape (a proxy in front)
/// passes as it is; anything else becomes the message.
pub(crate) fn error_to_openai(body: &[u8]) -> Vec<u8> {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let e = v.as_ref().and_then(|v| v.get("error"));
    if e.is_some_and(|e| e.get("type").is_some() && e.get("status").is_none()) {
        return body.to_vec();
    }
    let message = match e.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    };
    let (kind, code) = match e.and_then(|e| e.get("status")).and_then(Value::as_str).unwrap_or("") {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => ("invalid_request_error", None),
        "UNAUTHENTICATED" => ("authentication_error", Some("invalid_api_key")),
        "PERMISSION_DENIED" => ("permission_error", None),
        "NOT_FOUND" => ("invalid_request_error", Some("model_not_found")),
        "RESOURCE_EXHAUSTED" => ("rate_limit_error", Some("rate_limit_exceeded")),
        "UNAVAILABLE" => ("server_error", Some("overloaded")),
        _ => ("server_error", None),
    };
    let out = json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;

    fn t() -> Translation {
        Translation { dialect: Dialect::Gemini, model: "gemini-2.0-flash".into(), include_usage: false }
    }

    #[test]
    fn fixture_answer_with_a_function_call() {
        let body = include_bytes!("../../../tests/fixtures/gemini/generate_content_response.json");
        let out: Value = serde_json::from_slice(&to_chat_completion(body, &t()).unwrap()).unwrap();
        let c = &out["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], "Checking.");
        let call = &c["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_r1_0");
        assert_eq!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
            json!({"city": "Paris"})
        );
        assert_eq!(out["usage"]["prompt_tokens"], 30);
        assert_eq!(out["usage"]["completion_tokens"], 12 + 8, "thinking tokens are output");
        assert_eq!(out["usage"]["completion_tokens_details"]["reasoning_tokens"], 8);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 10);
    }

    #[test]
    fn finish_reasons_blocked_prompts_and_errors() {
        assert_eq!(finish_reason("SAFETY", false), "content_filter");
        assert_eq!(finish_reason("MAX_TOKENS", true), "length");
        assert_eq!(finish_reason("STOP", false), "stop");
        let blocked =
            br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4}}"#;
        let out: Value = serde_json::from_slice(&to_chat_completion(blocked, &t()).unwrap()).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        assert!(to_chat_completion(b"[1]", &t()).is_none());
        let e: Value = serde_json::from_slice(&error_to_openai(
            br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#,
        ))
        .unwrap();
        assert_eq!(
            (e["error"]["type"].as_str(), e["error"]["code"].as_str()),
            (Some("rate_limit_error"), Some("rate_limit_exceeded"))
        );
    }
}
