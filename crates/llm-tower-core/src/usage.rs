//! Token usage, read from JSON bodies and SSE streams as they pass.
//!
//! [`UsageExtractor`] is fed the response bytes chunk by chunk and never holds
//! a stream back; a response body's meter ([`LlmResponseBody`](crate::LlmResponseBody))
//! runs one and hands its [`UsageReport`] to every observer exactly once: when
//! the body ends, fails, or is dropped.
//! Understood shapes: OpenAI chat completions (JSON, and SSE chunks with
//! `stream_options.include_usage`), OpenAI Responses (`response.completed`
//! events and objects), Anthropic Messages (JSON, and `message_start` /
//! `message_delta` / `message_stop` events).

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderMap;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::sse::SseParser;

/// Tokens used by one call.
///
/// `input` counts every input token, cached ones included (`cached_input` is the
/// cached part of it); `output` counts every output token, reasoning ones
/// included. Anthropic's split counts are folded into this shape.
///
/// ```
/// let u = llm_tower_core::Usage { input: 10, output: 5, cached_input: 4, reasoning: 0 };
/// assert_eq!(u.total(), 15);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Input (prompt) tokens, cached ones included.
    pub input: u64,
    /// Output (completion) tokens, reasoning ones included.
    pub output: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input: u64,
    /// Output tokens spent on hidden reasoning.
    pub reasoning: u64,
}

impl Usage {
    /// Input plus output tokens.
    ///
    /// ```
    /// assert_eq!(llm_tower_core::Usage { input: 1, output: 2, ..Default::default() }.total(), 3);
    /// ```
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

/// How a response body is framed.
///
/// ```
/// use llm_tower_core::usage::BodyKind;
/// let mut h = http::HeaderMap::new();
/// h.insert("content-type", "text/event-stream; charset=utf-8".parse().unwrap());
/// assert_eq!(BodyKind::from_headers(&h), BodyKind::Sse);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON document.
    Json,
    /// A `text/event-stream`.
    Sse,
}

impl BodyKind {
    /// `Sse` for a `text/event-stream` content type, `Json` otherwise.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let sse = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
        if sse { BodyKind::Sse } else { BodyKind::Json }
    }
}

/// How a response body ended.
///
/// ```
/// assert_ne!(llm_tower_core::usage::StreamEnd::Complete, llm_tower_core::usage::StreamEnd::EndedEarly);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StreamEnd {
    /// The body ended and, for a stream, its terminator (`[DONE]`,
    /// `message_stop`, `response.completed`) or a finish reason was seen.
    Complete,
    /// The body stopped before it was complete: dropped by the reader, or a
    /// stream ended without its terminator.
    EndedEarly,
    /// Reading the body failed (reset, timeout, protocol error).
    Failed,
}

/// Prices in micro-dollars per million tokens (integers: no float drift).
///
/// ```
/// let p = llm_tower_core::usage::Prices { input: 2_500_000, cached_input: 1_250_000, output: 10_000_000, reasoning: 10_000_000 };
/// assert_eq!(p.input, 2_500_000, "$2.50 per million input tokens");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    /// Uncached input tokens.
    pub input: u64,
    /// Cached input tokens.
    pub cached_input: u64,
    /// Output tokens other than reasoning.
    pub output: u64,
    /// Reasoning output tokens.
    pub reasoning: u64,
}

impl Prices {
    /// The cost of `usage` in micro-dollars, rounded up (never under-bills).
    ///
    /// Cached input is billed at the cached price and the rest of the input
    /// at the input price; reasoning tokens (part of the output) at the
    /// reasoning price and the rest of the output at the output price.
    ///
    /// ```
    /// use llm_tower_core::usage::{Prices, Usage};
    /// let p = Prices { input: 2_500_000, cached_input: 1_250_000, output: 10_000_000, reasoning: 10_000_000 };
    /// // 1,000 input (400 cached) and 500 output tokens:
    /// let u = Usage { input: 1_000, output: 500, cached_input: 400, reasoning: 0 };
    /// // 600 × $2.50/M + 400 × $1.25/M + 500 × $10/M = $0.0015 + $0.0005 + $0.005 = $0.007
    /// assert_eq!(p.cost_micros(&u), 7_000);
    /// ```
    pub fn cost_micros(&self, u: &Usage) -> u64 {
        let cached = u.cached_input.min(u.input);
        let reasoning = u.reasoning.min(u.output);
        let parts = [
            (u.input - cached, self.input),
            (cached, self.cached_input),
            (u.output - reasoning, self.output),
            (reasoning, self.reasoning),
        ];
        // Each product fits in u128; their sum might not (absurd inputs): saturate.
        let total = parts
            .iter()
            .fold(0u128, |acc, &(n, price)| acc.saturating_add(u128::from(n) * u128::from(price)));
        u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// What a response body said about usage, reported when it ends.
///
/// ```
/// use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};
/// let mut x = UsageExtractor::new(BodyKind::Json);
/// x.feed(&bytes::Bytes::from_static(br#"{"choices":[{"finish_reason":"stop"}],
///     "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#));
/// let report = x.finish(StreamEnd::Complete);
/// assert_eq!(report.usage.unwrap().output, 4);
/// assert_eq!(report.finish_reason.as_deref(), Some("stop"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct UsageReport {
    /// Usage, if the body reported any.
    pub usage: Option<Usage>,
    /// The finish / stop reason of the (first) choice.
    pub finish_reason: Option<String>,
    /// How the body ended.
    pub end: StreamEnd,
    /// An error the upstream reported inside the body (an SSE `error` event).
    pub error: Option<String>,
    /// Body bytes seen.
    pub bytes: u64,
    /// For a JSON body read to its end: whether it is one valid JSON
    /// document (read in the same pass as the usage, so a layer that must
    /// not keep a broken answer need not parse it again). `None` for a
    /// stream, a body that did not end, or one over [`MAX_JSON_BYTES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_valid: Option<bool>,
}

impl UsageReport {
    /// A report with no usage, for a body that ended as `end`.
    ///
    /// ```
    /// use llm_tower_core::usage::{StreamEnd, UsageReport};
    /// assert!(UsageReport::ended(StreamEnd::EndedEarly).usage.is_none());
    /// ```
    pub fn ended(end: StreamEnd) -> Self {
        UsageReport { usage: None, finish_reason: None, end, error: None, bytes: 0, json_valid: None }
    }
}

/// JSON bodies larger than this are passed through without usage extraction.
pub const MAX_JSON_BYTES: usize = 16 << 20;

/// Incremental usage extractor. See the [module docs](self).
///
/// ```
/// use bytes::Bytes;
/// use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};
/// let mut x = UsageExtractor::new(BodyKind::Sse);
/// for part in ["data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,", "\"completion_tokens\":1}}\n\n", "data: [DONE]\n\n"] {
///     x.feed(&Bytes::from(part));
/// }
/// let r = x.finish(StreamEnd::Complete);
/// assert_eq!(r.end, StreamEnd::Complete);
/// assert_eq!(r.usage.unwrap().input, 2);
/// ```
#[derive(Debug)]
pub struct UsageExtractor {
    kind: BodyKind,
    sse: SseParser,
    json: Vec<Bytes>,
    json_len: usize,
    acc: Acc,
}

/// Most output text kept by [`UsageExtractor::with_text`] (4 MiB).
pub const MAX_TEXT_BYTES: usize = 4 << 20;

#[derive(Debug, Default)]
struct Acc {
    /// Generated text, when collecting (`with_text`).
    text: Option<String>,
    input: Option<u64>,
    output: Option<u64>,
    cached: Option<u64>,
    reasoning: Option<u64>,
    finish_reason: Option<String>,
    terminated: bool,
    error: Option<String>,
    bytes: u64,
}

impl UsageExtractor {
    /// An extractor for a body of the given kind.
    pub fn new(kind: BodyKind) -> Self {
        Self { kind, sse: SseParser::default(), json: Vec::new(), json_len: 0, acc: Acc::default() }
    }

    /// Also collects the generated text (message content, text deltas, tool
    /// call arguments; at most [`MAX_TEXT_BYTES`]), so that a caller can count
    /// the output of a provider that reports no usage. See
    /// [`finish_with_text`](Self::finish_with_text).
    ///
    /// ```
    /// use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};
    /// let mut x = UsageExtractor::new(BodyKind::Sse).with_text();
    /// x.feed(&bytes::Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"));
    /// let (report, text) = x.finish_with_text(StreamEnd::Complete);
    /// assert!(report.usage.is_none());
    /// assert_eq!(text, "Hi");
    /// ```
    pub fn with_text(mut self) -> Self {
        self.acc.text = Some(String::new());
        self
    }

    /// Whether this extractor collects the generated text ([`with_text`](Self::with_text)).
    ///
    /// ```
    /// use llm_tower_core::usage::{BodyKind, UsageExtractor};
    /// assert!(!UsageExtractor::new(BodyKind::Sse).collects_text());
    /// assert!(UsageExtractor::new(BodyKind::Sse).with_text().collects_text());
    /// ```
    pub fn collects_text(&self) -> bool {
        self.acc.text.is_some()
    }

    /// The kind of body this extractor reads.
    ///
    /// ```
    /// use llm_tower_core::usage::{BodyKind, UsageExtractor};
    /// assert_eq!(UsageExtractor::new(BodyKind::Sse).kind(), BodyKind::Sse);
    /// ```
    pub fn kind(&self) -> BodyKind {
        self.kind
    }

    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, chunk: &Bytes) {
        self.acc.bytes += chunk.len() as u64;
        match self.kind {
            BodyKind::Sse => {
                let acc = &mut self.acc;
                self.sse.feed(chunk, |ev| acc.on_event(ev.event, ev.data));
            }
            BodyKind::Json => {
                if self.json_len + chunk.len() <= MAX_JSON_BYTES {
                    self.json_len += chunk.len();
                    self.json.push(chunk.clone());
                } else {
                    self.json.clear();
                    self.json_len = usize::MAX / 2;
                }
            }
        }
    }

    /// Whether a stream sent an event over the parser's limit (see
    /// [`SseParser::with_max_event_bytes`]): the extractor stopped reading it,
    /// and its report will say `Failed`.
    pub fn overflowed(&self) -> bool {
        self.sse.overflowed()
    }

    /// Usage seen so far (streams report it before they end).
    ///
    /// ```
    /// let x = llm_tower_core::usage::UsageExtractor::new(llm_tower_core::usage::BodyKind::Sse);
    /// assert!(x.usage().is_none());
    /// ```
    pub fn usage(&self) -> Option<Usage> {
        self.acc.usage()
    }

    /// Whether a stream terminator (`[DONE]`, `message_stop`, `response.completed`) was seen.
    ///
    /// ```
    /// let mut x = llm_tower_core::usage::UsageExtractor::new(llm_tower_core::usage::BodyKind::Sse);
    /// x.feed(&bytes::Bytes::from_static(b"data: [DONE]\n\n"));
    /// assert!(x.saw_terminator());
    /// ```
    pub fn saw_terminator(&self) -> bool {
        self.acc.terminated
    }

    /// Ends extraction. `end` is how the body itself ended; a stream that ended
    /// cleanly without its terminator or a finish reason is reported `EndedEarly`.
    pub fn finish(self, end: StreamEnd) -> UsageReport {
        self.finish_with_text(end).0
    }

    /// Like [`finish`](Self::finish), and also returns the generated text
    /// collected (empty unless [`with_text`](Self::with_text) was asked).
    pub fn finish_with_text(mut self, end: StreamEnd) -> (UsageReport, String) {
        let mut json_valid = None;
        if self.kind == BodyKind::Json && end == StreamEnd::Complete && self.json_len <= MAX_JSON_BYTES {
            let whole: Cow<'_, [u8]> = match self.json.as_slice() {
                [one] => Cow::Borrowed(&one[..]),
                many => Cow::Owned(many.concat()),
            };
            json_valid = Some(match serde_json::from_slice::<Probe<'_>>(&whole) {
                Ok(p) => {
                    self.acc.absorb(&p);
                    true
                }
                // Valid JSON of another shape (rare): asked once more, to say so.
                Err(_) => serde_json::from_slice::<IgnoredAny>(&whole).is_ok(),
            });
        }
        let end = match (self.kind, end) {
            // An event past the parser's limit: whatever came after is unknown.
            (BodyKind::Sse, _) if self.sse.overflowed() => StreamEnd::Failed,
            (BodyKind::Sse, StreamEnd::Complete)
                if !self.acc.terminated && self.acc.finish_reason.is_none() =>
            {
                StreamEnd::EndedEarly
            }
            (_, end) => end,
        };
        let report = UsageReport {
            usage: self.acc.usage(),
            finish_reason: self.acc.finish_reason,
            end,
            error: self.acc.error,
            bytes: self.acc.bytes,
            json_valid,
        };
        (report, self.acc.text.unwrap_or_default())
    }
}

impl Acc {
    fn usage(&self) -> Option<Usage> {
        if self.input.is_none() && self.output.is_none() {
            return None;
        }
        Some(Usage {
            input: self.input.unwrap_or(0),
            output: self.output.unwrap_or(0),
            cached_input: self.cached.unwrap_or(0),
            reasoning: self.reasoning.unwrap_or(0),
        })
    }

    fn on_event(&mut self, event: Option<&str>, data: &[u8]) {
        if data == b"[DONE]" {
            self.terminated = true;
            return;
        }
        match event {
            Some("message_stop") => self.terminated = true,
            Some("error") if self.error.is_none() => {
                self.error = Some(String::from_utf8_lossy(data).into_owned());
            }
            _ => {}
        }
        if let Ok(p) = serde_json::from_slice::<Probe<'_>>(data) {
            self.absorb(&p);
        }
    }

    fn push_text(&mut self, t: Option<&Cow<'_, str>>) {
        if let (Some(buf), Some(t)) = (self.text.as_mut(), t) {
            if buf.len() + t.len() <= MAX_TEXT_BYTES {
                buf.push_str(t);
            }
        }
    }

    /// Collects the generated text of any known shape (only when collecting).
    fn collect_text(&mut self, p: &Probe<'_>) {
        for c in p.choices.iter().flatten() {
            for part in [&c.delta, &c.message].into_iter().flatten() {
                self.push_text(part.content.as_ref());
                for call in part.tool_calls.as_ref().and_then(Lenient::get).into_iter().flatten() {
                    let f = call.function.as_ref();
                    self.push_text(f.and_then(|f| f.name.as_ref()));
                    self.push_text(f.and_then(|f| f.arguments.as_ref()));
                }
            }
        }
        match &p.delta {
            Some(Delta::Text(t)) => self.push_text(Some(t)),
            Some(Delta::Object(d)) => {
                self.push_text(d.text.as_ref());
                self.push_text(d.partial_json.as_ref());
                self.push_text(d.thinking.as_ref());
            }
            _ => {}
        }
        let content = p.content.as_ref().and_then(Lenient::get).into_iter().flatten();
        let output = p.output.as_ref().and_then(Lenient::get).into_iter().flatten();
        let blocks = content
            .chain(output.flat_map(|o| o.content.as_ref().and_then(Lenient::get).into_iter().flatten()));
        for block in blocks {
            self.push_text(block.text.as_ref());
        }
    }

    fn absorb(&mut self, p: &Probe<'_>) {
        if self.text.is_some() {
            self.collect_text(p);
        }
        if let Some(u) = &p.usage {
            self.merge_usage(u);
        }
        if let Some(choices) = &p.choices {
            if let Some(r) = choices.iter().find_map(|c| c.finish_reason.as_deref()) {
                self.finish_reason = Some(r.to_owned());
            }
        }
        if let Some(r) = &p.stop_reason {
            self.finish_reason = Some(r.to_string());
        }
        if let Some(Delta::Object(d)) = &p.delta {
            if let Some(r) = &d.stop_reason {
                self.finish_reason = Some(r.to_string());
            }
        }
        if let Some(m) = &p.message {
            self.absorb(m);
        }
        if let Some(r) = &p.response {
            self.absorb(r);
        }
        if let Some(status) = p.status.as_deref() {
            if matches!(status, "completed" | "incomplete" | "failed") {
                let reason = p.incomplete_details.as_ref().and_then(|d| d.reason.as_deref());
                self.finish_reason = Some(reason.unwrap_or(status).to_owned());
            }
        }
        match p.kind.as_deref() {
            Some("message_stop" | "response.completed" | "response.incomplete" | "response.failed") => {
                self.terminated = true;
            }
            Some("error") if self.error.is_none() => self.error = Some("error event".to_owned()),
            _ => {}
        }
        if let Some(e) = &p.error {
            if self.error.is_none() {
                self.error = Some(match e {
                    ErrorProbe::Object { message: Some(m), .. } => m.clone(),
                    ErrorProbe::Object { kind: Some(k), .. } => k.clone(),
                    ErrorProbe::Text(t) => t.clone(),
                    ErrorProbe::Object { .. } => "error".to_owned(),
                });
            }
        }
    }

    fn merge_usage(&mut self, u: &UsageAny) {
        let anthropic = u.cache_read_input_tokens.is_some() || u.cache_creation_input_tokens.is_some();
        let cached = u
            .prompt_tokens_details
            .as_ref()
            .or(u.input_tokens_details.as_ref())
            .and_then(|d| d.cached_tokens)
            .or(u.cache_read_input_tokens);
        if let Some(c) = cached {
            self.cached = Some(c);
        }
        if let Some(i) = u.prompt_tokens.or(u.input_tokens) {
            self.input = Some(if anthropic {
                i + u.cache_read_input_tokens.unwrap_or(0) + u.cache_creation_input_tokens.unwrap_or(0)
            } else {
                i
            });
        }
        if let Some(o) = u.completion_tokens.or(u.output_tokens) {
            self.output = Some(o);
        }
        let reasoning = u
            .completion_tokens_details
            .as_ref()
            .or(u.output_tokens_details.as_ref())
            .and_then(|d| d.reasoning_tokens);
        if let Some(r) = reasoning {
            self.reasoning = Some(r);
        }
    }
}

/// The parts of any known event or body that carry usage and finish state.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageAny>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceProbe<'a>>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    message: Option<Box<Probe<'a>>>,
    #[serde(borrow, default)]
    response: Option<Box<Probe<'a>>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
    #[serde(default)]
    error: Option<ErrorProbe>,
    /// Anthropic message content blocks.
    #[serde(borrow, default)]
    content: Option<Lenient<Vec<Block<'a>>>>,
    /// Responses output items.
    #[serde(borrow, default)]
    output: Option<Lenient<Vec<OutputItem<'a>>>>,
}

#[derive(Deserialize)]
struct ChoiceProbe<'a> {
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<MessagePart<'a>>,
    #[serde(borrow, default)]
    message: Option<MessagePart<'a>>,
}

/// A chat message or delta: its text and tool calls.
#[derive(Deserialize)]
struct MessagePart<'a> {
    #[serde(borrow, default, deserialize_with = "text")]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Lenient<Vec<ToolCall<'a>>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default, deserialize_with = "text")]
    name: Option<Cow<'a, str>>,
    /// A JSON string (OpenAI) or an object (Ollama: skipped).
    #[serde(borrow, default, deserialize_with = "text")]
    arguments: Option<Cow<'a, str>>,
}

/// A part of a body whose shape varies by provider: read when it is the
/// expected one, skipped otherwise (never failing the probe, which carries usage).
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Ok(T),
    #[allow(dead_code)]
    Other(IgnoredAny),
}

impl<T> Lenient<T> {
    fn get(&self) -> Option<&T> {
        match self {
            Lenient::Ok(t) => Some(t),
            Lenient::Other(_) => None,
        }
    }
}

/// A string where one is expected, borrowed where it lies; any other value
/// (null, a list of parts, an object) is skipped as it is read. Every chat
/// chunk has a `content`: unlike an untagged enum, this buffers nothing.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

#[derive(Deserialize)]
struct Block<'a> {
    /// Anthropic / Responses text blocks; other blocks have none.
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OutputItem<'a> {
    #[serde(borrow, default)]
    content: Option<Lenient<Vec<Block<'a>>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Delta<'a> {
    Object(#[serde(borrow)] DeltaProbe<'a>),
    Text(#[serde(borrow)] Cow<'a, str>),
    #[allow(dead_code)]
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct DeltaProbe<'a> {
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorProbe {
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(rename = "type", default)]
        kind: Option<String>,
    },
    Text(String),
}

#[derive(Deserialize, Default)]
struct UsageAny {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPENAI_STREAM: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\\nlo\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19,",
        "\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":3}}}\n\n",
        "data: [DONE]\n\n",
    );

    const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":5,\"cache_creation_input_tokens\":1,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    const RESPONSES_STREAM: &str = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\",",
        "\"usage\":{\"input_tokens\":30,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":8,\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":38}}}\n\n",
    );

    fn run(kind: BodyKind, chunks: &[&[u8]], end: StreamEnd) -> UsageReport {
        let mut x = UsageExtractor::new(kind);
        for c in chunks {
            x.feed(&Bytes::copy_from_slice(c));
        }
        x.finish(end)
    }

    #[test]
    fn a_json_body_read_whole_says_whether_it_is_valid_json() {
        let valid = |chunks: &[&[u8]]| run(BodyKind::Json, chunks, StreamEnd::Complete).json_valid;
        assert_eq!(valid(&[b"{\"usage\":{\"prompt_tokens\":1,", b"\"completion_tokens\":2}}"]), Some(true));
        assert_eq!(valid(&[b"[1, 2]"]), Some(true), "valid JSON of another shape");
        assert_eq!(valid(&[b"{\"choices\":[{\"mess"]), Some(false), "cut");
        assert_eq!(valid(&[]), Some(false), "empty");
        assert_eq!(
            run(BodyKind::Json, &[b"{}"], StreamEnd::EndedEarly).json_valid,
            None,
            "not read to its end"
        );
        assert_eq!(run(BodyKind::Sse, &[b"data: {}\n\n"], StreamEnd::Complete).json_valid, None);
    }

    #[test]
    fn openai_stream() {
        let r = run(BodyKind::Sse, &[OPENAI_STREAM.as_bytes()], StreamEnd::Complete);
        assert_eq!(r.usage, Some(Usage { input: 12, output: 7, cached_input: 4, reasoning: 3 }));
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert_eq!(r.end, StreamEnd::Complete);
        assert_eq!(r.bytes, OPENAI_STREAM.len() as u64);
    }

    #[test]
    fn anthropic_stream_folds_cache_counts_into_input() {
        let r = run(BodyKind::Sse, &[ANTHROPIC_STREAM.as_bytes()], StreamEnd::Complete);
        assert_eq!(r.usage, Some(Usage { input: 26, output: 9, cached_input: 5, reasoning: 0 }));
        assert_eq!(r.finish_reason.as_deref(), Some("end_turn"));
        assert_eq!(r.end, StreamEnd::Complete);
    }

    #[test]
    fn responses_stream() {
        let r = run(BodyKind::Sse, &[RESPONSES_STREAM.as_bytes()], StreamEnd::Complete);
        assert_eq!(r.usage, Some(Usage { input: 30, output: 8, cached_input: 10, reasoning: 2 }));
        assert_eq!(r.finish_reason.as_deref(), Some("completed"));
        assert_eq!(r.end, StreamEnd::Complete);
    }

    #[test]
    fn json_bodies_of_each_shape() {
        let openai =
            br#"{"id":"c","choices":[{"index":0,"message":{"content":"x"},"finish_reason":"length"}],
            "usage":{"prompt_tokens":5,"completion_tokens":16,"total_tokens":21}}"#;
        let r = run(BodyKind::Json, &[&openai[..10], &openai[10..]], StreamEnd::Complete);
        assert_eq!(r.usage.unwrap().output, 16);
        assert_eq!(r.finish_reason.as_deref(), Some("length"));

        let anthropic = br#"{"type":"message","stop_reason":"max_tokens","content":[{"type":"text","text":"x"}],
            "usage":{"input_tokens":7,"output_tokens":3,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}"#;
        let r = run(BodyKind::Json, &[anthropic], StreamEnd::Complete);
        assert_eq!(r.usage, Some(Usage { input: 7, output: 3, cached_input: 0, reasoning: 0 }));
        assert_eq!(r.finish_reason.as_deref(), Some("max_tokens"));

        let responses = br#"{"object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},
            "usage":{"input_tokens":4,"output_tokens":2}}"#;
        let r = run(BodyKind::Json, &[responses], StreamEnd::Complete);
        assert_eq!(r.finish_reason.as_deref(), Some("max_output_tokens"));

        let embeddings = br#"{"object":"list","data":[],"usage":{"prompt_tokens":9,"total_tokens":9}}"#;
        let r = run(BodyKind::Json, &[embeddings], StreamEnd::Complete);
        assert_eq!(r.usage, Some(Usage { input: 9, ..Default::default() }));
    }

    fn text_of(kind: BodyKind, body: &str) -> (UsageReport, String) {
        let mut x = UsageExtractor::new(kind).with_text();
        // Byte by byte: text spanning chunk boundaries is still whole.
        for b in body.as_bytes().chunks(7) {
            x.feed(&Bytes::copy_from_slice(b));
        }
        x.finish_with_text(StreamEnd::Complete)
    }

    #[test]
    fn collects_generated_text_of_each_shape() {
        assert_eq!(text_of(BodyKind::Sse, OPENAI_STREAM).1, "Hel\nlo");
        assert_eq!(text_of(BodyKind::Sse, ANTHROPIC_STREAM).1, "Hi");
        assert_eq!(text_of(BodyKind::Sse, RESPONSES_STREAM).1, "Hi");
        let tools = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(text_of(BodyKind::Sse, tools).1, "get{\"a\":1}");
        let json = r#"{"choices":[{"message":{"content":"one"}},{"message":{"content":null}}]}"#;
        assert_eq!(text_of(BodyKind::Json, json).1, "one");
        let anthropic =
            r#"{"type":"message","content":[{"type":"text","text":"a"},{"type":"tool_use","input":{}}]}"#;
        assert_eq!(text_of(BodyKind::Json, anthropic).1, "a");
        let responses = r#"{"object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"r"}]}]}"#;
        assert_eq!(text_of(BodyKind::Json, responses).1, "r");
        // Not asked: nothing collected.
        let mut x = UsageExtractor::new(BodyKind::Sse);
        x.feed(&Bytes::from_static(OPENAI_STREAM.as_bytes()));
        assert_eq!(x.finish_with_text(StreamEnd::Complete).1, "");
    }

    #[test]
    fn unexpected_shapes_never_cost_the_usage() {
        // Ollama sends tool arguments as an object; some servers send content as
        // parts or a bare string. Usage is still read.
        let odd = r#"{"choices":[{"message":{"content":[{"type":"text","text":"x"}],
            "tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]},"finish_reason":"tool_calls"}],
            "content":"plain","output":7,"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let (r, text) = text_of(BodyKind::Json, odd);
        assert_eq!(r.usage, Some(Usage { input: 3, output: 2, ..Default::default() }));
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(text, "f");
    }

    #[test]
    fn malformed_json_reports_no_usage() {
        let r = run(BodyKind::Json, &[b"{\"usage\": {\"prompt_tok"], StreamEnd::Complete);
        assert_eq!(r.usage, None);
    }

    #[test]
    fn truncated_stream_is_ended_early_and_keeps_partial_usage() {
        let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: content_block_delta").unwrap()];
        let r = run(BodyKind::Sse, &[cut.as_bytes()], StreamEnd::Complete);
        assert_eq!(r.end, StreamEnd::EndedEarly);
        assert_eq!(r.usage.unwrap().input, 26);
        let r = run(BodyKind::Sse, &[cut.as_bytes()], StreamEnd::Failed);
        assert_eq!(r.end, StreamEnd::Failed);
    }

    #[test]
    fn error_events_are_reported() {
        let s = b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        assert_eq!(run(BodyKind::Sse, &[s], StreamEnd::Complete).error.as_deref(), Some("overloaded"));
        let a = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert!(run(BodyKind::Sse, &[a], StreamEnd::Complete).error.is_some());
    }

    proptest! {
        /// Every way of cutting a stream into chunks gives the same report.
        #[test]
        fn split_invariance(
            which in 0usize..3,
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
            crlf in any::<bool>(),
        ) {
            let base = [OPENAI_STREAM, ANTHROPIC_STREAM, RESPONSES_STREAM][which];
            let text = if crlf { base.replace('\n', "\r\n") } else { base.to_owned() };
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            let whole = run(BodyKind::Sse, &[bytes], StreamEnd::Complete);
            let split = run(BodyKind::Sse, &chunks, StreamEnd::Complete);
            prop_assert!(whole.usage.is_some());
            prop_assert_eq!(split, whole);
        }
    }
}
