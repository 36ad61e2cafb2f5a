//! An Anthropic Messages answer (or error) as an OpenAI chat completion (or error).

use serde_json::{Value, json};

use super::{finish_reason, now_secs, usage};
use crate::dialect::Translation;

/// The whole answer of `POST /v1/messages` as a `chat.completion`; `None`
/// when it is not a Messages answer (the caller reports a bad response).
pub(crate) fn to_chat_completion(body: &[u8], t: &Translation) -> Option<Vec<u8>> {
    let m: Value = serde_json::from_slice(body).ok()?;
    if m.get("type").and_then(Value::as_str) != Some("message") {
        return None;
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in m.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let args = block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string);
                calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": { "name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": args },
                }));
            }
            // thinking, redacted_thinking, server tool blocks: not part of
            // an OpenAI chat message.
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let stop = m.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn");
    let out = json!({
        "id": m.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": now_secs(),
        "model": &*t.model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason(stop), "logprobs": null }],
        "usage": usage(m.get("usage").unwrap_or(&Value::Null)),
    });
    serde_json::to_vec(&out).ok()
}

/// An Anthropic error body (`{"type":"error","error":{"type","message"}}`)
/// in OpenAI's shape; anything else is wrapped as the message.
pub(crate) fn error_to_openai(body: &[u8]) -> Vec<u8> {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let e = v.as_ref().and_then(|v| v.get("error"));
    let kind = e.and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("api_error");
    let message = match e.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    };
    let (openai_type, code) = match kind {
        "invalid_request_error" => ("invalid_request_error", None),
        "authentication_error" => ("authentication_error", Some("invalid_api_key")),
        "permission_error" => ("permission_error", None),
        "not_found_error" => ("invalid_request_error", Some("model_not_found")),
        "rate_limit_error" => ("rate_limit_error", Some("rate_limit_exceeded")),
        "overloaded_error" => ("server_error", Some("overloaded")),
        _ => ("server_error", None),
    };
    let out = json!({ "error": { "message": message, "type": openai_type, "param": null, "code": code } });
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Translation {
        Translation {
            dialect: crate::dialect::Dialect::Anthropic,
            model: "claude-3-5-haiku-latest".into(),
            include_usage: false,
        }
    }

    #[test]
    fn fixture_answer_with_tool_use() {
        let body = include_bytes!("../../../tests/fixtures/anthropic/messages_response.json");
        let out: Value = serde_json::from_slice(&to_chat_completion(body, &t()).unwrap()).unwrap();
        let c = &out["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], "I'll check the weather in Paris.");
        assert_eq!(c["message"]["tool_calls"][0]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "ids kept");
        assert_eq!(c["message"]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
        assert_eq!(out["usage"]["prompt_tokens"], 472 + 100 + 20);
        assert_eq!(out["usage"]["completion_tokens"], 89);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(out["model"], "claude-3-5-haiku-latest");
        assert!(to_chat_completion(br#"{"type":"error"}"#, &t()).is_none());
    }

    #[test]
    fn finish_reasons_and_errors() {
        for (stop, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(crate::dialect::anthropic::finish_reason(stop), want);
        }
        let e: Value = serde_json::from_slice(&error_to_openai(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ))
        .unwrap();
        assert_eq!(e["error"]["message"], "Overloaded");
        assert_eq!(e["error"]["code"], "overloaded");
        let e: Value = serde_json::from_slice(&error_to_openai(b"<html>bad gateway</html>")).unwrap();
        assert_eq!(e["error"]["message"], "<html>bad gateway</html>");
    }
}
