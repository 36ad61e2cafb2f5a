//! An OpenAI chat completion (or error) as an Anthropic message (or error).

use serde_json::{Value, json};

use super::{stop_reason, usage};
use crate::dialect::Translation;

/// The whole answer as a Messages `message`; `None` when it is not a chat
/// completion (the caller reports a bad response).
pub(crate) fn to_message(body: &[u8], t: &Translation) -> Option<Vec<u8>> {
    let r: Value = serde_json::from_slice(body).ok()?;
    let choice = r.pointer("/choices/0")?;
    let m = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = m.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({ "type": "text", "text": text }));
    }
    for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "input": input,
        }));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop");
    let id = r.get("id").and_then(Value::as_str).unwrap_or("openai");
    let out = json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": &*t.model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": usage(r.get("usage").unwrap_or(&Value::Null)),
    });
    serde_json::to_vec(&out).ok()
}

/// An OpenAI error body as Anthropic's (`{"type":"error","error":{...}}`),
/// the type from the status.
pub(crate) fn error_to_anthropic(status: u16, body: &[u8]) -> Vec<u8> {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let message = match v.as_ref().and_then(|v| v.pointer("/error/message")).and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    };
    let kind = match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    serde_json::to_vec(&json!({ "type": "error", "error": { "type": kind, "message": message } }))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;

    #[test]
    fn a_tool_call_answer_and_an_error() {
        let t = Translation {
            dialect: Dialect::MessagesClient,
            model: "gpt-4o-mini".into(),
            include_usage: false,
        };
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"finish_reason":"tool_calls",
            "message":{"role":"assistant","content":"Checking.","tool_calls":[{"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}}],
            "usage":{"prompt_tokens":50,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":20}}}"#;
        let m: Value = serde_json::from_slice(&to_message(body, &t).unwrap()).unwrap();
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["content"][0], json!({"type": "text", "text": "Checking."}));
        assert_eq!(m["content"][1]["input"], json!({"city": "Paris"}));
        assert_eq!(m["content"][1]["id"], "call_9");
        assert_eq!(
            m["usage"],
            json!({"input_tokens": 30, "output_tokens": 7, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 0})
        );
        let e: Value = serde_json::from_slice(&error_to_anthropic(
            429,
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        ))
        .unwrap();
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
    }
}
