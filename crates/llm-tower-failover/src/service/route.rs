//! Routes: their targets, strategy, hedging and context fallback, and what does not fit.

use super::*;

/// The response header naming the backend that answered.
pub const X_LLM_BACKEND: HeaderName = HeaderName::from_static("x-llm-backend");

/// One step of a route: a backend, and the model name it knows the request by.
///
/// ```
/// let t = llm_tower_failover::Target::to("azure", "prod-4o");
/// assert_eq!(t.model.as_deref(), Some("prod-4o"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// The backend's name.
    pub backend: String,
    /// The upstream model name (`None`: the request's own).
    pub model: Option<String>,
}

impl Target {
    /// `backend`, with the request's model name.
    pub fn new(backend: impl Into<String>) -> Self {
        Target { backend: backend.into(), model: None }
    }

    /// `backend`, knowing the model as `model`.
    pub fn to(backend: impl Into<String>, model: impl Into<String>) -> Self {
        Target { backend: backend.into(), model: Some(model.into()) }
    }
}

/// When to send a second copy of a slow request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HedgeDelay {
    /// After a fixed time without a response head.
    Fixed(Duration),
    /// After the route's recent time-to-head percentile `p` (0..1), at least `min`.
    Percentile {
        /// The percentile, e.g. 0.95.
        p: f64,
        /// The smallest delay.
        min: Duration,
    },
}

/// Hedging: a request without a response head after the delay is also sent
/// to the next backend; the first usable head wins and the other call is
/// dropped (cancelled). At most `max_ratio` of requests are hedged.
///
/// On by default for every route with two targets or more
/// ([`Hedge::default`]: after the route's recent p95 time to head, at least
/// 100 ms, for at most 5 % of requests); [`Route::without_hedge`] turns it off.
/// An LLM call is idempotent (a chat completion has no side effect the
/// gateway could double), and hedging happens only before the response head,
/// so a stream is hedged only before its first byte.
///
/// What a hedge costs: the cancelled call's provider usually bills the input
/// tokens it read and whatever it generated before it saw the connection
/// close (providers do not refund a dropped call). The gateway never sees
/// that usage (the call ended before its head); it counts the cancelled calls
/// and their estimated input tokens per backend
/// ([`BackendStats::hedges_cancelled`], `llm_tower_failover_hedge_cancelled_total`,
/// `llm_tower_failover_hedge_cancelled_input_tokens_total`) so the extra
/// spend is visible and bounded by `max_ratio`.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_failover::{Hedge, HedgeDelay, Route, Target};
/// // Hedge after a fixed 2 s without an answer, for at most 2 % of requests.
/// let r = Route::new([Target::new("openai"), Target::new("azure")])
///     .hedge(Hedge::new(HedgeDelay::Fixed(Duration::from_secs(2))).max_ratio(0.02));
/// assert_eq!(r.hedge.map(|h| h.max_ratio), Some(0.02));
/// assert!(Route::new([Target::new("openai"), Target::new("azure")]).without_hedge().hedge.is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Hedge {
    /// When to hedge.
    pub delay: HedgeDelay,
    /// Largest share of requests hedged (a budget, refilled by requests). Default 0.05.
    pub max_ratio: f64,
}

impl Default for Hedge {
    /// After the route's recent p95 time to head (at least 100 ms), for at
    /// most 5 % of requests.
    fn default() -> Self {
        Hedge::new(HedgeDelay::Percentile { p: 0.95, min: Duration::from_millis(100) })
    }
}

impl Hedge {
    /// Hedging after `delay`, for at most 5 % of requests.
    pub fn new(delay: HedgeDelay) -> Self {
        Hedge { delay, max_ratio: 0.05 }
    }

    /// Sets the hedging budget.
    pub fn max_ratio(mut self, r: f64) -> Self {
        self.max_ratio = r;
        self
    }
}

/// How a logical model is served: its targets, strategy, hedging, retry
/// budget, and the larger-context model to try on `context_length_exceeded`.
///
/// Defaults: [`Priority`] order (the order targets are listed in is the
/// operator's preference: price, contract, data residency; a backend whose
/// recent errors or latency stand out is moved behind the others for a share
/// of requests, see [`Failover`]), hedging on ([`Hedge::default`]), and a
/// route retry budget ([`BudgetConfig::default`]: 20 % of the route's
/// requests plus 10 per second) shared by failover moves and the providers'
/// retries.
///
/// ```
/// use llm_tower_failover::{Route, RouteStrategyKind, Target};
/// let r = Route::new([Target::new("openai"), Target::to("azure", "prod-4o")])
///     .strategy(RouteStrategyKind::Priority.build())
///     .context_fallback("gpt-4.1");
/// assert_eq!(r.targets.len(), 2);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Route {
    /// The targets in configured order.
    pub targets: Vec<Target>,
    /// How requests order them. Default [`Priority`].
    pub strategy: Arc<dyn RouteStrategy>,
    /// Hedging, when set (default [`Hedge::default`]).
    pub hedge: Option<Hedge>,
    /// The route's retry budget (`None`: unbounded): every call after a
    /// request's first, on another backend or retried on the same one,
    /// withdraws from it.
    pub budget: Option<BudgetConfig>,
    /// A logical model with a larger context window, tried when every backend
    /// refuses the request as too long.
    pub context_fallback: Option<String>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("targets", &self.targets)
            .field("hedge", &self.hedge)
            .field("budget", &self.budget)
            .field("context_fallback", &self.context_fallback)
            .finish()
    }
}

impl Route {
    /// A route over `targets`, in priority order, with the defaults above.
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Self {
        Route {
            targets: targets.into_iter().collect(),
            strategy: Arc::new(Priority),
            hedge: Some(Hedge::default()),
            budget: Some(BudgetConfig::default()),
            context_fallback: None,
        }
    }

    /// Sets the strategy.
    pub fn strategy(mut self, s: Arc<dyn RouteStrategy>) -> Self {
        self.strategy = s;
        self
    }

    /// Sets hedging.
    pub fn hedge(mut self, h: Hedge) -> Self {
        self.hedge = Some(h);
        self
    }

    /// Turns hedging off.
    pub fn without_hedge(mut self) -> Self {
        self.hedge = None;
        self
    }

    /// Sets (or, with `None`, removes) the route's retry budget.
    pub fn budget(mut self, b: Option<BudgetConfig>) -> Self {
        self.budget = b;
        self
    }

    /// Sets the larger-context fallback model.
    pub fn context_fallback(mut self, model: impl Into<String>) -> Self {
        self.context_fallback = Some(model.into());
        self
    }
}

/// A route or backend that does not fit together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverConfigError {
    /// Where (`routes.NAME.targets[i]`, `backends[i]`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FailoverConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FailoverConfigError {}
