//! Routes LLM calls across providers and survives outages.
//!
//! A [`Failover`] serves each logical model by a [`Route`]: an ordered list
//! of [`Target`]s (a [`Backend`] — one provider's whole stack — and the model
//! name it uses), ordered per request by a [`RouteStrategy`] (priority, weighted
//! random, round robin, least in flight, success rate, P2C over peak-EWMA
//! latency, or your own). Unavailable backends are skipped without a call;
//! retryable failures fail over before the first byte; slow requests can be
//! hedged; health checks mark backends down and bring them back slowly. See
//! [`Failover`].

#![deny(missing_docs)]

mod backend;
#[cfg(feature = "serde")]
pub mod section;
mod service;
mod strategy;

pub use backend::{AvailableFn, Backend, BackendStats, Health, HealthConfig, WaitFn};
pub use service::{
    Failover, FailoverBuilder, FailoverConfigError, Hedge, HedgeDelay, Route, RouteReadiness, Target,
    X_LLM_BACKEND,
};
pub use strategy::{
    Candidate, LeastInFlight, PeakEwma, Priority, RoundRobin, RouteStrategy, RouteStrategyKind, SuccessRate,
    WeightedRandom,
};
