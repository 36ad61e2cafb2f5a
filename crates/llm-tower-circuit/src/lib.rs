//! Circuit breaker layer for LLM (and any HTTP or gRPC) services.
//!
//! [`CircuitBreakerLayer`] keeps one breaker per key ([`KeyFn`](llm_tower_core::KeyFn):
//! provider, model, tenant) and opens a circuit on any of:
//! N consecutive failures, a failure rate over a sliding window (the last N
//! outcomes, or time buckets) once enough calls are seen, or a slow-call rate.
//! Only upstream failures count: client errors and our own layers' rejections
//! never do. A failure's `retry-after` holds the circuit open at least that long.
//!
//! An open circuit refuses calls at once with `CircuitOpen { retry_after }`
//! and never touches the inner service. After the open period (growing ×2 per
//! repeated trip, capped, jittered) the next call finds it half-open — lazily,
//! with no timer task per key — and at most K probes pass; S successes close
//! it, any failure re-opens it. An optional health probe can close it early.
//!
//! The call path is lock-free (atomics; a sharded map for keys), allocates
//! nothing, and keyed state is bounded and pruned. [`CircuitHandle`] reads and
//! overrides state, subscribes to transitions and reports [`CircuitStats`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! use llm_tower_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState};
//! use llm_tower_core::LlmBody;
//! use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
//! use tower::{Layer, ServiceExt};
//!
//! let mock = MockServer::start(MockConfig { faults: FaultPlan::Always { fault: Fault::status(503) }, ..Default::default() }).await?;
//! let http = llm_tower_http::LlmHttpService::new(llm_tower_http::Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?);
//! let layer = CircuitBreakerLayer::new(CircuitConfig::default().consecutive_failures(Some(2)));
//! let svc = layer.layer(http);
//! for _ in 0..2 {
//!     let req = http::Request::post("/v1/chat/completions").body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[]}"#))?;
//!     assert_eq!(svc.clone().oneshot(req).await?.status(), 503);
//! }
//! assert_eq!(layer.handle().state("*"), CircuitState::Open);
//! let req = http::Request::post("/v1/chat/completions").body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[]}"#))?;
//! let err = svc.oneshot(req).await.unwrap_err();
//! assert!(err.is::<llm_tower_core::CircuitOpen>());
//! assert_eq!(mock.stats().llm_requests, 2, "the open circuit did not call upstream");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod breaker;
mod config;
mod registry;
#[cfg(feature = "serde")]
pub mod section;
mod service;

pub use breaker::{CircuitState, Transition};
pub use config::{CircuitConfig, RateRule, SlowRule, Window};
pub use registry::{CircuitHandle, CircuitStats, KeyStats, OVERFLOW_KEY, ProbeFn, UNKEYED};
pub use service::{CircuitBreaker, CircuitBreakerLayer, ResponseFuture};
