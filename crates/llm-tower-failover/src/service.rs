//! The [`Failover`] service: routes, the attempt loop, hedging, health probes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use llm_tower_core::classify::{Classified, Classify, LlmClassifier, OutcomeClass};
use llm_tower_core::info::rewrite_model;
use llm_tower_core::peek::peek;
use llm_tower_core::response::{BodyEnd, BodyObserver, LlmResponseBody};
use llm_tower_core::usage::{BodyKind, StreamEnd};
use llm_tower_core::{
    AllBackendsFailed, BackendAttempt, BoxError, InvalidRequest, LlmBody, ModelNotFound, RequestInfo,
};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::backend::{AvailableFn, Backend, BackendStats, Health, HealthConfig, State, WaitFn};
use crate::strategy::{Candidate, Priority, RouteStrategy};

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
/// ```
/// use std::time::Duration;
/// use llm_tower_failover::{Hedge, HedgeDelay};
/// let h = Hedge::new(HedgeDelay::Percentile { p: 0.95, min: Duration::from_millis(200) }).max_ratio(0.05);
/// assert_eq!(h.max_ratio, 0.05);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Hedge {
    /// When to hedge.
    pub delay: HedgeDelay,
    /// Largest share of requests hedged (a budget, refilled by requests). Default 0.1.
    pub max_ratio: f64,
}

impl Hedge {
    /// Hedging after `delay`, for at most 10 % of requests.
    pub fn new(delay: HedgeDelay) -> Self {
        Hedge { delay, max_ratio: 0.1 }
    }

    /// Sets the hedging budget.
    pub fn max_ratio(mut self, r: f64) -> Self {
        self.max_ratio = r;
        self
    }
}

/// How a logical model is served: its targets, strategy, hedging, and the
/// larger-context model to try on `context_length_exceeded`.
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
    /// Hedging, when set.
    pub hedge: Option<Hedge>,
    /// A logical model with a larger context window, tried when every backend
    /// refuses the request as too long.
    pub context_fallback: Option<String>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("targets", &self.targets)
            .field("hedge", &self.hedge)
            .field("context_fallback", &self.context_fallback)
            .finish()
    }
}

impl Route {
    /// A route over `targets`, in priority order.
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Self {
        Route {
            targets: targets.into_iter().collect(),
            strategy: Arc::new(Priority),
            hedge: None,
            context_fallback: None,
        }
    }

    /// Sets the strategy.
    pub fn strategy(mut self, s: Arc<dyn RouteStrategy>) -> Self {
        self.strategy = s;
        self
    }

    /// Enables hedging.
    pub fn hedge(mut self, h: Hedge) -> Self {
        self.hedge = Some(h);
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

/// Builds a [`Failover`]. See [`Failover::builder`].
pub struct FailoverBuilder<S> {
    backends: Vec<Backend<S>>,
    routes: Vec<(String, Route)>,
    health: HealthConfig,
    default_rtt: Duration,
    seed: u64,
}

struct RouteAt {
    targets: Vec<(usize, Option<Arc<str>>)>,
    strategy: Arc<dyn RouteStrategy>,
    hedge: Option<Hedge>,
    context_fallback: Option<String>,
}

struct BackendAt<S> {
    service: S,
    available: Option<AvailableFn>,
    wait: Option<WaitFn>,
    state: State,
}

struct Shared<S> {
    backends: Vec<BackendAt<S>>,
    routes: HashMap<String, RouteAt>,
    health: HealthConfig,
    rng: AtomicU64,
    /// Hedging budget, in thousandths of a hedge.
    hedge_budget: AtomicI64,
    /// Recent times to head, for percentile hedging delays.
    recent: Mutex<Vec<f64>>,
    recent_at: AtomicU64,
    classifier: LlmClassifier,
}

impl<S> FailoverBuilder<S> {
    /// Adds a backend.
    pub fn backend(mut self, b: Backend<S>) -> Self {
        self.backends.push(b);
        self
    }

    /// Serves logical model `model` by `route`.
    pub fn route(mut self, model: impl Into<String>, route: Route) -> Self {
        self.routes.push((model.into(), route));
        self
    }

    /// Sets health checking and slow start.
    pub fn health(mut self, h: HealthConfig) -> Self {
        self.health = h;
        self
    }

    /// The latency assumed for a backend never measured. Default 100 ms.
    pub fn default_rtt(mut self, d: Duration) -> Self {
        self.default_rtt = d;
        self
    }

    /// Seeds the random choices (weighted, P2C, slow start).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks that every route names known backends, and builds. Starts the
    /// active health probe (if configured) on the current tokio runtime.
    pub fn build<B>(self) -> Result<Failover<S>, Vec<FailoverConfigError>>
    where
        S: tower::Service<Request<LlmBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
        B: Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
    {
        let mut errors = Vec::new();
        let mut err = |field: String, message: String| errors.push(FailoverConfigError { field, message });
        let mut index = HashMap::new();
        for (i, b) in self.backends.iter().enumerate() {
            if index.insert(b.name.to_string(), i).is_some() {
                err(format!("backends[{i}]"), format!("duplicate backend name {:?}", b.name));
            }
        }
        let mut routes = HashMap::new();
        for (model, r) in self.routes {
            if r.targets.is_empty() {
                err(format!("routes.{model}.targets"), "a route needs at least one target".into());
            }
            let mut targets = Vec::new();
            for (i, t) in r.targets.iter().enumerate() {
                match index.get(&t.backend) {
                    Some(&b) => targets.push((b, t.model.as_deref().map(Arc::from))),
                    None => err(
                        format!("routes.{model}.targets[{i}]"),
                        format!("unknown backend {:?}", t.backend),
                    ),
                }
            }
            if let Some(h) = &r.hedge {
                if !(0.0..=1.0).contains(&h.max_ratio) {
                    err(format!("routes.{model}.hedge.max_ratio"), "must be between 0 and 1".into());
                }
            }
            let route = RouteAt {
                targets,
                strategy: r.strategy,
                hedge: r.hedge,
                context_fallback: r.context_fallback,
            };
            if routes.insert(model.clone(), route).is_some() {
                err(format!("routes.{model}"), "defined twice".into());
            }
        }
        for (model, r) in &routes {
            if let Some(f) = &r.context_fallback {
                if !routes.contains_key(f) {
                    err(format!("routes.{model}.context_fallback"), format!("no route for model {f:?}"));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let backends = self
            .backends
            .into_iter()
            .map(|b| BackendAt {
                state: State::new(b.name, b.weight, self.default_rtt),
                service: b.service,
                available: b.available,
                wait: b.wait,
            })
            .collect();
        let shared = Arc::new(Shared {
            backends,
            routes,
            health: self.health,
            rng: AtomicU64::new(self.seed),
            hedge_budget: AtomicI64::new(0),
            recent: Mutex::new(Vec::new()),
            recent_at: AtomicU64::new(0),
            classifier: LlmClassifier::default(),
        });
        if let (Some(every), Ok(rt)) = (shared.health.probe_interval, tokio::runtime::Handle::try_current()) {
            rt.spawn(probe_loop(Arc::downgrade(&shared), every));
        }
        Ok(Failover { shared })
    }
}

/// Hedges the budget may hold at once (it starts empty: requests fill it).
const HEDGE_BURST: i64 = 10_000;
/// Times to head kept for percentiles.
const RECENT: usize = 256;

/// Routes each request to the best available backend of its model's route
/// and survives outages.
///
/// - The route's [`RouteStrategy`] orders the backends; those unavailable are
///   skipped without a call: a breaker open ([`Backend::available_when`]), a
///   limiter that would make the request wait longer than another backend
///   would ([`Backend::wait_estimate`]); those marked down by health checks go
///   last.
/// - A retryable outcome (429, 5xx, timeouts, connection errors, our own
///   limits refusing) fails over to the next backend; a client error (400,
///   401, 404, 422, ...) is returned at once. Failover happens only before the
///   response head: once a backend answers, the body is the caller's. On
///   `context_length_exceeded` the route's larger-context model is tried.
/// - With [`Hedge`], a slow request is also sent to the next backend; the
///   first usable head wins, the other call is dropped.
/// - Passive health (consecutive failures), an optional active probe, and
///   slow start after recovery ([`HealthConfig`]).
/// - When nothing answers: [`AllBackendsFailed`] listing each backend and why
///   (when a single backend was tried, its own answer instead: a 503 with its
///   `retry-after`, a timeout).
/// - The answer carries `x-llm-backend: NAME`. A stream that breaks after it
///   started ends with an SSE `event: error` (never a clean end).
///
/// Each request's attempts run in one boxed future (it may make several calls
/// and wait on two at once).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
/// use llm_tower_failover::{Backend, Failover, Route, Target};
/// use llm_tower_http::{LlmHttpService, Provider};
/// use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
/// use tower::ServiceExt;
///
/// let down = MockServer::start(MockConfig { faults: FaultPlan::Always { fault: Fault::status(503) }, ..Default::default() }).await?;
/// let up = MockServer::start(MockConfig::default()).await?;
/// let http = |name: &str, m: &MockServer| LlmHttpService::new(Provider::openai_compatible(name, &format!("{}/v1", m.url())).unwrap());
/// let failover = Failover::builder()
///     .backend(Backend::new("primary", http("primary", &down)))
///     .backend(Backend::new("secondary", http("secondary", &up)))
///     .route("gpt-4o-mini", Route::new([Target::new("primary"), Target::new("secondary")]))
///     .build()
///     .map_err(|e| format!("{e:?}"))?;
/// let req = http::Request::post("/v1/chat/completions")
///     .body(llm_tower_core::LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#))?;
/// let res = failover.clone().oneshot(req).await?;
/// assert_eq!(res.headers()["x-llm-backend"], "secondary");
/// # Ok(()) }
/// ```
///
/// # Reads and writes
///
/// - Reads the request's `Arc<RequestInfo>` (parsing it once when no layer
///   above did) for the route; rewrites the body's `model` for a target's
///   model and writes its `RequestInfo`.
/// - Reads each backend's answer head through its classifier; peeks the
///   start of a 400 for `context_length_exceeded` and passes it on whole.
/// - Writes `x-llm-backend` (who answered) on responses, guards event
///   streams (a stream that breaks ends with an SSE `error` event), and
///   keeps the call in flight on its backend until the body ends (an
///   `LlmResponseBody` observer; a broken body counts against the backend).
pub struct Failover<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Failover<S> {
    fn clone(&self) -> Self {
        Failover { shared: self.shared.clone() }
    }
}

impl<S> std::fmt::Debug for Failover<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.shared.backends.iter().map(|b| &*b.state.name).collect();
        f.debug_struct("Failover").field("backends", &names).finish()
    }
}

impl<S> Failover<S> {
    /// A builder with no backends, default health checking, seed 0.
    pub fn builder() -> FailoverBuilder<S> {
        FailoverBuilder {
            backends: Vec::new(),
            routes: Vec::new(),
            health: HealthConfig::default(),
            default_rtt: Duration::from_millis(100),
            seed: 0x5eed,
        }
    }

    /// Per backend: requests, successes, failures, in flight, latency, state.
    pub fn stats(&self) -> Vec<BackendStats> {
        let now = Instant::now();
        self.shared.backends.iter().map(|b| b.state.stats(&self.shared.health, now)).collect()
    }

    /// The logical models served.
    pub fn models(&self) -> Vec<String> {
        let mut m: Vec<String> = self.shared.routes.keys().cloned().collect();
        m.sort();
        m
    }
}

impl<S> Shared<S> {
    fn random(&self) -> f64 {
        // SplitMix64 over an atomic counter: lock-free, seedable.
        let x =
            self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn observe(&self, rtt: Duration) {
        let i = self.recent_at.fetch_add(1, Ordering::Relaxed) as usize % RECENT;
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() < RECENT {
            r.push(rtt.as_secs_f64());
        } else {
            r[i] = rtt.as_secs_f64();
        }
    }

    fn hedge_delay(&self, h: &Hedge) -> Duration {
        match h.delay {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::Percentile { p, min } => {
                let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if r.len() < 16 {
                    return min.max(Duration::from_secs(1));
                }
                r.sort_by(f64::total_cmp);
                let at = ((r.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
                Duration::from_secs_f64(r[at]).max(min)
            }
        }
    }

    /// Takes a hedge from the budget (refilled by `max_ratio` per request).
    fn take_hedge(&self) -> bool {
        if self.hedge_budget.fetch_sub(1_000, Ordering::Relaxed) >= 1_000 {
            return true;
        }
        self.hedge_budget.fetch_add(1_000, Ordering::Relaxed);
        false
    }

    fn refill_hedges(&self, ratio: f64) {
        let add = (ratio * 1_000.0) as i64;
        let b = self.hedge_budget.fetch_add(add, Ordering::Relaxed) + add;
        if b > HEDGE_BURST {
            self.hedge_budget.fetch_sub(b - HEDGE_BURST, Ordering::Relaxed);
        }
    }

    /// The route's backends in the order to try them; the skipped ones are
    /// recorded in `attempts`.
    fn plan(&self, route: &RouteAt, req: &Request<LlmBody>, attempts: &mut Vec<BackendAttempt>) -> Vec<Step> {
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut down = Vec::new();
        let mut skipped = Vec::new();
        let mut waits = Vec::new();
        for (position, (b, model)) in route.targets.iter().enumerate() {
            let backend = &self.backends[*b];
            if let Some(f) = &backend.available {
                let available = f(req);
                backend.state.seen_available(available, now);
                if !available {
                    attempts.push(BackendAttempt::new(&*backend.state.name, "circuit open").skipped());
                    skipped.push(Step { backend: *b, model: model.clone(), share: 0.0 });
                    continue;
                }
            }
            let (health, share) = backend.state.health(&self.health, now);
            let step = Step { backend: *b, model: model.clone(), share };
            if health == Health::Down {
                down.push(step);
                continue;
            }
            let wait = backend.wait.as_ref().and_then(|f| f(req)).unwrap_or(Duration::ZERO);
            waits.push(wait);
            let weight = f64::from(backend.state.weight) * share;
            let c = Candidate::new(position, weight)
                .in_flight(backend.state.in_flight.load(Ordering::Relaxed))
                .latency(backend.state.latency())
                .success_rate(backend.state.success_rate());
            ready.push((c, step, wait));
        }
        // A limiter that would make the request wait longer than another
        // backend's: skipped (the request goes where there is room).
        let least = waits.iter().copied().min().unwrap_or(Duration::ZERO);
        ready.retain(|(_, step, wait)| {
            let keep = *wait <= least;
            if !keep {
                let name = &*self.backends[step.backend].state.name;
                attempts
                    .push(BackendAttempt::new(name, format!("rate limited (would wait {wait:?})")).skipped());
                skipped.push(step.clone());
            }
            keep
        });
        let mut candidates: Vec<Candidate> = ready.iter().map(|(c, _, _)| *c).collect();
        route.strategy.order(&mut candidates, &mut || self.random());
        // Steps by route position (a route is a handful of targets).
        let mut by_position: Vec<Option<Step>> = vec![None; route.targets.len()];
        for (c, step, _) in ready {
            by_position[c.position] = Some(step);
        }
        let mut ordered: Vec<Step> =
            candidates.iter().filter_map(|c| by_position[c.position].take()).collect();
        // Slow start: a recovering backend keeps its place with probability
        // equal to its share; otherwise it goes after the others.
        let (keep, later): (Vec<Step>, Vec<Step>) =
            ordered.drain(..).partition(|s| s.share >= 1.0 || self.random() < s.share);
        ordered = keep;
        ordered.extend(later);
        ordered.extend(down);
        if ordered.is_empty() {
            // Nothing available: let the first skipped backend's own layers
            // answer (an open breaker refuses at once, with its retry-after;
            // a busy limiter queues), as if there were no failover.
            ordered.extend(skipped.into_iter().take(1));
        }
        ordered
    }
}

#[derive(Clone)]
struct Step {
    backend: usize,
    model: Option<Arc<str>>,
    share: f64,
}

/// The request as one backend receives it (its model name, its RequestInfo).
fn request_for(req: &Request<LlmBody>, info: &RequestInfo, model: Option<&str>) -> Request<LlmBody> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    *r.extensions_mut() = req.extensions().clone();
    if let Some(m) = model.filter(|m| *m != &*info.model) {
        if let Some(body) = rewrite_model(req.body().as_bytes(), m) {
            *r.body_mut() = LlmBody::from(body);
        }
        let mut i = info.clone();
        i.model = Arc::from(m);
        r.extensions_mut().insert(Arc::new(i));
    }
    r
}

/// What one call came to.
enum Outcome {
    /// Return this to the caller.
    Answer(Response<LlmResponseBody>),
    /// Return this error to the caller.
    Error(BoxError),
    /// Fail over (keeping what it answered, returned if it was the only backend tried).
    Failed(BackendAttempt, Last),
    /// Too long for this model: try the route's larger-context model.
    TooLong(BackendAttempt),
}

/// A failed call's own answer.
enum Last {
    // Boxed: the failure path, and a response head is large.
    Response(Box<Response<LlmResponseBody>>),
    Error(BoxError),
}

/// How much of a 400's body is read to look for `context_length_exceeded`
/// (the whole body is passed on whatever its size).
const MAX_PEEK: usize = 16 << 10;

fn is_too_long(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.downcast_ref::<InvalidRequest>().is_some_and(|i| i.code() == Some("context_length_exceeded")) {
            return true;
        }
        cur = e.source();
    }
    false
}

async fn call_one<S, B>(
    shared: Arc<Shared<S>>,
    step: Step,
    req: Request<LlmBody>,
    peek_too_long: bool,
) -> Outcome
where
    S: tower::Service<Request<LlmBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let backend = &shared.backends[step.backend];
    let state = &backend.state;
    let name = state.name.clone();
    let start = Instant::now();
    let guard = InFlight::new(shared.clone(), step.backend);
    let result = backend.service.clone().oneshot(req).await.map_err(Into::into);
    let now = Instant::now();
    let health = &shared.health;
    match result {
        Err(e) => {
            if peek_too_long && is_too_long(&*e) {
                return Outcome::TooLong(BackendAttempt::new(&*name, "context_length_exceeded").status(400));
            }
            let c = shared.classifier.classify_error(&*e);
            match c.class {
                OutcomeClass::ClientError => Outcome::Error(e),
                OutcomeClass::UpstreamFailure | OutcomeClass::Rejected
                    if c.retryable || c.class == OutcomeClass::Rejected =>
                {
                    if c.class == OutcomeClass::UpstreamFailure && state.failure(health, now) {
                        tracing::warn!(backend = &*name, "backend marked down after consecutive failures");
                    }
                    let hint = c.hint.map(|h| h.after);
                    let a = BackendAttempt::new(&*name, e.to_string()).retry_after(hint);
                    Outcome::Failed(a, Last::Error(e))
                }
                _ => {
                    state.failure(health, now);
                    Outcome::Error(e)
                }
            }
        }
        Ok(res) => {
            let rtt = now.saturating_duration_since(start);
            state.observe_latency(rtt, now);
            shared.observe(rtt);
            let c = match shared.classifier.classify_response(&res) {
                Classified::Ready(c) => c,
                Classified::AtEnd => llm_tower_core::Classification::success(),
            };
            let status = res.status();
            match c.class {
                OutcomeClass::Success => {
                    state.success(now);
                    Outcome::Answer(answer(res, &name, guard))
                }
                OutcomeClass::ClientError if peek_too_long && status == StatusCode::BAD_REQUEST => {
                    let (parts, body) = res.into_parts();
                    // The start of the body says why; the whole body is passed on.
                    let peeked = peek(body, MAX_PEEK).await;
                    if peeked.prefix().windows(23).any(|w| w == b"context_length_exceeded") {
                        return Outcome::TooLong(
                            BackendAttempt::new(&*name, "context_length_exceeded").status(400),
                        );
                    }
                    let mut res = Response::from_parts(parts, LlmResponseBody::new(peeked));
                    res.headers_mut().insert(X_LLM_BACKEND, header(&name));
                    Outcome::Answer(res)
                }
                OutcomeClass::ClientError => Outcome::Answer(answer(res, &name, guard)),
                _ if c.retryable => {
                    if state.failure(health, now) {
                        tracing::warn!(backend = &*name, "backend marked down after consecutive failures");
                    }
                    let reason = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
                    let a = BackendAttempt::new(&*name, reason.trim_end()).status(status.as_u16());
                    Outcome::Failed(
                        a.retry_after(c.hint.map(|h| h.after)),
                        Last::Response(Box::new(answer(res, &name, guard))),
                    )
                }
                _ => {
                    state.failure(health, now);
                    Outcome::Answer(answer(res, &name, guard))
                }
            }
        }
    }
}

fn header(name: &str) -> HeaderValue {
    HeaderValue::from_str(name).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn answer<S, B>(res: Response<B>, name: &str, guard: InFlight<S>) -> Response<LlmResponseBody>
where
    S: Send + Sync + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let sse = BodyKind::from_headers(res.headers()) == BodyKind::Sse;
    let mut res = llm_tower_core::response::observe(res, guard);
    // A stream that breaks mid-way ends with an SSE `event: error`, never a clean end.
    if sse {
        res.body_mut().guard_sse();
    }
    res.headers_mut().insert(X_LLM_BACKEND, header(name));
    res
}

/// Counts a call in flight on its backend until its body ends or it is dropped.
struct InFlight<S> {
    shared: Arc<Shared<S>>,
    backend: usize,
}

impl<S> InFlight<S> {
    fn new(shared: Arc<Shared<S>>, backend: usize) -> Self {
        shared.backends[backend].state.started();
        InFlight { shared, backend }
    }

    fn state(&self) -> &State {
        &self.shared.backends[self.backend].state
    }
}

impl<S> Drop for InFlight<S> {
    fn drop(&mut self) {
        self.state().finished();
    }
}

/// Observes the answer's body: the call stays in flight until the body ends,
/// and a body that breaks counts against its backend.
impl<S: Send + Sync + 'static> BodyObserver for InFlight<S> {
    fn on_end(self: Box<Self>, end: &mut BodyEnd) {
        if end.end == StreamEnd::Failed {
            self.state().failure(&self.shared.health, Instant::now());
        }
    }
}

impl<S, B> tower::Service<Request<LlmBody>> for Failover<S>
where
    S: tower::Service<Request<LlmBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<LlmResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    /// Always ready: each backend's readiness is awaited when it is called.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<LlmBody>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let info = RequestInfo::ensure(&mut req)?.clone();
            route_request(shared, req, info).await
        })
    }
}

async fn route_request<S, B>(
    shared: Arc<Shared<S>>,
    req: Request<LlmBody>,
    info: Arc<RequestInfo>,
) -> Result<Response<LlmResponseBody>, BoxError>
where
    S: tower::Service<Request<LlmBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut model = info.model.to_string();
    let mut attempts = Vec::new();
    // The last failed call's answer, and how many calls failed.
    let mut last = None;
    let mut tried = 0;
    let mut tried_models = vec![model.clone()];
    loop {
        let Some(route) = shared.routes.get(&model) else {
            return Err(Box::new(ModelNotFound::new(&*model)));
        };
        if let Some(h) = &route.hedge {
            shared.refill_hedges(h.max_ratio);
        }
        let fallback = route.context_fallback.clone().filter(|f| !tried_models.contains(f));
        let mut steps = shared.plan(route, &req, &mut attempts).into_iter().peekable();
        let mut too_long = false;
        while let Some(step) = steps.next() {
            let r = request_for(&req, &info, step.model.as_deref());
            let peek = fallback.is_some();
            let hedge = route.hedge.filter(|_| steps.peek().is_some());
            let outcome = match hedge {
                None => call_one(shared.clone(), step, r, peek).await,
                Some(h) => {
                    let delay = shared.hedge_delay(&h);
                    let first = call_one(shared.clone(), step, r, peek);
                    let mut first = std::pin::pin!(first);
                    tokio::select! {
                        o = &mut first => o,
                        _ = tokio::time::sleep(delay) => {
                            if shared.take_hedge() {
                                let second = steps.next().expect("peeked");
                                let hedged = &shared.backends[second.backend].state;
                                hedged.hedges.fetch_add(1, Ordering::Relaxed);
                                metrics::counter!("llm_tower_failover_hedges_total", "backend" => hedged.name.to_string()).increment(1);
                                let r2 = request_for(&req, &info, second.model.as_deref());
                                let second = call_one(shared.clone(), second, r2, peek);
                                race(first, second, &mut attempts, &mut tried).await
                            } else {
                                first.await
                            }
                        }
                    }
                }
            };
            match outcome {
                Outcome::Answer(res) => return Ok(res),
                Outcome::Error(e) => return Err(e),
                Outcome::Failed(a, l) => {
                    metrics::counter!("llm_tower_failover_failed_attempts_total", "backend" => a.backend.clone()).increment(1);
                    attempts.push(a);
                    tried += 1;
                    last = Some(l);
                }
                Outcome::TooLong(a) => {
                    attempts.push(a);
                    too_long = true;
                    break;
                }
            }
        }
        match fallback {
            Some(f) if too_long => {
                tracing::info!(from = %model, to = %f, "context window exceeded: trying the larger model");
                tried_models.push(f.clone());
                model = f;
            }
            // One backend tried: its own answer (a 503 with its retry-after, a
            // timeout), as if there were no failover.
            _ if tried == 1 => {
                return match last {
                    Some(Last::Response(r)) => Ok(*r),
                    Some(Last::Error(e)) => Err(e),
                    None => Err(Box::new(AllBackendsFailed { attempts })),
                };
            }
            _ => {
                metrics::counter!("llm_tower_failover_exhausted_total").increment(1);
                return Err(Box::new(AllBackendsFailed { attempts }));
            }
        }
    }
}

/// Two calls at once: the first usable outcome wins, the other is dropped.
async fn race(
    a: impl Future<Output = Outcome>,
    b: impl Future<Output = Outcome>,
    attempts: &mut Vec<BackendAttempt>,
    tried: &mut usize,
) -> Outcome {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut a_done, mut b_done) = (false, false);
    loop {
        let o = tokio::select! {
            o = &mut a, if !a_done => { a_done = true; o }
            o = &mut b, if !b_done => { b_done = true; o }
        };
        match o {
            Outcome::Failed(f, _) if !(a_done && b_done) => {
                attempts.push(f);
                *tried += 1;
            }
            other => return other,
        }
    }
}

/// Probes every backend every `every`, until the failover is dropped.
async fn probe_loop<S, B>(shared: Weak<Shared<S>>, every: Duration)
where
    S: tower::Service<Request<LlmBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        for b in &shared.backends {
            let req = Request::get(shared.health.probe_path.as_str()).body(LlmBody::empty());
            let Ok(req) = req else { return };
            let call = b.service.clone().oneshot(req);
            let ok = matches!(
                tokio::time::timeout(every.min(Duration::from_secs(10)), call).await,
                Ok(Ok(res)) if res.status().is_success()
            );
            b.state.probed(ok, &shared.health, Instant::now());
        }
    }
}
