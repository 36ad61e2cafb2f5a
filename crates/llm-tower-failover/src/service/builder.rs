//! The builder: backends, routes and health checked together.

use super::*;

/// Builds a [`Failover`]. See [`Failover::builder`].
pub struct FailoverBuilder<S> {
    pub(crate) backends: Vec<Backend<S>>,
    pub(crate) routes: Vec<(String, Route)>,
    pub(crate) health: HealthConfig,
    pub(crate) default_rtt: Duration,
    pub(crate) seed: u64,
}

pub(crate) struct RouteAt {
    pub(crate) targets: Vec<(usize, Option<Arc<str>>)>,
    pub(crate) strategy: Arc<dyn RouteStrategy>,
    /// Hedging and its state, for routes with two targets or more.
    pub(crate) hedge: Option<HedgeState>,
    /// Bounds the route's extra calls (failover moves and retries).
    pub(crate) budget: Option<RouteBudget>,
    pub(crate) context_fallback: Option<String>,
}

pub(crate) struct BackendAt<S> {
    pub(crate) service: S,
    pub(crate) available: Option<AvailableFn>,
    pub(crate) wait: Option<WaitFn>,
    pub(crate) state: State,
}

pub(crate) struct Shared<S> {
    pub(crate) backends: Vec<BackendAt<S>>,
    /// Looked up once a request by the request's model name. foldhash, not
    /// SipHash (about 190 instructions a lookup): the keys come from the
    /// configuration and the map never grows after `build`, so a chosen name
    /// can only make one lookup probe further, never grow the map.
    pub(crate) routes: HashMap<String, RouteAt, foldhash::fast::RandomState>,
    pub(crate) health: HealthConfig,
    pub(crate) rng: AtomicU64,
    pub(crate) classifier: LlmClassifier,
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
        let mut routes = HashMap::default();
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
            if let Some(b) = &r.budget {
                if !(b.ratio >= 0.0 && b.ratio.is_finite()) || b.window.is_zero() {
                    err(
                        format!("routes.{model}.budget"),
                        "the ratio must be 0 or more and the window longer than zero".into(),
                    );
                }
            }
            // A single target has nothing to hedge to: no state for it.
            let hedge = r.hedge.filter(|_| r.targets.len() > 1).map(HedgeState::new);
            let route = RouteAt {
                targets,
                strategy: r.strategy,
                hedge,
                budget: r.budget.map(RouteBudget::new),
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
            classifier: LlmClassifier::default(),
        });
        if let (Some(every), Ok(rt)) = (shared.health.probe_interval, tokio::runtime::Handle::try_current()) {
            rt.spawn(probe_loop(Arc::downgrade(&shared), every));
        }
        Ok(Failover { shared, held: None, waiting: Vec::new() })
    }
}
