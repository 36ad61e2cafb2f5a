//! [`CircuitBreakerLayer`], the [`CircuitBreaker`] service, its future and
//! the observer that records an outcome known only at a body's end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use llm_tower_core::response::{BodyEnd, BodyObserver, LlmResponseBody};
use llm_tower_core::usage::StreamEnd;
use llm_tower_core::{
    BoxError, CircuitOpen, Classification, Classified, Classify, Deadline, Key, KeyFn, LlmClassifier,
};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::breaker::{Breaker, Clock};
use crate::config::CircuitConfig;
use crate::registry::{CircuitHandle, ProbeFn, Registry};

/// A circuit breaker, keyed by a [`KeyFn`] (one breaker per provider, model,
/// tenant, ...) or one for everything. See [`CircuitConfig`] for the rules.
///
/// Only upstream failures count (the classifier `C`, default
/// [`LlmClassifier`]): client errors and our own layers' rejections never do.
/// While a circuit is open, calls fail at once with [`CircuitOpen`] (503 with
/// `retry-after` in the gateway) and the inner service is not called, so an
/// open breaker never spends inner rate quota.
///
/// `poll_ready` forwards to the inner service and never reports the circuit:
/// the key is known only from the request, in `call`. A refused call returns
/// an immediately ready error future; the inner service, polled ready, stays
/// ready for the next call (tower's contract allows not calling it).
///
/// ```
/// use std::time::Duration;
/// use llm_tower_circuit::{CircuitBreakerLayer, CircuitConfig};
/// use llm_tower_core::KeyFn;
///
/// let breaker = CircuitBreakerLayer::new(CircuitConfig::default().open_duration(Duration::from_secs(30)))
///     .keyed(KeyFn::model());
/// let handle = breaker.handle();
/// let stack = tower::ServiceBuilder::new().layer(breaker);
/// # let _ = (stack, handle);
/// ```
///
/// # Reads and writes
///
/// - Reads the key from its `KeyFn` and the request's core `Deadline` (a call
///   dropped at or after it counts as a failure: a hang; earlier, nothing).
/// - Reads the response head through its classifier (status, `retry-after`,
///   `x-should-retry`); our own layers' refusals (`RateLimited`,
///   `BudgetExceeded`, `CircuitOpen`) never count.
/// - Refuses with core's `CircuitOpen` (an error: 503 with `retry-after`).
/// - Writes nothing to requests or responses. When the classifier decides at
///   the end (gRPC trailers) it records the outcome when the body ends.
pub struct CircuitBreakerLayer<C = LlmClassifier> {
    reg: Arc<Registry>,
    key_fn: Option<KeyFn>,
    classifier: C,
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        Self { reg: self.reg.clone(), key_fn: self.key_fn.clone(), classifier: self.classifier.clone() }
    }
}

impl<C> std::fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", &self.reg.cfg)
            .field("keyed", &self.key_fn.is_some())
            .finish()
    }
}

impl CircuitBreakerLayer<LlmClassifier> {
    /// One breaker for every request, with the LLM classifier.
    pub fn new(cfg: CircuitConfig) -> Self {
        Self { reg: Arc::new(Registry::new(cfg)), key_fn: None, classifier: LlmClassifier::default() }
    }
}

impl<C: Classify> CircuitBreakerLayer<C> {
    /// One breaker per key. In any order with the other builder methods:
    /// a [`handle`](Self::handle) taken before stays this layer's.
    pub fn keyed(self, key_fn: KeyFn) -> Self {
        self.reg.set_keyed();
        Self { key_fn: Some(key_fn), ..self }
    }

    /// Uses another classifier (e.g. `GrpcClassifier`).
    pub fn with_classifier<C2: Classify>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer { reg: self.reg, key_fn: self.key_fn, classifier }
    }

    /// While a circuit is open, runs `probe(key)` every `interval`; `true`
    /// closes the circuit early. In any order with the other builder
    /// methods: a [`handle`](Self::handle) taken before stays this layer's.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let layer = llm_tower_circuit::CircuitBreakerLayer::new(Default::default())
    ///     .with_health_probe(Duration::from_secs(5), |_key| async { true });
    /// # let _ = layer;
    /// ```
    pub fn with_health_probe<F, Fut>(self, interval: Duration, probe: F) -> Self
    where
        F: Fn(Key) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let probe: ProbeFn = Arc::new(move |k| Box::pin(probe(k)));
        self.reg.set_probe(interval, probe);
        self
    }

    /// The handle to this layer's circuits (shared by every service it makes).
    pub fn handle(&self) -> CircuitHandle {
        CircuitHandle { reg: self.reg.clone() }
    }
}

impl<S, C: Clone> tower::Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> CircuitBreaker<S, C> {
        CircuitBreaker {
            inner,
            reg: self.reg.clone(),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The circuit breaker service. See [`CircuitBreakerLayer`].
pub struct CircuitBreaker<S, C = LlmClassifier> {
    inner: S,
    reg: Arc<Registry>,
    key_fn: Option<KeyFn>,
    classifier: C,
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            reg: self.reg.clone(),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker").field("inner", &self.inner).finish()
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// The handle to this service's circuits.
    pub fn handle(&self) -> CircuitHandle {
        CircuitHandle { reg: self.reg.clone() }
    }
}

/// An admitted call, until its outcome is recorded.
struct Permit {
    reg: Arc<Registry>,
    /// `None`: the registry's single breaker.
    breaker: Option<Arc<Breaker>>,
    probe: bool,
    /// When the call began, if the slow-call rule needs it.
    start: Option<Instant>,
    /// The request's [`Deadline`]: a call abandoned at or after it timed out.
    deadline: Option<Instant>,
    done: bool,
}

impl Permit {
    fn breaker(&self) -> &Arc<Breaker> {
        self.breaker.as_ref().unwrap_or(&self.reg.single)
    }

    fn record(mut self, class: &Classification) {
        self.record_mut(class);
    }

    fn record_mut(&mut self, class: &Classification) {
        self.done = true;
        let b = self.breaker();
        let reg = &self.reg;
        b.record(&reg.cfg, self.probe, class, self.start, &mut Clock::lazy(), &|_, from, to| {
            reg.on_transition(b, from, to)
        });
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Abandoned before its outcome. At or past the request's deadline that
        // is a timeout (a hung upstream, cut off by a retry layer or the edge
        // above): a failure. Earlier (a hedge that lost, a caller that left)
        // it says nothing about the upstream.
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.record_mut(&Classification::upstream_failure(true));
        } else if self.probe {
            self.breaker().release_probe();
        }
    }
}

impl<S, B, R, C> tower::Service<Request<B>> for CircuitBreaker<S, C>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    C: Classify,
{
    type Response = Response<LlmResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut clock = Clock::lazy();
        let breaker = self.key_fn.as_ref().map(|f| self.reg.get(f.key(&req), clock.now()));
        let b = breaker.as_ref().unwrap_or(&self.reg.single);
        let reg = &self.reg;
        let keyed = breaker.is_some();
        match b.acquire(&reg.cfg, &mut clock, keyed, &|_, from, to| reg.on_transition(b, from, to)) {
            Err(refused) => {
                metrics::counter!("llm_tower_circuit_rejections_total").increment(1);
                ResponseFuture {
                    state: State::Refused {
                        err: Some(CircuitOpen { key: b.key.to_string(), retry_after: refused.retry_after }),
                    },
                }
            }
            Ok(probe) => {
                let deadline = Deadline::of(&req);
                ResponseFuture {
                    state: State::Calling {
                        fut: self.inner.call(req),
                        permit: Some(Permit {
                            reg: self.reg.clone(),
                            breaker,
                            probe,
                            start: reg.cfg.slow_calls.is_some().then(|| clock.now()),
                            deadline,
                            done: false,
                        }),
                        classifier: self.classifier.clone(),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// Response future of [`CircuitBreaker`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C> {
        Refused { err: Option<CircuitOpen> },
        Calling { #[pin] fut: F, permit: Option<Permit>, classifier: C },
    }
}

impl<F, R, E, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<LlmResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { err } => {
                Poll::Ready(Err(err.take().expect("polled after completion").into()))
            }
            StateProj::Calling { fut, permit, classifier } => {
                let out = ready!(fut.poll(cx));
                let permit = permit.take().expect("polled after completion");
                match out {
                    Ok(res) => match classifier.classify_response(&res) {
                        Classified::Ready(c) => {
                            permit.record(&c);
                            Poll::Ready(Ok(res.map(LlmResponseBody::new)))
                        }
                        Classified::AtEnd => Poll::Ready(Ok(llm_tower_core::response::observe(
                            res,
                            AtEnd { permit: Some(permit), classifier: classifier.clone() },
                        ))),
                    },
                    Err(e) => {
                        let e: BoxError = e.into();
                        permit.record(&classifier.classify_error(&*e));
                        Poll::Ready(Err(e))
                    }
                }
            }
        }
    }
}

/// Records a call whose outcome is known only at its body's end (gRPC
/// trailers): from the trailers, a body that fails is an upstream failure,
/// and a body dropped before its end is an abandoned call (a failure only at
/// or past its deadline, as for a call dropped before its head).
struct AtEnd<C> {
    permit: Option<Permit>,
    classifier: C,
}

impl<C: Classify> BodyObserver for AtEnd<C> {
    fn on_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(p) = self.permit.take() {
            p.record(&self.classifier.classify_end(Some(trailers)));
        }
    }

    fn on_end(self: Box<Self>, end: &mut BodyEnd) {
        let Some(p) = self.permit else { return };
        match end.end {
            StreamEnd::Complete => p.record(&self.classifier.classify_end(None)),
            StreamEnd::Failed => p.record(&Classification::upstream_failure(false)),
            StreamEnd::EndedEarly => drop(p),
        }
    }
}
