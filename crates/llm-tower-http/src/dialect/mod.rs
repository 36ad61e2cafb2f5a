//! Dialects: an OpenAI chat completion served by a provider that speaks
//! another API: Anthropic Messages (`kind = "anthropic"`) and Google Gemini
//! (`kind = "gemini"`); and an Anthropic Messages request served by an
//! OpenAI-dialect provider. The request is translated before it is sent; the
//! answer is translated back, a JSON answer whole, a stream event by event
//! (bounded state per stream, never buffered).

use bytes::BytesMut;

pub(crate) mod anthropic;
pub(crate) mod from_messages;
pub(crate) mod gemini;

/// The provider's API, when it is not OpenAI's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// An OpenAI client, an Anthropic provider.
    Anthropic,
    /// An OpenAI client, a Gemini provider.
    Gemini,
    /// An Anthropic Messages client, an OpenAI-dialect provider.
    MessagesClient,
}

/// What the response side needs to know of a translated request.
#[derive(Debug, Clone)]
pub(crate) struct Translation {
    pub(crate) dialect: Dialect,
    /// The model name the client asked for (echoed in the answer).
    pub(crate) model: std::sync::Arc<str>,
    /// `stream_options.include_usage`: a usage chunk ends the stream.
    pub(crate) include_usage: bool,
}

impl Translation {
    /// A whole 2xx answer as a `chat.completion` (`None`: not the dialect's answer).
    pub(crate) fn answer(&self, body: &[u8]) -> Option<Vec<u8>> {
        match self.dialect {
            Dialect::Anthropic => anthropic::to_chat_completion(body, self),
            Dialect::Gemini => gemini::to_chat_completion(body, self),
            Dialect::MessagesClient => from_messages::to_message(body, self),
        }
    }

    /// An error body in the client's shape.
    pub(crate) fn error(&self, status: u16, body: &[u8]) -> Vec<u8> {
        match self.dialect {
            Dialect::Anthropic => anthropic::error_to_openai(body),
            Dialect::Gemini => gemini::error_to_openai(body),
            Dialect::MessagesClient => from_messages::error_to_anthropic(status, body),
        }
    }

    /// The stream translator for this answer.
    pub(crate) fn stream(self) -> StreamTranslator {
        match self.dialect {
            Dialect::Anthropic => StreamTranslator::Anthropic(anthropic::StreamTranslator::new(self)),
            Dialect::Gemini => StreamTranslator::Gemini(gemini::StreamTranslator::new(self)),
            Dialect::MessagesClient => StreamTranslator::Messages(from_messages::StreamTranslator::new(self)),
        }
    }
}

/// One stream's translator.
#[derive(Debug)]
pub(crate) enum StreamTranslator {
    Anthropic(anthropic::StreamTranslator),
    Gemini(gemini::StreamTranslator),
    Messages(from_messages::StreamTranslator),
}

impl StreamTranslator {
    /// One upstream event.
    pub(crate) fn event(&mut self, name: Option<&str>, data: &[u8], out: &mut BytesMut) {
        match self {
            StreamTranslator::Anthropic(t) => t.event(name, data, out),
            StreamTranslator::Gemini(t) => t.event(data, out),
            StreamTranslator::Messages(t) => t.event(name, data, out),
        }
    }

    /// The upstream body ended.
    pub(crate) fn finish(&mut self, out: &mut BytesMut) {
        match self {
            StreamTranslator::Anthropic(t) => t.finish(out),
            StreamTranslator::Gemini(t) => t.finish(out),
            StreamTranslator::Messages(t) => t.finish(out),
        }
    }
}

/// Writes `data: {json}` and a blank line.
pub(crate) fn sse_data(v: &serde_json::Value, out: &mut BytesMut) {
    use bytes::BufMut;
    out.put_slice(b"data: ");
    // Writing a Value into a buffer cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), v);
    out.put_slice(b"\n\n");
}

/// Writes an SSE `event: error` with an OpenAI error object (OpenAI's SDKs
/// raise it): how a translated stream that breaks ends.
pub(crate) fn sse_openai_error(message: &str, code: &str, out: &mut BytesMut) {
    use bytes::BufMut;
    let e = serde_json::json!({ "error": { "message": message, "type": "server_error", "param": null, "code": code } });
    out.put_slice(b"event: error\n");
    sse_data(&e, out);
}

/// The text of an OpenAI message's content (a string, or its text parts
/// joined by newlines); `None` when the content is neither.
pub(crate) fn openai_text(content: Option<&serde_json::Value>) -> Option<String> {
    use serde_json::Value;
    match content {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => Some(
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n"),
        ),
        None | Some(Value::Null) => Some(String::new()),
        _ => None,
    }
}

/// A `data:` URL's media type and base64 payload.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("data:").and_then(|r| r.split_once(";base64,"))
}

/// The function objects of an OpenAI `tools` array, each with a name; the
/// parameter and reason when one is not a named function tool.
pub(crate) fn openai_functions(
    v: &serde_json::Value,
) -> Result<Vec<(&str, &serde_json::Value)>, (String, &'static str)> {
    use serde_json::Value;
    let list = v.as_array().ok_or_else(|| ("tools".to_owned(), "must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let param = format!("tools[{i}]");
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err((param, "only function tools are supported"));
            }
            let f = t.get("function").ok_or_else(|| (param.clone(), "function is required"))?;
            let name = f.get("name").and_then(Value::as_str).ok_or((param, "function.name is required"))?;
            Ok((name, f))
        })
        .collect()
}

/// One tool call of an OpenAI assistant message: its id, function name and
/// arguments (parsed: both Anthropic and Gemini take an object).
pub(crate) struct ToolCallIn<'a> {
    pub(crate) id: Option<&'a str>,
    pub(crate) name: &'a str,
    pub(crate) args: serde_json::Value,
}

/// The tool calls of an OpenAI assistant message (`param` names it in
/// errors); the parameter and reason when one is malformed.
pub(crate) fn openai_tool_calls<'a>(
    m: &'a serde_json::Value,
    param: &str,
) -> Result<Vec<ToolCallIn<'a>>, (String, &'static str)> {
    use serde_json::Value;
    let calls = m.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    calls
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let p = format!("{param}.tool_calls[{j}]");
            let f = call.get("function").ok_or_else(|| (p.clone(), "function is required"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| (p.clone(), "function.name is required"))?;
            let raw = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            let args = serde_json::from_str(if raw.trim().is_empty() { "{}" } else { raw })
                .map_err(|_| (p, "function.arguments is not JSON"))?;
            Ok(ToolCallIn { id: call.get("id").and_then(Value::as_str), name, args })
        })
        .collect()
}

#[cfg(test)]
mod proptests {
    //! Every dialect's stream translation is independent of how the upstream
    //! body is cut into chunks: the fixture streams split at arbitrary byte
    //! positions give the same output as whole.
    use super::*;
    use llm_tower_core::sse::SseParser;
    use proptest::prelude::*;

    const ANTHROPIC: &[u8] = include_bytes!("../../tests/fixtures/anthropic/messages_stream.sse");
    const GEMINI: &[u8] = include_bytes!("../../tests/fixtures/gemini/stream.sse");
    const OPENAI: &[u8] = include_bytes!("../../tests/fixtures/openai/chat_stream.sse");

    fn translate(dialect: Dialect, raw: &[u8], cuts: &[usize]) -> Vec<u8> {
        let t = Translation { dialect, model: "m".into(), include_usage: true };
        let mut tr = t.stream();
        let mut p = SseParser::default();
        let mut out = BytesMut::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (raw.len() + 1)).collect();
        cuts.sort_unstable();
        let mut at = 0;
        for c in cuts.into_iter().chain([raw.len()]) {
            p.feed(&raw[at..c], |e| tr.event(e.event, e.data, &mut out));
            at = c;
        }
        tr.finish(&mut out);
        // `created` (seconds since the epoch) may tick between two runs.
        let s = String::from_utf8(out.to_vec()).unwrap();
        let mut kept = String::new();
        for part in s.split("\"created\":") {
            if kept.is_empty() {
                kept.push_str(part);
            } else {
                kept.push_str(part.trim_start_matches(|c: char| c.is_ascii_digit()));
            }
        }
        kept.into_bytes()
    }

    proptest! {
        #[test]
        fn any_cut_gives_the_same_translation(cuts in proptest::collection::vec(0usize..4096, 0..24)) {
            for (d, raw) in [(Dialect::Anthropic, ANTHROPIC), (Dialect::Gemini, GEMINI), (Dialect::MessagesClient, OPENAI)] {
                prop_assert_eq!(translate(d, raw, &cuts), translate(d, raw, &[]));
            }
        }
    }
}
