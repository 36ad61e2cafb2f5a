//! Typed errors, and their mapping to OpenAI-format JSON error responses.
//!
//! Every error an llm-tower layer creates is one of these types, returned as a
//! [`tower::BoxError`] and recoverable with `downcast_ref`. [`ErrorInfo::from_error`]
//! finds the first known type in an error's `source()` chain and says which
//! status, `type`, `code` and `retry-after` it maps to; [`error_response`] builds
//! the response. Errors of unknown types become a 500 that reveals nothing.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::{HeaderValue, StatusCode};

use crate::LlmBody;
use crate::chat::ErrorBody;

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
    authority: String,
    source: Box<dyn StdError + Send + Sync>,
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
    source: Box<dyn StdError + Send + Sync>,
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
    reason: Box<dyn StdError + Send + Sync>,
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
    source: Option<Box<dyn StdError + Send + Sync>>,
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

/// The request is malformed (HTTP 400, `invalid_request_error`).
///
/// ```
/// let e = llm_tower_core::InvalidRequest::new("bad n").with_param("n");
/// assert_eq!(e.param(), Some("n"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRequest {
    message: String,
    param: Option<String>,
    code: Option<&'static str>,
}

impl InvalidRequest {
    /// An invalid-request error with a message for the caller.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), param: None, code: None }
    }
    /// Names the offending parameter.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }
    /// Sets the machine-readable code (e.g. `context_length_exceeded`).
    ///
    /// ```
    /// let e = llm_tower_core::InvalidRequest::new("x").with_code("unsupported");
    /// assert_eq!(e.code(), Some("unsupported"));
    /// ```
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    /// The offending parameter.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }
    /// The code.
    pub fn code(&self) -> Option<&'static str> {
        self.code
    }
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl StdError for InvalidRequest {}

/// The requested model is not served (HTTP 404, `model_not_found`).
///
/// ```
/// let e = llm_tower_core::ModelNotFound::new("gpt-9");
/// assert!(e.to_string().contains("gpt-9"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelNotFound {
    model: String,
}

impl ModelNotFound {
    /// The error for `model`.
    pub fn new(model: impl Into<String>) -> Self {
        Self { model: model.into() }
    }
}

impl fmt::Display for ModelNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "The model `{}` does not exist or you do not have access to it.", self.model)
    }
}
impl StdError for ModelNotFound {}

/// The request body exceeds the configured limit (HTTP 413).
///
/// ```
/// assert!(llm_tower_core::PayloadTooLarge { limit: 1024 }.to_string().contains("1024"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadTooLarge {
    /// The limit in bytes.
    pub limit: usize,
}

impl fmt::Display for PayloadTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body exceeds the limit of {} bytes", self.limit)
    }
}
impl StdError for PayloadTooLarge {}

/// A circuit breaker refused the call because its circuit is open (HTTP 503).
///
/// The upstream was not called. `retry_after` says when the breaker will next
/// let a probe through.
///
/// ```
/// use std::time::Duration;
/// let e = llm_tower_core::CircuitOpen { key: "openai".into(), retry_after: Some(Duration::from_secs(30)) };
/// assert!(e.to_string().contains("openai"));
/// let res = llm_tower_core::error_response(&e);
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers()["retry-after"], "30");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    /// The breaker's key (provider, model, ...).
    pub key: String,
    /// Time until the breaker admits a probe, when known.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit open for {}", self.key)?;
        match self.retry_after {
            Some(d) => write!(f, " (retry after {} ms)", d.as_millis()),
            None => Ok(()),
        }
    }
}
impl StdError for CircuitOpen {}

/// One of our own rate limits refused the call (HTTP 429, `rate_limit_error`).
///
/// The upstream was not called. `retry_after` is when the limit will have
/// room again (`None` when the request can never fit, e.g. more tokens than
/// the per-minute limit, or when the wait queue is full).
///
/// ```
/// use std::time::Duration;
/// let e = llm_tower_core::RateLimited::new("tenant-a", "requests_per_minute", Some(Duration::from_secs(1)));
/// let res = llm_tower_core::error_response(&e);
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["retry-after"], "1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// The limiter's key (tenant, model, ...).
    pub key: String,
    /// Which limit refused (`requests_per_minute`, `tokens_per_minute`, `concurrency`, ...).
    pub limit: &'static str,
    /// When there will be room again, if ever.
    pub retry_after: Option<Duration>,
}

impl RateLimited {
    /// The error for `key`'s `limit`.
    pub fn new(key: impl Into<String>, limit: &'static str, retry_after: Option<Duration>) -> Self {
        Self { key: key.into(), limit, retry_after }
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limit {} reached for {}", self.limit, self.key)?;
        if let Some(d) = self.retry_after {
            write!(f, "; retry after {:.3}s", d.as_secs_f64())?;
        }
        Ok(())
    }
}
impl StdError for RateLimited {}

/// A spending budget would be exceeded (HTTP 429, `type: insufficient_quota`,
/// `x-should-retry: false`: SDKs must not retry it).
///
/// ```
/// let e = llm_tower_core::BudgetExceeded {
///     key: "acme".into(), period: "day", limit_micros: 5_000_000, spent_micros: 4_990_000, request_micros: 20_000,
/// };
/// assert_eq!(e.to_string(), "day budget of $5.00 for acme is exhausted ($4.99 used, this request needs up to $0.02)");
/// let res = llm_tower_core::error_response(&e);
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["x-should-retry"], "false");
/// // A request that could never fit says so.
/// let big = llm_tower_core::BudgetExceeded { spent_micros: 0, request_micros: 9_000_000, ..e };
/// assert!(big.to_string().starts_with("this request's estimated cost ($9.00) is over the whole day budget"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// The budget's key (tenant, ...).
    pub key: String,
    /// The period (`day`, `month`, `total`).
    pub period: &'static str,
    /// The budget, micro-dollars.
    pub limit_micros: u64,
    /// Spent and reserved so far, micro-dollars.
    pub spent_micros: u64,
    /// The refused request's estimated cost (input and `max_tokens`), micro-dollars.
    pub request_micros: u64,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.request_micros > self.limit_micros {
            return write!(
                f,
                "this request's estimated cost (${}) is over the whole {} budget of ${} for {}: lower max_tokens",
                Usd(self.request_micros),
                self.period,
                Usd(self.limit_micros),
                self.key
            );
        }
        write!(
            f,
            "{} budget of ${} for {} is exhausted (${} used, this request needs up to ${})",
            self.period,
            Usd(self.limit_micros),
            self.key,
            Usd(self.spent_micros),
            Usd(self.request_micros)
        )
    }
}
impl StdError for BudgetExceeded {}

/// Micro-dollars shown as dollars: cents when whole, else as many digits as needed.
struct Usd(u64);

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, micros) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if micros % 10_000 == 0 {
            return write!(f, "{whole}.{:02}", micros / 10_000);
        }
        let digits = format!("{micros:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// A retry layer gave up after `attempts` attempts; `last` is the last error.
///
/// Mapped to a response as its last error is (its `source()`).
///
/// ```
/// let last: tower::BoxError = Box::new(llm_tower_core::Transport::new("reset"));
/// let e = llm_tower_core::RetriesExhausted::new(3, last);
/// assert_eq!(e.attempts, 3);
/// assert_eq!(llm_tower_core::error_response(&e).status(), 502);
/// ```
#[derive(Debug)]
pub struct RetriesExhausted {
    /// Attempts made (the first call included).
    pub attempts: u32,
    last: Box<dyn StdError + Send + Sync>,
}

impl RetriesExhausted {
    /// The error for `attempts` attempts ending in `last`.
    pub fn new(attempts: u32, last: Box<dyn StdError + Send + Sync>) -> Self {
        Self { attempts, last }
    }

    /// The last attempt's error.
    ///
    /// ```
    /// let e = llm_tower_core::RetriesExhausted::new(2, "boom".into());
    /// assert_eq!(e.last().to_string(), "boom");
    /// ```
    pub fn last(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.last
    }
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gave up after {} attempts: {}", self.attempts, self.last)
    }
}
impl StdError for RetriesExhausted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.last)
    }
}

/// One backend a failover tried, or skipped, and why it did not answer.
///
/// ```
/// let a = llm_tower_core::BackendAttempt::new("openai", "503 Service Unavailable").status(503);
/// assert_eq!(a.status, Some(503));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BackendAttempt {
    /// The backend's name.
    pub backend: String,
    /// Why it did not answer (`circuit open`, `503 Service Unavailable`, `timeout`, ...).
    pub reason: String,
    /// The status it answered, if it answered.
    pub status: Option<u16>,
    /// Its hint of when to try again.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    /// Skipped without a call (unavailable), rather than tried.
    pub skipped: bool,
}

impl BackendAttempt {
    /// A backend tried that failed for `reason`.
    pub fn new(backend: impl Into<String>, reason: impl Into<String>) -> Self {
        BackendAttempt {
            backend: backend.into(),
            reason: reason.into(),
            status: None,
            retry_after: None,
            skipped: false,
        }
    }

    /// With the status it answered.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// With its retry hint.
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// Marked as skipped (not called).
    pub fn skipped(mut self) -> Self {
        self.skipped = true;
        self
    }
}

/// Every backend a failover could use was tried (or was unavailable) and none
/// answered. Maps to 429 when every backend that was tried was rate limited
/// (with the soonest `retry-after`), to 503 `no_backend_available` when none
/// could be tried, else to 502 `all_backends_failed`.
///
/// ```
/// use llm_tower_core::{AllBackendsFailed, BackendAttempt};
/// let e = AllBackendsFailed { attempts: vec![
///     BackendAttempt::new("a", "503 Service Unavailable").status(503),
///     BackendAttempt::new("b", "circuit open").skipped(),
/// ] };
/// assert_eq!(e.to_string(), "all backends failed: a (503 Service Unavailable), b (circuit open)");
/// assert_eq!(llm_tower_core::error_response(&e).status(), 502);
/// ```
#[derive(Clone, Debug)]
pub struct AllBackendsFailed {
    /// Each backend tried or skipped, in order.
    pub attempts: Vec<BackendAttempt>,
}

impl fmt::Display for AllBackendsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts.is_empty() {
            return f.write_str("no backend serves this request");
        }
        f.write_str("all backends failed: ")?;
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ({})", a.backend, a.reason)?;
        }
        Ok(())
    }
}

impl StdError for AllBackendsFailed {}

/// What an error maps to on the wire: status, OpenAI error fields, hints.
///
/// ```
/// use llm_tower_core::{ErrorInfo, ModelNotFound};
/// let err: tower::BoxError = Box::new(ModelNotFound::new("x"));
/// let info = ErrorInfo::from_error(&*err);
/// assert_eq!(info.status, http::StatusCode::NOT_FOUND);
/// assert_eq!(info.code, Some("model_not_found"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorInfo {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI error `type`.
    pub kind: &'static str,
    /// OpenAI error `code`.
    pub code: Option<&'static str>,
    /// Message for the caller.
    pub message: String,
    /// Offending parameter.
    pub param: Option<String>,
    /// Sent as `retry-after` (whole seconds, rounded up) and `retry-after-ms`.
    pub retry_after: Option<Duration>,
    /// Sent as `x-should-retry`, which OpenAI SDKs obey.
    pub should_retry: Option<bool>,
}

impl ErrorInfo {
    /// An error description from its parts.
    ///
    /// ```
    /// let i = llm_tower_core::ErrorInfo::new(http::StatusCode::NOT_FOUND, "invalid_request_error", "no route");
    /// assert_eq!(i.status.as_u16(), 404);
    /// ```
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            message: message.into(),
            param: None,
            retry_after: None,
            should_retry: None,
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Describes the first error of a known type in `err`'s source chain;
    /// unknown errors map to a bare 500.
    pub fn from_error(err: &(dyn StdError + 'static)) -> Self {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(info) = Self::known(e) {
                return info;
            }
            cur = e.source();
        }
        ErrorInfo::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
            .code("internal_error")
    }

    fn known(e: &(dyn StdError + 'static)) -> Option<Self> {
        if let Some(e) = e.downcast_ref::<InvalidRequest>() {
            let mut i = ErrorInfo::new(StatusCode::BAD_REQUEST, "invalid_request_error", e.to_string());
            i.param = e.param.clone();
            i.code = e.code;
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<ModelNotFound>() {
            return Some(
                ErrorInfo::new(StatusCode::NOT_FOUND, "invalid_request_error", e.to_string())
                    .code("model_not_found"),
            );
        }
        if let Some(e) = e.downcast_ref::<PayloadTooLarge>() {
            return Some(
                ErrorInfo::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", e.to_string())
                    .code("payload_too_large"),
            );
        }
        if let Some(e) = e.downcast_ref::<Timeout>() {
            return Some(
                ErrorInfo::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", e.to_string())
                    .code("upstream_timeout"),
            );
        }
        if e.is::<tower::timeout::error::Elapsed>() {
            return Some(
                ErrorInfo::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", "upstream request timed out")
                    .code("upstream_timeout"),
            );
        }
        if let Some(e) = e.downcast_ref::<Connect>() {
            return Some(
                ErrorInfo::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    format!("could not connect to upstream {}", e.authority),
                )
                .code("upstream_unreachable"),
            );
        }
        if e.is::<Transport>() {
            return Some(
                ErrorInfo::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "upstream connection failed before the response",
                )
                .code("upstream_connection_error"),
            );
        }
        if e.is::<EventTooLarge>() {
            return Some(
                ErrorInfo::new(StatusCode::BAD_GATEWAY, "api_error", e.to_string())
                    .code("upstream_event_too_large"),
            );
        }
        if let Some(e) = e.downcast_ref::<BadResponse>() {
            let code = match e.kind {
                BadResponseKind::Cut => "upstream_response_cut",
                BadResponseKind::TooLarge { .. } => "upstream_response_too_large",
                BadResponseKind::InvalidJson => "upstream_response_invalid",
            };
            return Some(ErrorInfo::new(StatusCode::BAD_GATEWAY, "api_error", e.to_string()).code(code));
        }
        if e.is::<StreamAborted>() {
            return Some(
                ErrorInfo::new(StatusCode::BAD_GATEWAY, "api_error", "upstream response ended abnormally")
                    .code("upstream_stream_aborted"),
            );
        }
        if let Some(e) = e.downcast_ref::<BudgetExceeded>() {
            let mut i = ErrorInfo::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", e.to_string())
                .code("insufficient_quota");
            i.should_retry = Some(false);
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<RateLimited>() {
            let mut i = ErrorInfo::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", e.to_string())
                .code("rate_limit_exceeded");
            i.retry_after = e.retry_after;
            i.should_retry = Some(e.retry_after.is_some());
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<CircuitOpen>() {
            let mut i = ErrorInfo::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                format!("upstream {} is unavailable (circuit open); try again later", e.key),
            )
            .code("circuit_open");
            i.retry_after = e.retry_after;
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<AllBackendsFailed>() {
            let tried: Vec<&BackendAttempt> = e.attempts.iter().filter(|a| !a.skipped).collect();
            let limited = !tried.is_empty() && tried.iter().all(|a| a.status == Some(429));
            let mut i = if limited {
                ErrorInfo::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", e.to_string())
                    .code("all_backends_rate_limited")
            } else if tried.is_empty() {
                ErrorInfo::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", e.to_string())
                    .code("no_backend_available")
            } else {
                ErrorInfo::new(StatusCode::BAD_GATEWAY, "api_error", e.to_string())
                    .code("all_backends_failed")
            };
            i.retry_after = e.attempts.iter().filter_map(|a| a.retry_after).min();
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<Upstream>() {
            let mut i = ErrorInfo::new(e.status, upstream_kind(e.status), e.message.clone());
            i.retry_after = e.retry_after;
            return Some(i);
        }
        None
    }

    /// The OpenAI-format JSON body.
    ///
    /// ```
    /// let i = llm_tower_core::ErrorInfo::new(http::StatusCode::BAD_REQUEST, "invalid_request_error", "m");
    /// assert_eq!(i.body().error.message, "m");
    /// ```
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(&self.message, self.kind, self.param.as_deref(), self.code)
    }

    /// The HTTP response: JSON body plus `retry-after`, `retry-after-ms` and
    /// `x-should-retry` headers when known.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut i = llm_tower_core::ErrorInfo::new(http::StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "slow");
    /// i.retry_after = Some(Duration::from_millis(1500));
    /// let res = i.into_response();
    /// assert_eq!(res.headers()["retry-after"], "2");
    /// assert_eq!(res.headers()["retry-after-ms"], "1500");
    /// ```
    pub fn into_response(self) -> http::Response<LlmBody> {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut res = http::Response::new(LlmBody::from(body));
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
            h.insert("retry-after-ms", HeaderValue::from(after.as_millis() as u64));
        }
        if let Some(s) = self.should_retry {
            h.insert("x-should-retry", HeaderValue::from_static(if s { "true" } else { "false" }));
        }
        res
    }
}

fn upstream_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Turns any error into an OpenAI-format JSON error response.
///
/// ```
/// use llm_tower_core::{error_response, Timeout, TimeoutPhase};
/// let err: tower::BoxError = Box::new(Timeout { phase: TimeoutPhase::Headers, after: std::time::Duration::from_secs(5) });
/// let res = error_response(&*err);
/// assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
///
/// let unknown: tower::BoxError = "db password=hunter2 rejected".into();
/// let res = error_response(&*unknown);
/// assert_eq!(res.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
/// assert!(!String::from_utf8_lossy(res.body().as_bytes()).contains("hunter2"));
/// ```
pub fn error_response(err: &(dyn StdError + 'static)) -> http::Response<LlmBody> {
    ErrorInfo::from_error(err).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_show_every_digit_that_matters() {
        let shown = |m: u64| Usd(m).to_string();
        assert_eq!(shown(0), "0.00");
        assert_eq!(shown(50_000_000), "50.00");
        assert_eq!(shown(1_230_000), "1.23");
        assert_eq!(shown(1_000), "0.001");
        assert_eq!(shown(585), "0.000585");
        assert_eq!(shown(2_500_001), "2.500001");
    }

    fn info(e: tower::BoxError) -> ErrorInfo {
        ErrorInfo::from_error(&*e)
    }

    #[test]
    fn statuses() {
        let d = Duration::from_secs(1);
        let cases: Vec<(tower::BoxError, u16, &str)> = vec![
            (Box::new(InvalidRequest::new("x")), 400, "invalid_request_error"),
            (Box::new(ModelNotFound::new("x")), 404, "invalid_request_error"),
            (Box::new(PayloadTooLarge { limit: 1 }), 413, "invalid_request_error"),
            (Box::new(Timeout { phase: TimeoutPhase::Connect, after: d }), 504, "timeout_error"),
            (Box::new(tower::timeout::error::Elapsed::new()), 504, "timeout_error"),
            (Box::new(Connect::new("h:1", "refused")), 502, "api_error"),
            (Box::new(Transport::new("reset")), 502, "api_error"),
            (Box::new(StreamAborted::new("reset")), 502, "api_error"),
            (Box::new(Upstream::from_body(StatusCode::SERVICE_UNAVAILABLE, Some(d), b"")), 503, "api_error"),
            (
                Box::new(Upstream::from_body(StatusCode::TOO_MANY_REQUESTS, None, b"")),
                429,
                "rate_limit_error",
            ),
            ("anything".into(), 500, "server_error"),
        ];
        for (e, status, kind) in cases {
            let i = info(e);
            assert_eq!((i.status.as_u16(), i.kind), (status, kind), "{i:?}");
        }
    }

    #[test]
    fn finds_known_errors_in_the_source_chain() {
        #[derive(Debug)]
        struct Wrapper(Timeout);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrapper(Timeout { phase: TimeoutPhase::Total, after: Duration::from_secs(1) });
        assert_eq!(info(Box::new(e)).status, StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn response_carries_retry_after_and_json() {
        let e = Upstream::from_body(StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(7)), b"nope");
        let res = error_response(&e);
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "7");
        let body: ErrorBody = serde_json::from_slice(res.body().as_bytes()).unwrap();
        assert_eq!(body.error.kind, "api_error");
    }

    #[test]
    fn connect_error_message_names_host_but_not_cause_details() {
        let e = Connect::new("10.0.0.1:443", "tls: secret-ish internal detail");
        let res = error_response(&e);
        let text = String::from_utf8_lossy(res.body().as_bytes()).into_owned();
        assert!(text.contains("10.0.0.1:443"));
        assert!(!text.contains("internal detail"));
    }
}
