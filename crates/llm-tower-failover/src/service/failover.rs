//! The service's shared state: choosing the plan of backends for a request, and recording what each call came to.

use super::*;

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
/// - Retry elsewhere first: an attempt with a usable backend still to come
///   carries core's `RetryElsewhere`, so the provider's retry layer returns
///   its failure at once (no backoff, no `Retry-After` waited out) and the
///   next backend is called; only the last usable backend is retried on, and
///   when it fails too the request goes back to the ones it moved on from,
///   now with their retries.
/// - One retry budget per route ([`Route::budget`], default 20 % of the
///   route's requests plus 10/s): every call after a request's first (a move
///   to another backend, or a provider's retry, which draws on it through
///   core's `RouteBudget`) withdraws from it; when it is spent the request
///   gets the failure it has. A route-wide outage adds at most that much load.
/// - Hedging ([`Hedge`], on by default for routes of two targets or more): a
///   request without a head after the route's recent p95 is also sent to the
///   next backend, for at most 5 % of requests; the first usable head wins,
///   the other call is cancelled and counted against its backend.
/// - Outliers: a backend whose recent success rate trails the route's best
///   by more than 0.1, or whose latency is over 3× the fastest's, keeps only
///   a share of its place in the order (two or three failures in a row are
///   enough to move most of its requests on).
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
///
/// # Readiness
///
/// `poll_ready` polls the backends in order until one is ready and holds
/// that ready service (a clone of it) for the next call; it is `Pending` only
/// when every backend is (a connection-limited HTTP service with no free
/// slot, say), and the backends that were polled keep their wakers. The call
/// sends its first attempt through the held service when the plan starts
/// with that backend; any other attempt awaits its backend's readiness
/// itself. A backend whose `poll_ready` fails does not make the failover
/// fail: its calls will, and the plan moves on.
pub struct Failover<S> {
    pub(crate) shared: Arc<Shared<S>>,
    /// The ready backend service `poll_ready` found, for the next call.
    pub(crate) held: Option<(usize, S)>,
    /// Backend services polled `Pending` (allocated only then): kept so their
    /// wakers stay registered.
    pub(crate) waiting: Vec<Option<S>>,
}

impl<S> Clone for Failover<S> {
    /// A clone shares the routes and backends, not what this handle holds ready.
    fn clone(&self) -> Self {
        Failover { shared: self.shared.clone(), held: None, waiting: Vec::new() }
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

    /// Whether each route could be served now: the backends that could take
    /// one of its requests (available, e.g. the breaker not open, and not
    /// marked down) and those that could not, sorted by model. It reads the
    /// state only (a readiness probe changes nothing).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use llm_tower_failover::{Backend, Failover, Route, Target};
    /// use llm_tower_http::{LlmHttpService, Provider};
    /// let http = LlmHttpService::new(Provider::openai_compatible("a", "http://127.0.0.1:9/v1")?);
    /// let failover = Failover::builder()
    ///     .backend(Backend::new("a", http).available_when(|_| false))
    ///     .route("gpt-4o-mini", Route::new([Target::new("a")]))
    ///     .build()
    ///     .map_err(|e| format!("{e:?}"))?;
    /// let r = &failover.readiness()[0];
    /// assert!(!r.is_ready());
    /// assert_eq!(r.unusable, ["a"]);
    /// # Ok(()) }
    /// ```
    pub fn readiness(&self) -> Vec<RouteReadiness> {
        let now = Instant::now();
        let shared = &self.shared;
        let mut out: Vec<RouteReadiness> = shared
            .routes
            .iter()
            .map(|(model, route)| {
                let mut r = RouteReadiness { model: model.clone(), usable: Vec::new(), unusable: Vec::new() };
                for (b, target_model) in &route.targets {
                    let backend = &shared.backends[*b];
                    let model = target_model.as_deref().unwrap_or(model);
                    let available = backend.available.as_ref().is_none_or(|f| f(&probe_request(model)));
                    let (health, _) = backend.state.health(&shared.health, now);
                    let name = backend.state.name.to_string();
                    if available && health != Health::Down {
                        r.usable.push(name)
                    } else {
                        r.unusable.push(name)
                    }
                }
                r
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        out
    }
}

/// A request for `model`, as a route's backends see one, to ask whether they
/// would take it.
fn probe_request(model: &str) -> Request<LlmBody> {
    let mut req = Request::new(LlmBody::empty());
    let template = br#"{"model":"-","messages":[]}"#;
    if let Ok(mut info) = RequestInfo::parse(llm_tower_core::Api::ChatCompletions, template) {
        info.model = Arc::from(model);
        req.extensions_mut().insert(Arc::new(info));
    }
    req
}

/// One route's readiness. See [`Failover::readiness`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RouteReadiness {
    /// The logical model.
    pub model: String,
    /// Backends that could take its requests now.
    pub usable: Vec<String>,
    /// Backends that could not (breaker open, marked down).
    pub unusable: Vec<String>,
}

impl RouteReadiness {
    /// Whether at least one backend could serve it.
    pub fn is_ready(&self) -> bool {
        !self.usable.is_empty()
    }
}

impl<S> Shared<S> {
    pub(crate) fn random(&self) -> f64 {
        // SplitMix64 over an atomic counter: lock-free, seedable.
        let x =
            self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The route's backends in the order to try them; the skipped ones are
    /// recorded in `attempts`.
    pub(crate) fn plan(
        &self,
        route: &RouteAt,
        req: &Request<LlmBody>,
        attempts: &mut Vec<BackendAttempt>,
    ) -> Plan {
        let now = Instant::now();
        // Inline up to a route of four targets: no heap for a plan.
        let mut ready: SmallVec<[(Candidate, Step, Duration); 4]> = SmallVec::new();
        let mut down = Plan::new();
        let mut skipped = Plan::new();
        for (position, (b, model)) in route.targets.iter().enumerate() {
            let backend = &self.backends[*b];
            if let Some(f) = &backend.available {
                let available = f(req);
                backend.state.seen_available(available, now);
                if !available {
                    attempts.push(BackendAttempt::new(&*backend.state.name, "circuit open").skipped());
                    skipped.push(Step { backend: *b, model: model.clone(), share: 0.0, usable: false });
                    continue;
                }
            }
            let (health, share) = backend.state.health(&self.health, now);
            let step = Step { backend: *b, model: model.clone(), share, usable: health != Health::Down };
            if health == Health::Down {
                down.push(step);
                continue;
            }
            let wait = backend.wait.as_ref().and_then(|f| f(req)).unwrap_or(Duration::ZERO);
            let weight = f64::from(backend.state.weight) * share;
            let c = Candidate::new(position, weight)
                .in_flight(backend.state.in_flight.load(Ordering::Relaxed))
                .latency(backend.state.latency())
                .success_rate(backend.state.success_rate());
            ready.push((c, step, wait));
        }
        // A limiter that would make the request wait longer than another
        // backend's: skipped (the request goes where there is room).
        let least = ready.iter().map(|(_, _, w)| *w).min().unwrap_or(Duration::ZERO);
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
        let mut ordered: Plan = if ready.len() > 1 {
            // Outliers: a backend whose errors or latency stand out from the
            // others' keeps only a share of its place (as in slow start).
            let scores: SmallVec<[(f64, Option<f64>); 4]> = ready
                .iter()
                .map(|(_, s, _)| {
                    let st = &self.backends[s.backend].state;
                    (st.success_score(now), st.measured_latency())
                })
                .collect();
            let best = scores.iter().map(|s| s.0).fold(0.0, f64::max);
            let fastest = scores.iter().filter_map(|s| s.1).fold(f64::INFINITY, f64::min);
            for ((_, step, _), (score, latency)) in ready.iter_mut().zip(scores) {
                step.share *= crate::outlier::share(score, best, latency, fastest);
            }
            // The strategy orders a `Vec` (its public signature): routes of
            // two targets or more pay that one allocation.
            let mut candidates: Vec<Candidate> = ready.iter().map(|(c, _, _)| *c).collect();
            route.strategy.order(&mut candidates, &mut || self.random());
            // Steps by route position (a route is a handful of targets).
            let mut by_position: SmallVec<[Option<Step>; 4]> = smallvec::smallvec![None; route.targets.len()];
            for (c, step, _) in ready {
                by_position[c.position] = Some(step);
            }
            candidates.iter().filter_map(|c| by_position[c.position].take()).collect()
        } else {
            ready.into_iter().map(|(_, step, _)| step).collect()
        };
        // Slow start and outliers: a backend keeps its place with probability
        // equal to its share; otherwise it goes after the others.
        if ordered.iter().any(|s| s.share < 1.0) {
            let (keep, later): (Plan, Plan) =
                ordered.drain(..).partition(|s| s.share >= 1.0 || self.random() < s.share);
            ordered = keep;
            ordered.extend(later);
        }
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

/// The steps of one request's plan, in order (inline for a route of up to
/// four targets).
pub(crate) type Plan = SmallVec<[Step; 4]>;
