//! The [`Failover`] service: routes, the attempt loop, hedging, health probes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode};
use http_body::Body;
use llm_tower_core::budget::{BudgetConfig, RouteBudget};
use llm_tower_core::classify::{Classified, Classify, LlmClassifier, OutcomeClass};
use llm_tower_core::info::rewrite_model;
use llm_tower_core::peek::peek;
use llm_tower_core::response::{BodyEnd, BodyObserver, LlmResponseBody};
use llm_tower_core::usage::{BodyKind, StreamEnd};
use llm_tower_core::{
    AllBackendsFailed, BackendAttempt, BoxError, InvalidRequest, LlmBody, ModelNotFound, RequestInfo,
    RetryElsewhere,
};
use smallvec::SmallVec;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::backend::{AvailableFn, Backend, BackendStats, Health, HealthConfig, State, WaitFn};
use crate::strategy::{Candidate, Priority, RouteStrategy};

mod attempt;
mod body;
mod builder;
mod call;
mod failover;
mod hedge;
mod probe;
mod route;

use attempt::*;
use body::*;
pub use builder::*;
pub use failover::*;
use hedge::*;
use probe::*;
pub use route::*;
