//! Keyed request and token rate limits for LLM calls.
//!
//! Providers limit requests **and tokens** per minute; tenants need their own
//! limits too. [`RateLimitLayer`] applies any combination of requests per
//! minute and per day, tokens per minute, concurrency and a minimum interval,
//! per key ([`KeyFn`](llm_tower_core::KeyFn)), all taken atomically:
//!
//! - weighted GCRA with refunds, in integer nanoseconds on tokio time: token
//!   reservations are reconciled with real usage (charged or refunded);
//! - reject at once (`RateLimited { retry_after }`, 429) or wait in FIFO order
//!   up to `max_wait` with a bounded queue — a wait is a reservation of future
//!   capacity, so order is first come, first served; a dropped waiter leaves
//!   the queue and returns its capacity to the key (waiters already scheduled
//!   keep their times; the next arrivals get the freed capacity);
//! - adaptive: the provider's `x-ratelimit-*` and 429 `retry-after` hold or
//!   pace the key before the provider starts refusing;
//! - state behind [`RateLimitStore`] (in memory by default), so a shared
//!   store can replace it without changing the layer.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! use llm_tower_core::{LlmBody, RateLimited};
//! use llm_tower_ratelimit::{Limits, RateLimitLayer};
//! use tower::{Layer, ServiceExt};
//!
//! let mock = llm_tower_mock::MockServer::start(Default::default()).await?;
//! let http = llm_tower_http::LlmHttpService::new(llm_tower_http::Provider::openai_compatible("m", &format!("{}/v1", mock.url()))?);
//! let svc = RateLimitLayer::new(Limits::default().requests_per_minute(1)).layer(http);
//! let req = || http::Request::post("/v1/chat/completions").body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[]}"#)).unwrap();
//! assert_eq!(svc.clone().oneshot(req()).await?.status(), 200);
//! let err = svc.oneshot(req()).await.unwrap_err();
//! assert!(err.is::<RateLimited>());
//! assert_eq!(mock.stats().llm_requests, 1, "the refused request never left");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

#[cfg(feature = "contract")]
pub mod contract;
mod future;
mod limits;
#[cfg(feature = "serde")]
pub mod section;
mod service;
mod settle;
mod shared;
mod store;

pub use future::ResponseFuture;
pub use limits::{LimitKind, Limits, Mode, Rate, Rates};
pub use service::{RateLimit, RateLimitLayer};
pub use shared::RateLimitStats;
pub use store::{
    Adjustment, Decision, Demand, Grant, KeyStats, MemoryStore, Quota, RateLimitStore, Slot, SlotFuture,
};
