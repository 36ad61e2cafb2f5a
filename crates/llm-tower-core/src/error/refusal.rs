//! Requests refused before or instead of an upstream call: bad input, unknown model, limits, budgets, an open breaker.

use super::*;

/// The request is malformed (HTTP 400, `invalid_request_error`).
///
/// ```
/// let e = llm_tower_core::InvalidRequest::new("bad n").with_param("n");
/// assert_eq!(e.param(), Some("n"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRequest {
    pub(super) message: String,
    pub(super) param: Option<String>,
    pub(super) code: Option<&'static str>,
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
    pub(super) model: String,
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

/// The request carries no API key, or one nobody issued (HTTP 401,
/// `invalid_api_key`). It never holds the key it was given.
///
/// ```
/// use llm_tower_core::{ErrorInfo, InvalidApiKey};
/// let info = ErrorInfo::from_error(&InvalidApiKey::Missing);
/// assert_eq!(info.status, 401);
/// assert_eq!(info.code, Some("invalid_api_key"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidApiKey {
    /// No `authorization: Bearer ...` (nor `x-api-key`) header.
    Missing,
    /// A key that is not (or no longer) valid.
    Unknown,
}

impl fmt::Display for InvalidApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidApiKey::Missing => {
                "You didn't provide an API key: send it as `Authorization: Bearer <key>` (or `x-api-key`)."
            }
            InvalidApiKey::Unknown => "Incorrect API key provided.",
        })
    }
}
impl StdError for InvalidApiKey {}

/// Shared state (limits, budgets, keys in Redis) could not be reached, and
/// the operator chose to refuse rather than decide alone (HTTP 503,
/// `state_store_unavailable`, with `retry-after`).
///
/// ```
/// use llm_tower_core::{ErrorInfo, StoreUnavailable};
/// let e = StoreUnavailable { store: "redis".into(), retry_after: std::time::Duration::from_secs(1) };
/// let info = ErrorInfo::from_error(&e);
/// assert_eq!((info.status.as_u16(), info.code), (503, Some("state_store_unavailable")));
/// assert_eq!(info.retry_after, Some(std::time::Duration::from_secs(1)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUnavailable {
    /// Which store (`redis`).
    pub store: String,
    /// When to try again.
    pub retry_after: std::time::Duration,
}

impl fmt::Display for StoreUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the shared {} state is unavailable; try again later", self.store)
    }
}
impl StdError for StoreUnavailable {}

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
pub(super) struct Usd(pub(super) u64);

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
