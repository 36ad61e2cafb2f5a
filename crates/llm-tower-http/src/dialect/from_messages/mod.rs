//! Anthropic Messages clients served by OpenAI-dialect providers: a
//! `POST /v1/messages` request becomes an OpenAI chat completion, the answer
//! (JSON or stream, in Anthropic's event order) comes back in Messages' shape.

mod request;
mod response;
mod stream;

pub(crate) use request::to_chat;
pub(crate) use response::{error_to_anthropic, to_message};
pub(crate) use stream::StreamTranslator;

/// OpenAI's finish reason as Anthropic's stop reason.
pub(crate) fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage from OpenAI's: cached prompt tokens are cache reads,
/// apart from `input_tokens` as Anthropic counts them.
pub(crate) fn usage(u: &serde_json::Value) -> serde_json::Value {
    let n = |p: &str| u.pointer(p).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let cached = n("/prompt_tokens_details/cached_tokens");
    serde_json::json!({
        "input_tokens": n("/prompt_tokens").saturating_sub(cached),
        "output_tokens": n("/completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    })
}

/// An SSE event with its name, as Anthropic writes them.
pub(crate) fn event(out: &mut bytes::BytesMut, name: &str, data: &serde_json::Value) {
    use bytes::BufMut;
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    let _ = serde_json::to_writer((&mut *out).writer(), data);
    out.put_slice(b"\n\n");
}
