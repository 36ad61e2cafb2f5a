//! Exact-match response cache for LLM calls, as a tower layer.
//!
//! [`CacheLayer`] answers a request from memory when an identical one (by
//! [`CacheKey`], a canonical hash of what changes the answer) was answered
//! before, in the same scope (tenant). It is correct for streams (recorded
//! live, replayed as SSE or served as JSON), never stores a failed or cut
//! answer, makes one upstream call for identical concurrent misses, and is
//! bounded in bytes on [`moka`]. See [`CacheLayer`] for the rules.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! use llm_tower_cache::{CacheConfig, CacheLayer, Strategy};
//! use llm_tower_http::{LlmHttpService, Provider};
//! use llm_tower_mock::{MockConfig, MockServer};
//! use tower::{Layer, ServiceExt};
//!
//! let mock = MockServer::start(MockConfig::default()).await?;
//! let upstream = LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?);
//! let cache = CacheLayer::new(CacheConfig::default().strategy(Strategy::Aggressive));
//! let svc = cache.layer(upstream);
//! let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
//! for expect in ["MISS", "HIT"] {
//!     let req = http::Request::post("/v1/chat/completions").body(llm_tower_core::LlmBody::from(body))?;
//!     let res = svc.clone().oneshot(req).await?;
//!     assert_eq!(res.headers()["x-llm-cache"], expect);
//!     http_body_util::BodyExt::collect(res.into_body()).await?;
//! }
//! assert_eq!(mock.stats().requests, 1);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod body;
mod config;
pub mod convert;
mod entry;
pub mod key;
mod l2;
mod layer;
#[cfg(feature = "serde")]
pub mod section;
mod service;

pub use config::{CacheConfig, Predicate, Strategy};
pub use entry::Form;
pub use key::CacheKey;
pub use l2::{L2, L2Future};
pub use layer::{CacheLayer, CacheStats};
pub use service::{Cache, ResponseFuture, X_LLM_CACHE, X_LLM_CACHE_TTL};
