//! Errors that sum up several attempts: retries exhausted, every backend failed.

use super::*;

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
    pub(super) last: Box<dyn StdError + Send + Sync>,
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
