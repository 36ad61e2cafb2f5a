//! llm-tower: tower middleware that makes calls to LLM HTTP APIs survive
//! production.
//!
//! This facade re-exports the workspace's crates, one module each:
//!
//! - [`core`]: the shared vocabulary ([`LlmBody`], [`RequestInfo`], usage
//!   extraction, classification, typed errors, [`Secret`]).
//! - [`upstream`]: the hyper-based LLM service ([`LlmHttpService`], [`Provider`]).
//! - [`retry`]: retry with jitter, server hints, budget and deadline.
//! - [`circuit`]: keyed circuit breaker.
//! - [`ratelimit`]: keyed request and token rate limits.
//! - [`tokens`]: token counting, model facts, cost, budgets, the ledger.
//! - [`cache`]: exact-match response cache (streams, single flight, tenant scope).
//! - [`failover`]: routing across providers (strategies, hedging, health).
//! - [`auth`]: virtual keys (key -> tenant, allowed models, limits, budget).
//! - `sqlite` (feature `sqlite`): keys, spend and usage persisted in a file.
//! - `redis` (feature `redis`): limits and keys shared across gateways.
//!
//! [`LlmStack`] assembles them in the recommended order; [`Client`] gives
//! typed `chat`, `chat_stream` and `embeddings` calls over any such stack.
//! - `mock` (feature `mock`): the fault-injecting mock provider used by tests and demos.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! use llm_tower::{LlmBody, LlmHttpService, Provider};
//! use tower::ServiceExt;
//!
//! let mock = llm_tower::mock::MockServer::start(Default::default()).await?;
//! let svc = LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?);
//! let req = http::Request::post("/v1/chat/completions")
//!     .body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#))?;
//! assert_eq!(svc.oneshot(req).await?.status(), 200);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod client;
pub mod config;
mod identity;
mod stack;
mod store;

pub use client::{ChatResponse, ChunkStream, Client, EmbeddingsResponse};
pub use stack::{
    Llm, LlmResponseBody, LlmService, LlmStack, ProviderHandles, ProviderSpec, ProviderStack, StackError,
    StackErrors, TenantLimits,
};
pub use store::{LimitReserve, LimitStore, SpendReserve, SpendStore};

/// The shared vocabulary (`llm-tower-core`).
pub mod core {
    pub use llm_tower_core::*;
}

/// The hyper-based LLM HTTP service, providers and the upstream client
/// (`llm-tower-http`); named `upstream` so it never shadows the `http` crate.
pub mod upstream {
    pub use llm_tower_http::*;
}

/// Retry with jitter, server hints, a retry budget and a deadline (`llm-tower-retry`).
pub mod retry {
    pub use llm_tower_retry::*;
}

/// The keyed circuit breaker (`llm-tower-circuit`).
pub mod circuit {
    pub use llm_tower_circuit::*;
}

/// Keyed request and token rate limits (`llm-tower-ratelimit`).
pub mod ratelimit {
    pub use llm_tower_ratelimit::*;
}

/// Token counting, model facts and cost (`llm-tower-tokens`).
pub mod tokens {
    pub use llm_tower_tokens::*;
}

/// Routing across providers: strategies, failover, hedging, health (`llm-tower-failover`).
pub mod failover {
    pub use llm_tower_failover::*;
}

/// The exact-match response cache (`llm-tower-cache`).
pub mod cache {
    pub use llm_tower_cache::*;
}

/// Virtual keys as a layer (`llm-tower-auth`).
pub mod auth {
    pub use llm_tower_auth::*;
}

/// Keys, budget spend and the usage ledger in a SQLite file
/// (`llm-tower-sqlite`); the `sqlite` feature.
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use llm_tower_sqlite::*;
}

/// Limits and keys shared by every gateway on one Redis (`llm-tower-redis`);
/// the `redis` feature.
#[cfg(feature = "redis")]
pub mod redis {
    pub use llm_tower_redis::*;
}

/// The fault-injecting mock provider (`llm-tower-mock`); the `mock` feature.
#[cfg(feature = "mock")]
pub mod mock {
    pub use llm_tower_mock::*;
}

pub use llm_tower_cache::CacheLayer;
pub use llm_tower_circuit::CircuitBreakerLayer;
pub use llm_tower_core::{LlmBody, RequestInfo, Secret, Usage};
pub use llm_tower_http::{LlmHttpService, Provider};
pub use llm_tower_ratelimit::RateLimitLayer;
pub use llm_tower_retry::RetryLayer;
pub use llm_tower_tokens::{TokenAccountingLayer, TokenCountLayer};
