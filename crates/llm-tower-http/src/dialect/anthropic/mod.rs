//! OpenAI chat completions <-> Anthropic Messages.
//!
//! What maps, what is refused (a 400 `invalid_request_error` naming the
//! parameter) and what is dropped is listed in the README's "Dialects" table;
//! the code below is the reference.

mod request;
mod response;
mod stream;

pub(crate) use request::to_messages;
pub(crate) use response::{error_to_openai, to_chat_completion};
pub(crate) use stream::StreamTranslator;

/// `max_tokens` when the client sets none: Anthropic requires one.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Anthropic's stop reason as OpenAI's finish reason.
pub(crate) fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything new.
        _ => "stop",
    }
}

/// Seconds since the epoch, for `created`.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// OpenAI's usage object from Anthropic's: prompt tokens include the cached
/// reads and the cache writes (Anthropic counts them apart from
/// `input_tokens`), and the cached reads are `prompt_tokens_details.cached_tokens`.
pub(crate) fn usage(u: &serde_json::Value) -> serde_json::Value {
    let n = |k: &str| u.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    let prompt = n("input_tokens") + cached + n("cache_creation_input_tokens");
    let completion = n("output_tokens");
    serde_json::json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": cached },
    })
}
