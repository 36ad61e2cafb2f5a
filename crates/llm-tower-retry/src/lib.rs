//! Retry layer for LLM HTTP calls.
//!
//! [`RetryLayer`] retries what `llm-tower-core`'s classifier calls retryable
//! (429, 5xx, 529, timeouts, connection failures), never a client error:
//!
//! - **Backoff** exponential, linear, fixed or decorrelated, with full (default),
//!   equal, decorrelated or no jitter; the random source is injectable.
//! - **Server hints win**: `retry-after` (seconds or HTTP-date),
//!   `retry-after-ms` and `x-ratelimit-reset-*` set the next delay; a hint over
//!   `max_retry_after` (60 s) means the response goes back at once.
//!   `x-should-retry` is obeyed; a 429 whose body says `insufficient_quota` is
//!   never retried.
//! - **Retry budget**: retries add at most a fraction (20 %) of recent traffic
//!   plus a small floor, so an outage sees ~1.2× traffic, not 3×. A request
//!   carrying core's `RouteBudget` (put there by a failover above) draws on
//!   that route-wide budget instead, shared with the failover's own moves.
//! - **Deadline** over all attempts and sleeps; optional per-attempt timeout,
//!   fixed or adaptive (a latency quantile × factor, clamped).
//! - Retries happen only before the response head is handed back: a stream
//!   that started is never retried.
//! - **Elsewhere first**: a request carrying core's `RetryElsewhere` (put
//!   there by a failover above when another usable backend is still to come)
//!   is not retried here: its first retryable failure is returned at once so
//!   that the next backend answers without waiting out this one's backoff.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! use llm_tower_core::LlmBody;
//! use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
//! use llm_tower_retry::{RetryLayer, RetryPolicy};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let faults = FaultPlan::Script { faults: vec![Fault::status_retry_after(503, 0)] };
//! let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await?;
//! let provider = llm_tower_http::Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;
//! let retry = RetryLayer::new(RetryPolicy::default());
//! let svc = ServiceBuilder::new().layer(retry.clone()).service(llm_tower_http::LlmHttpService::new(provider));
//! let req = http::Request::post("/v1/chat/completions")
//!     .body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[]}"#))?;
//! assert_eq!(svc.oneshot(req).await?.status(), 200);
//! assert_eq!(retry.stats().retries, 1);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod adaptive;
mod decide;
mod policy;
#[cfg(feature = "serde")]
pub mod section;
mod service;
mod stats;

pub use llm_tower_core::budget::{BudgetConfig, RetryBudget};
pub use policy::{AttemptTimeout, Backoff, Jitter, RandomSource, RetryPolicy, SeededRandom, ThreadRandom};
pub use service::{ResponseFuture, Retry, RetryLayer};
pub use stats::RetryStats;
