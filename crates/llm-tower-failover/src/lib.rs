//! Routes LLM calls across providers and survives outages.
//!
//! A [`Failover`] serves each logical model by a [`Route`]: an ordered list
//! of [`Target`]s (a [`Backend`] — one provider's whole stack — and the model
//! name it uses), ordered per request by a [`RouteStrategy`] (priority, weighted
//! random, round robin, least in flight, success rate, P2C over peak-EWMA
//! latency, or your own). Unavailable backends are skipped without a call;
//! retryable failures move to the next backend at once (before the first
//! byte), within a route-wide retry budget; slow requests are hedged; a
//! backend whose errors or latency stand out gets less traffic within a few
//! requests; health checks mark backends down and bring them back slowly.
//! See [`Failover`] and, for the combined policy with the retry layer and
//! its worst cases, `docs/ARCHITECTURE.md` ("Failover and the stack").

#![deny(missing_docs)]

mod backend;
mod outlier;
#[cfg(feature = "serde")]
pub mod section;
mod service;
mod strategy;

pub use backend::{AvailableFn, Backend, BackendStats, Health, HealthConfig, WaitFn};
pub use llm_tower_core::budget::BudgetConfig;
pub use service::{
    Failover, FailoverBuilder, FailoverConfigError, Hedge, HedgeDelay, Route, RouteReadiness, Target,
    X_LLM_BACKEND,
};
pub use strategy::{
    Candidate, LeastInFlight, PeakEwma, Priority, RoundRobin, RouteStrategy, RouteStrategyKind, SuccessRate,
    WeightedRandom,
};
