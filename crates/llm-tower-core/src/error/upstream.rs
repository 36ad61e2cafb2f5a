//! Errors of the upstream call: timeouts, connects, transport, cut streams, bad answers, error statuses.

use super::*;

/// Which phase of an upstream call ran out of time.
///
/// ```
/// assert_eq!(llm_tower_core::TimeoutPhase::Headers.to_string(), "response headers");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutPhase {
    /// Establishing the connection (TCP and TLS).
    Connect,
    /// Waiting for the response headers (time to first byte).
    Headers,
    /// Waiting for the next body chunk (a stalled stream).
    Idle,
    /// The whole call, body included.
    Total,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::Headers => "response headers",
            TimeoutPhase::Idle => "idle body",
            TimeoutPhase::Total => "total",
        })
    }
}

/// An upstream call ran out of time in `phase` (HTTP 504).
///
/// ```
/// use std::time::Duration;
/// use llm_tower_core::{Timeout, TimeoutPhase};
/// let e = Timeout { phase: TimeoutPhase::Idle, after: Duration::from_secs(30) };
/// assert_eq!(e.to_string(), "upstream idle body timeout after 30s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout {
    /// The phase that timed out.
    pub phase: TimeoutPhase,
    /// The limit that was reached.
    pub after: Duration,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream {} timeout after {:?}", self.phase, self.after)
    }
}
impl StdError for Timeout {}

/// The upstream could not be reached (HTTP 502): DNS, TCP or TLS failed.
///
/// ```
/// let e = llm_tower_core::Connect::new("api.example.com:443", "connection refused");
/// assert!(e.to_string().contains("api.example.com:443"));
/// ```
#[derive(Debug)]
pub struct Connect {
    pub(super) authority: String,
    pub(super) source: Box<dyn StdError + Send + Sync>,
}

impl Connect {
    /// A connect error for `authority` caused by `source`.
    pub fn new(authority: impl Into<String>, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self { authority: authority.into(), source: source.into() }
    }

    /// The host and port that could not be reached.
    ///
    /// ```
    /// assert_eq!(llm_tower_core::Connect::new("h:1", "x").authority(), "h:1");
    /// ```
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

impl fmt::Display for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not connect to upstream {}: {}", self.authority, self.source)
    }
}
impl StdError for Connect {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// The connection to the upstream failed after it was established but before
/// the response headers arrived: reset, closed, or a protocol error (HTTP 502).
///
/// ```
/// let e = llm_tower_core::Transport::new("connection reset by peer");
/// assert!(e.to_string().contains("reset"));
/// ```
#[derive(Debug)]
pub struct Transport {
    pub(super) source: Box<dyn StdError + Send + Sync>,
}

impl Transport {
    /// A transport error caused by `source`.
    pub fn new(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self { source: source.into() }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream connection failed before the response: {}", self.source)
    }
}
impl StdError for Transport {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// An upstream response body broke after it had started (reset, protocol error).
///
/// Too late to retry or fail over: a streamed response ends with an SSE
/// `error` event carrying this.
///
/// ```
/// let e = llm_tower_core::StreamAborted::new("connection reset");
/// assert_eq!(e.to_string(), "upstream response ended abnormally: connection reset");
/// ```
#[derive(Debug)]
pub struct StreamAborted {
    pub(super) reason: Box<dyn StdError + Send + Sync>,
}

impl StreamAborted {
    /// A stream failure caused by `reason`.
    pub fn new(reason: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self { reason: reason.into() }
    }
}

impl fmt::Display for StreamAborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream response ended abnormally: {}", self.reason)
    }
}
impl StdError for StreamAborted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.reason)
    }
}

/// What was wrong with an upstream answer that was read whole before its head
/// was passed on (see [`BadResponse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BadResponseKind {
    /// The body broke off (connection reset or closed mid-body).
    Cut,
    /// The body was larger than the reader's limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A JSON answer that does not parse.
    InvalidJson,
}

/// An upstream answer that could not be passed on whole (HTTP 502): it broke
/// off, was over the size limit, or was not the JSON it claimed to be. No byte
/// of it reached the caller, so a cut or invalid answer is retryable (another
/// attempt or another provider may answer); an answer over the limit is not
/// (the same request would get the same answer).
///
/// ```
/// use llm_tower_core::{BadResponse, BadResponseKind, ErrorInfo};
/// let e = BadResponse::new(BadResponseKind::TooLarge { limit: 1024 });
/// assert_eq!(e.to_string(), "upstream answer larger than 1024 bytes");
/// let info = ErrorInfo::from_error(&e);
/// assert_eq!(info.status, http::StatusCode::BAD_GATEWAY);
/// assert_eq!(info.code, Some("upstream_response_too_large"));
/// ```
#[derive(Debug)]
pub struct BadResponse {
    /// What was wrong.
    pub kind: BadResponseKind,
    pub(super) source: Option<Box<dyn StdError + Send + Sync>>,
}

impl BadResponse {
    /// An answer that was wrong in the way `kind` says.
    pub fn new(kind: BadResponseKind) -> Self {
        Self { kind, source: None }
    }

    /// An answer whose body broke off because of `source`.
    pub fn cut(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self { kind: BadResponseKind::Cut, source: Some(source.into()) }
    }

    /// Whether another attempt may get a good answer.
    ///
    /// ```
    /// use llm_tower_core::{BadResponse, BadResponseKind};
    /// assert!(BadResponse::new(BadResponseKind::InvalidJson).retryable());
    /// assert!(!BadResponse::new(BadResponseKind::TooLarge { limit: 1 }).retryable());
    /// ```
    pub fn retryable(&self) -> bool {
        !matches!(self.kind, BadResponseKind::TooLarge { .. })
    }
}

impl fmt::Display for BadResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            BadResponseKind::Cut => match &self.source {
                Some(s) => write!(f, "upstream answer broke off: {s}"),
                None => f.write_str("upstream answer broke off"),
            },
            BadResponseKind::TooLarge { limit } => write!(f, "upstream answer larger than {limit} bytes"),
            BadResponseKind::InvalidJson => f.write_str("upstream answer is not valid JSON"),
        }
    }
}

impl StdError for BadResponse {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

/// An upstream stream sent an event (or a line) longer than the reader's
/// limit: the stream is ended with this error (an SSE `error` event at the
/// edge) rather than buffering without bound (HTTP 502 if nothing was sent yet).
///
/// ```
/// let e = llm_tower_core::EventTooLarge { limit: 4 << 20 };
/// assert_eq!(e.to_string(), "upstream stream event larger than 4194304 bytes");
/// assert_eq!(llm_tower_core::ErrorInfo::from_error(&e).code, Some("upstream_event_too_large"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTooLarge {
    /// The limit, in bytes.
    pub limit: usize,
}

impl fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream stream event larger than {} bytes", self.limit)
    }
}
impl StdError for EventTooLarge {}

/// An upstream answered with an error status, turned into an error (for callers
/// that want `Result` semantics, or when the upstream's own body is unusable).
///
/// ```
/// use http::StatusCode;
/// let e = llm_tower_core::Upstream::from_body(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>");
/// assert_eq!(e.status, StatusCode::BAD_GATEWAY);
/// assert!(e.message.contains("502"));
/// let e = llm_tower_core::Upstream::from_body(
///     StatusCode::TOO_MANY_REQUESTS, None, br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#);
/// assert_eq!(e.message, "slow down");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Upstream {
    /// The upstream status.
    pub status: StatusCode,
    /// The upstream's retry hint, if any.
    pub retry_after: Option<Duration>,
    /// The upstream's error message, or a description of the status.
    pub message: String,
    /// The upstream's error `type`, if it sent an OpenAI/Anthropic error body.
    pub kind: Option<String>,
    /// The upstream's error `code`, if any.
    pub code: Option<String>,
}

impl Upstream {
    /// Builds the error from a status, retry hint and (possibly non-JSON) body.
    pub fn from_body(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Outer {
            error: Inner,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            #[serde(default)]
            message: Option<String>,
            #[serde(rename = "type", default)]
            kind: Option<String>,
            #[serde(default)]
            code: Option<serde_json::Value>,
        }
        let parsed = serde_json::from_slice::<Outer>(body).ok().map(|o| o.error);
        let code = parsed.as_ref().and_then(|p| match &p.code {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        let message = parsed
            .as_ref()
            .and_then(|p| p.message.clone())
            .unwrap_or_else(|| format!("upstream returned {status}"));
        Upstream { status, retry_after, message, kind: parsed.and_then(|p| p.kind), code }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream error {}: {}", self.status.as_u16(), self.message)
    }
}
impl StdError for Upstream {}
