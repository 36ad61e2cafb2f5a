//! OpenAI chat completions <-> Google Gemini `generateContent`.
//!
//! What maps, what is refused and what is dropped: the README's "Dialects"
//! table; the code below is the reference.

mod request;
mod response;
mod stream;

pub(crate) use request::to_generate_content;
pub(crate) use response::{error_to_openai, to_chat_completion};
pub(crate) use stream::StreamTranslator;

/// Gemini's finish reason as OpenAI's (`tool_calls` when the answer called a
/// function: Gemini says `STOP` then).
pub(crate) fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// OpenAI's usage from Gemini's `usageMetadata`: completion tokens include
/// the thinking tokens (Gemini bills them as output), reported again as
/// `reasoning_tokens`; cached prompt tokens as `cached_tokens`.
pub(crate) fn usage(u: &serde_json::Value) -> serde_json::Value {
    let n = |k: &str| u.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount") + n("toolUsePromptTokenCount");
    let thoughts = n("thoughtsTokenCount");
    let completion = n("candidatesTokenCount") + thoughts;
    serde_json::json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": n("cachedContentTokenCount") },
        "completion_tokens_details": { "reasoning_tokens": thoughts },
    })
}

/// A stable id for the `k`th function call of an answer (Gemini gives none):
/// the request translation finds the function's name by this id in the
/// conversation's earlier assistant turn.
pub(crate) fn call_id(response_id: Option<&str>, k: usize) -> String {
    match response_id {
        Some(r) if !r.is_empty() => format!("call_{r}_{k}"),
        _ => format!("call_{k}"),
    }
}
