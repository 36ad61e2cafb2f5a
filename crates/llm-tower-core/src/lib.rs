//! The shared vocabulary of llm-tower.
//!
//! Every llm-tower layer speaks these types, and layers never depend on each
//! other: they cooperate through what this crate defines and what they store
//! in a request's `http::Extensions`.
//!
//! - [`LlmBody`]: the replayable `Bytes`-backed request body.
//! - [`edge`]: [`LlmEdgeLayer`](edge::LlmEdgeLayer), any request body in, OpenAI-format
//!   errors out: what `Router::route_service` and a hyper server need.
//! - [`LlmResponseBody`]: the one response body of every layer, observed
//!   (metered once) rather than wrapped: see [`response`].
//! - [`RequestInfo`]: a request's meaning, parsed once, shared as `Arc`.
//! - [`chat`]: OpenAI-compatible types that keep unknown fields.
//! - [`json`]: [`from_bytes`](json::from_bytes), a body's JSON parse with one UTF-8 check.
//! - [`usage`]: [`Usage`] and the incremental JSON / SSE usage extractor.
//! - [`classify`]: success, client error or upstream failure, with retry hints.
//! - [`error`]: typed errors and their OpenAI-format JSON responses.
//! - [`tenant`]: [`TenantLayer`](tenant::TenantLayer), who a request spends as.
//! - [`KeyFn`]: request partitioning; [`Secret`]: keys that never print.
//!
//! ```
//! use llm_tower_core::{Api, RequestInfo};
//! let info = RequestInfo::parse(Api::ChatCompletions, br#"{"model":"gpt-4o-mini","messages":[]}"#)?;
//! assert_eq!(&*info.model, "gpt-4o-mini");
//! # Ok::<(), llm_tower_core::InvalidRequest>(())
//! ```
#![deny(missing_docs)]

mod body;
pub mod bounded;
pub mod budget;
pub mod chat;
pub mod classify;
pub mod config;
pub mod edge;
pub mod error;
pub mod hint;
pub mod info;
pub mod json;
pub mod key;
pub mod parts;
pub mod peek;
pub mod response;
mod secret;
pub mod sse;
pub mod tenant;
pub mod trace;
pub mod usage;

pub use body::LlmBody;
pub use classify::{Classification, Classified, Classify, GrpcClassifier, LlmClassifier, OutcomeClass};
pub use error::{
    AllBackendsFailed, BackendAttempt, BadResponse, BadResponseKind, BudgetExceeded, CircuitOpen, Connect,
    ErrorInfo, EventTooLarge, InvalidApiKey, InvalidRequest, ModelNotFound, PayloadTooLarge, RateLimited,
    RetriesExhausted, StoreUnavailable, StreamAborted, Timeout, TimeoutPhase, Transport, Upstream,
    error_response,
};
pub use info::{Api, RequestInfo};
pub use key::{Key, KeyFn};
pub use parts::ChatParts;
pub use response::LlmResponseBody;
pub use secret::Secret;
pub use usage::{Usage, UsageReport};

/// The attempt number of a request, set by a retry layer in the request's
/// extensions on retries (2, 3, ...) so inner layers and logs can see it. A
/// request without it is a first attempt: read it with [`Attempt::of`].
///
/// ```
/// use llm_tower_core::Attempt;
/// let mut req = http::Request::new(());
/// assert_eq!(Attempt::of(&req), 1);
/// req.extensions_mut().insert(Attempt(2));
/// assert_eq!(Attempt::of(&req), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The attempt number of `req` (1 when no retry layer marked it).
    pub fn of<B>(req: &http::Request<B>) -> u32 {
        req.extensions().get::<Attempt>().map_or(1, |a| a.0)
    }
}

/// The instant by which a request's answer (its response head) must have
/// arrived, in the request's extensions.
///
/// Whoever bounds a request's time writes it (the gateway's edge for the whole
/// request, a retry layer for each attempt); every layer below may only tighten
/// it, never extend it. The HTTP service stops waiting at it (a typed
/// `Timeout`), a retry layer does not start an attempt past it, and a circuit
/// breaker counts a call abandoned at or after it as a failure (an upstream that
/// hangs is the most common outage), while a call cancelled earlier (a hedge
/// that lost, a caller that left) counts as nothing.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_core::Deadline;
/// let mut req = http::Request::new(());
/// let now = tokio::time::Instant::now();
/// Deadline::tighten(&mut req, now + Duration::from_secs(30));
/// Deadline::tighten(&mut req, now + Duration::from_secs(60)); // later: ignored
/// assert_eq!(Deadline::of(&req), Some(now + Duration::from_secs(30)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub tokio::time::Instant);

impl Deadline {
    /// The deadline of `req`, if one was set.
    pub fn of<B>(req: &http::Request<B>) -> Option<tokio::time::Instant> {
        req.extensions().get::<Deadline>().map(|d| d.0)
    }

    /// Sets `req`'s deadline to `at`, unless it already has an earlier one;
    /// returns the deadline now in force.
    pub fn tighten<B>(req: &mut http::Request<B>, at: tokio::time::Instant) -> tokio::time::Instant {
        let ext = req.extensions_mut();
        match ext.get::<Deadline>() {
            Some(d) if d.0 <= at => d.0,
            _ => {
                ext.insert(Deadline(at));
                at
            }
        }
    }
}

/// Another backend can serve this request: a failover layer puts it in the
/// extensions of an attempt when a usable backend is still to come after the
/// one it calls, and a retry layer below that sees it returns a retryable
/// failure at once instead of waiting out backoff or a `retry-after` on the
/// provider that failed (the failover tries the next backend immediately).
/// The attempt on the route's last usable backend carries no marker and is
/// retried as usual.
///
/// ```
/// use llm_tower_core::RetryElsewhere;
/// let mut req = http::Request::new(());
/// assert!(!RetryElsewhere::is_set(&req));
/// req.extensions_mut().insert(RetryElsewhere);
/// assert!(RetryElsewhere::is_set(&req));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryElsewhere;

impl RetryElsewhere {
    /// Whether `req` carries the marker.
    pub fn is_set<B>(req: &http::Request<B>) -> bool {
        req.extensions().get::<RetryElsewhere>().is_some()
    }
}

/// Who answered a request: the provider's name, put in the response's
/// extensions by the HTTP service (a cache answers as `cache`), so that
/// accounting, logs and failover's `x-llm-backend` header can name it.
///
/// ```
/// use llm_tower_core::ServedBy;
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(ServedBy::new("openai"));
/// assert_eq!(ServedBy::of(&res), Some("openai"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServedBy(pub std::sync::Arc<str>);

impl ServedBy {
    /// A marker for `name`.
    pub fn new(name: impl Into<std::sync::Arc<str>>) -> Self {
        ServedBy(name.into())
    }

    /// The marker of an answer served from a response cache (`cache`).
    ///
    /// ```
    /// assert!(llm_tower_core::ServedBy::cache().is_cache());
    /// ```
    pub fn cache() -> Self {
        static CACHE: std::sync::OnceLock<std::sync::Arc<str>> = std::sync::OnceLock::new();
        ServedBy(CACHE.get_or_init(|| "cache".into()).clone())
    }

    /// Whether a response cache answered.
    pub fn is_cache(&self) -> bool {
        &*self.0 == "cache"
    }

    /// The name of who answered `res`, if known.
    pub fn of<B>(res: &http::Response<B>) -> Option<&str> {
        res.extensions().get::<ServedBy>().map(|s| &*s.0)
    }
}

/// The model an upstream was asked for, as sent (after a provider's alias or a
/// route target renamed it), put in the response's extensions by the HTTP
/// service, so that accounting prices an answer at the model that served it
/// rather than at the public name the caller used.
///
/// ```
/// use llm_tower_core::ServedModel;
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(ServedModel::new("gpt-4o-mini"));
/// assert_eq!(ServedModel::of(&res), Some("gpt-4o-mini"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServedModel(pub std::sync::Arc<str>);

impl ServedModel {
    /// A marker for `model`.
    pub fn new(model: impl Into<std::sync::Arc<str>>) -> Self {
        ServedModel(model.into())
    }

    /// The model that answered `res`, if known.
    pub fn of<B>(res: &http::Response<B>) -> Option<&str> {
        res.extensions().get::<ServedModel>().map(|s| &*s.0)
    }
}

/// Marks a response whose `x-ratelimit-*` headers were written by a rate
/// limiter of this stack (its own quota), not by the upstream: a limiter
/// above that adapts to the provider's headers must not learn from them.
/// Limiters write their headers on successful answers only, so a failure's
/// hints (which retry and breaker layers read) are always the upstream's own.
///
/// ```
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(llm_tower_core::LocalRateLimitHeaders);
/// assert!(res.extensions().get::<llm_tower_core::LocalRateLimitHeaders>().is_some());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalRateLimitHeaders;

/// The boxed error every layer returns (tower's).
pub type BoxError = tower::BoxError;
