//! What a call used and how its body ended: usage, body kinds, prices, the report.

use super::*;

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
        // Compared case-insensitively in place (every layer that meters asks,
        // once per response: no lowered copy).
        const SSE: &[u8] = b"text/event-stream";
        let sse = headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
            let v = v.as_bytes().trim_ascii_start();
            v.get(..SSE.len()).is_some_and(|p| p.eq_ignore_ascii_case(SSE))
        });
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

#[cfg(test)]
mod kind_tests {
    use super::BodyKind;

    #[test]
    fn content_type_is_read_case_insensitively_without_leading_space() {
        for (ct, kind) in [
            ("text/event-stream", BodyKind::Sse),
            ("  Text/Event-Stream; charset=utf-8", BodyKind::Sse),
            ("TEXT/EVENT-STREAM", BodyKind::Sse),
            ("application/json", BodyKind::Json),
            ("text/event", BodyKind::Json),
            ("", BodyKind::Json),
        ] {
            let mut h = http::HeaderMap::new();
            h.insert("content-type", ct.parse().unwrap());
            assert_eq!(BodyKind::from_headers(&h), kind, "{ct:?}");
        }
        assert_eq!(BodyKind::from_headers(&http::HeaderMap::new()), BodyKind::Json);
    }
}
