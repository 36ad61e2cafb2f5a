//! [`RetryLayer`], the [`Retry`] service and its response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use llm_tower_core::LlmResponseBody;
use llm_tower_core::RetryElsewhere;
use llm_tower_core::peek::{Peek, peek};
use llm_tower_core::{
    Attempt, BoxError, Classification, Classified, Classify, Deadline, LlmClassifier, OutcomeClass, Timeout,
    TimeoutPhase,
};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::adaptive::LatencyTracker;
use crate::decide::*;
use crate::stats::Counters;
use crate::{AttemptTimeout, RandomSource, RetryPolicy, RetryStats, ThreadRandom};
use llm_tower_core::budget::RetryBudget;

/// How much of a 429's body is read to look for `insufficient_quota` (the
/// whole body is passed on whatever its size).
pub(crate) const QUOTA_PEEK_LIMIT: usize = 16 << 10;

pub(crate) struct Shared<C> {
    pub(crate) policy: RetryPolicy,
    pub(crate) classifier: C,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) latency: Option<LatencyTracker>,
    pub(crate) rng: Arc<dyn RandomSource>,
    pub(crate) counters: Counters,
    /// Whether calls need the time (deadline, attempt timeouts).
    pub(crate) needs_clock: bool,
}

impl<C> Shared<C> {
    pub(crate) fn new(policy: RetryPolicy, classifier: C, rng: Arc<dyn RandomSource>) -> Self {
        let latency = match policy.attempt_timeout {
            Some(AttemptTimeout::Adaptive { quantile, .. }) => Some(LatencyTracker::new(quantile)),
            _ => None,
        };
        let needs_clock =
            policy.budget.is_some() || policy.deadline.is_some() || policy.attempt_timeout.is_some();
        Shared {
            policy,
            classifier,
            budget: policy.budget.map(RetryBudget::new),
            latency,
            rng,
            counters: Counters::default(),
            needs_clock,
        }
    }

    pub(crate) fn stats(&self) -> RetryStats {
        let mut s = self.counters.snapshot();
        s.requests += self.budget.as_ref().map_or(0, RetryBudget::deposited);
        s
    }

    /// The per-attempt limit now, if any.
    pub(crate) fn attempt_timeout(&self) -> Option<Duration> {
        match self.policy.attempt_timeout? {
            AttemptTimeout::Fixed(d) => Some(d),
            AttemptTimeout::Adaptive { factor, floor, ceiling, min_samples, .. } => {
                let t = self.latency.as_ref()?;
                if t.samples() < min_samples as u64 {
                    Some(ceiling)
                } else {
                    Some(t.quantile().mul_f64(factor).clamp(floor, ceiling))
                }
            }
        }
    }
}

/// Retries failed calls: jittered backoff, server hints, a retry budget, a
/// total deadline and per-attempt timeouts. See [`RetryPolicy`].
///
/// Only outcomes the classifier (`C`, default [`LlmClassifier`]) calls
/// retryable are retried; client errors never are. A success is returned as
/// soon as its head arrives, so a streamed answer that has started is never
/// retried. The request body is replayed by cloning (`B: Clone`; cheap for
/// `LlmBody`). Retries carry their number as an [`Attempt`] extension (read
/// it with [`Attempt::of`], which gives 1 for a first attempt).
///
/// When it gives up it returns the last response (with its `retry-after`), or
/// [`RetriesExhausted`](llm_tower_core::RetriesExhausted) wrapping the last error.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_retry::{Backoff, RetryLayer, RetryPolicy};
/// use tower::ServiceBuilder;
///
/// let retry = RetryLayer::new(
///     RetryPolicy::default()
///         .max_attempts(4)
///         .backoff(Backoff::Exponential { base: Duration::from_millis(250), factor: 2.0, cap: Duration::from_secs(4) })
///         .deadline(Duration::from_secs(30)),
/// );
/// let stack = ServiceBuilder::new().layer(retry.clone());
/// # let _ = stack;
/// assert_eq!(retry.stats().retries, 0);
/// ```
///
/// # Reads and writes
///
/// - Clones the request for each attempt (`B: Clone`; `LlmBody` is cheap).
/// - Reads the request's core `Deadline` and writes each attempt's (the
///   earlier of the caller's and its own), and core's `Attempt` (2, 3, ...).
/// - Reads the response head through its classifier and the upstream's
///   `retry-after` / `retry-after-ms` / `x-should-retry`; never the limiter's
///   own `x-ratelimit-*` (marked `LocalRateLimitHeaders`). Reads the start of
///   a 429's body for `insufficient_quota` and passes the whole body on.
/// - Retries only before a response is returned: a stream that started is
///   never retried. Writes nothing else.
pub struct RetryLayer<C = LlmClassifier> {
    pub(crate) shared: Arc<Shared<C>>,
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<C> std::fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer").field("policy", &self.shared.policy).finish()
    }
}

impl RetryLayer<LlmClassifier> {
    /// A retry layer with `policy` and the LLM classifier.
    pub fn new(policy: RetryPolicy) -> Self {
        Self { shared: Arc::new(Shared::new(policy, LlmClassifier::default(), Arc::new(ThreadRandom))) }
    }
}

impl<C: Classify> RetryLayer<C> {
    /// Uses another classifier (e.g. `GrpcClassifier`).
    ///
    /// ```
    /// let l = llm_tower_retry::RetryLayer::new(Default::default())
    ///     .with_classifier(llm_tower_core::GrpcClassifier);
    /// # let _ = l;
    /// ```
    pub fn with_classifier<C2: Classify>(self, classifier: C2) -> RetryLayer<C2> {
        let rng = self.shared.rng.clone();
        RetryLayer { shared: Arc::new(Shared::new(self.shared.policy, classifier, rng)) }
    }

    /// Uses another random source (a seeded one in tests).
    ///
    /// ```
    /// let l = llm_tower_retry::RetryLayer::new(Default::default())
    ///     .with_random(llm_tower_retry::SeededRandom::new(1));
    /// # let _ = l;
    /// ```
    pub fn with_random(self, rng: impl RandomSource) -> Self {
        let classifier = self.shared.classifier.clone();
        RetryLayer { shared: Arc::new(Shared::new(self.shared.policy, classifier, Arc::new(rng))) }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }

    /// A snapshot of the counters (shared by every service this layer made).
    pub fn stats(&self) -> RetryStats {
        self.shared.stats()
    }
}

impl<S, C> tower::Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Retry<S, C> {
        Retry { inner, shared: self.shared.clone() }
    }
}

/// The retry service. See [`RetryLayer`].
pub struct Retry<S, C = LlmClassifier> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), shared: self.shared.clone() }
    }
}

impl<S, C> Retry<S, C> {
    /// A snapshot of the counters.
    pub fn stats(&self) -> RetryStats {
        self.shared.stats()
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry").field("inner", &self.inner).field("policy", &self.shared.policy).finish()
    }
}

impl<S, B, R, C> tower::Service<Request<B>> for Retry<S, C>
where
    S: tower::Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    C: Classify,
{
    type Response = Response<LlmResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, R, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        // One atomic per request: with a budget, its deposit count is the request count.
        match &shared.budget {
            Some(b) => b.deposit(),
            None => Counters::bump(&shared.counters.requests),
        }
        let caller_deadline = Deadline::of(&req);
        // Read the clock only if something needs the time (the budget does not).
        let start = (shared.needs_clock || caller_deadline.is_some()).then(Instant::now);
        let deadline = match (shared.policy.deadline.zip(start).map(|(d, s)| s + d), caller_deadline) {
            (Some(own), Some(caller)) => Some(own.min(caller)),
            (own, caller) => own.or(caller),
        };
        if let (Some(d), Some(now)) = (deadline, start)
            && d <= now
        {
            // Out of time before the first attempt: no call (an abandoned call
            // would count against the upstream).
            let after = shared.policy.deadline.unwrap_or_default();
            let err = Some(BoxError::from(Timeout { phase: TimeoutPhase::Total, after }));
            return ResponseFuture::new(
                self.inner.clone(),
                None,
                false,
                shared,
                deadline,
                start,
                State::Done { err },
            );
        }
        // Call the instance that was polled ready; keep a clone for retries.
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        let timer = start.map_or(AttemptTimer::Off, |now| AttemptTimer::new(&shared, deadline, now));
        // The first attempt carries no `Attempt` extension (absent means 1):
        // an extension insert on every request is measurable. It carries the
        // attempt's deadline when there is one, so that the layers below (a
        // breaker, the HTTP service) see the same limit.
        // A copy to replay only if there can be a second attempt: not with
        // one attempt allowed, nor when the failover above moves on to another
        // backend instead (the copy of the head and extensions is the most
        // this layer allocates).
        let elsewhere = RetryElsewhere::is_set(&req);
        let replay = shared.policy.max_attempts > 1 && !elsewhere;
        let (mut first, mut kept) = if replay { (req.clone(), Some(req)) } else { (req, None) };
        match timer.at() {
            Some(at) if caller_deadline != Some(at) => {
                first.extensions_mut().insert(Deadline(at));
            }
            _ => {}
        }
        if let (Some(kept), Some(_)) = (&mut kept, caller_deadline) {
            // Later attempts get their own deadline; the caller's stays in `deadline`.
            kept.extensions_mut().remove::<Deadline>();
        }
        let fut = svc.call(first);
        ResponseFuture::new(svc, kept, elsewhere, shared, deadline, start, State::Calling { fut, timer })
    }
}

impl<S, B, R, C> ResponseFuture<S, B, R, C>
where
    S: tower::Service<Request<B>>,
    R: Body,
    R::Error: Into<BoxError>,
{
    fn new(
        svc: S,
        req: Option<Request<B>>,
        elsewhere: bool,
        shared: Arc<Shared<C>>,
        deadline: Option<Instant>,
        start: Option<Instant>,
        state: State<S::Future, R>,
    ) -> Self {
        ResponseFuture {
            svc,
            req,
            elsewhere,
            shared,
            attempt: 1,
            prev_delay: Duration::ZERO,
            deadline,
            attempt_start: start,
            started: start,
            state,
        }
    }
}

pin_project! {
    /// An attempt's timer: unarmed (never registered) unless a per-attempt
    /// timeout or a deadline applies.
    // Boxed: timers are the exception, and an inline `Sleep` would make every
    // future larger (and every move of it costlier).
    #[project = TimerProj]
    enum AttemptTimer {
        Off,
        On {
            sleep: Pin<Box<Sleep>>,
            phase: TimeoutPhase,
            after: Duration,
        },
    }
}

impl AttemptTimer {
    pub(crate) fn new<C>(shared: &Shared<C>, deadline: Option<Instant>, now: Instant) -> Self {
        let per_attempt = shared.attempt_timeout().map(|d| (now + d, TimeoutPhase::Headers, d));
        let total = deadline.map(|t| (t, TimeoutPhase::Total, t.saturating_duration_since(now)));
        let pick = match (per_attempt, total) {
            (Some(a), Some(t)) => Some(if a.0 < t.0 { a } else { t }),
            (a, t) => a.or(t),
        };
        match pick {
            Some((at, phase, after)) => AttemptTimer::On { sleep: Box::pin(sleep_until(at)), phase, after },
            None => AttemptTimer::Off,
        }
    }

    /// When this attempt's time runs out, if it is limited.
    pub(crate) fn at(&self) -> Option<Instant> {
        match self {
            AttemptTimer::Off => None,
            AttemptTimer::On { sleep, .. } => Some(sleep.deadline()),
        }
    }

    pub(crate) fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Option<Timeout> {
        match self.project() {
            TimerProj::Off => None,
            TimerProj::On { sleep, phase, after } => {
                sleep.as_mut().poll(cx).is_ready().then_some(Timeout { phase: *phase, after: *after })
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R>
    where
        R: Body,
        R::Error: Into<BoxError>,
    {
        Calling {
            #[pin]
            fut: F,
            #[pin]
            timer: AttemptTimer,
        },
        // Cold states are boxed to keep the future small.
        Peeking {
            peek: Peek<R>,
            parts: Option<Box<http::response::Parts>>,
            class: Classification,
        },
        Sleeping {
            sleep: Pin<Box<Sleep>>,
        },
        Ready,
        Done { err: Option<BoxError> },
    }
}

pin_project! {
    /// Response future of [`Retry`].
    pub struct ResponseFuture<S, B, R, C>
    where
        S: tower::Service<Request<B>>,
        R: Body,
        R::Error: Into<BoxError>,
    {
        svc: S,
        // The copy later attempts are made from (`None` when there can be
        // no later attempt).
        req: Option<Request<B>>,
        // The failover above moves on instead of a retry here.
        elsewhere: bool,
        shared: Arc<Shared<C>>,
        attempt: u32,
        prev_delay: Duration,
        deadline: Option<Instant>,
        attempt_start: Option<Instant>,
        // When the request began (meaningful only when `deadline` is set).
        started: Option<Instant>,
        #[pin]
        state: State<S::Future, R>,
    }
}

pub(crate) fn error_reason(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<Timeout>() || e.is::<tower::timeout::error::Elapsed>() {
            return "timeout";
        }
        if e.is::<llm_tower_core::Connect>() {
            return "connect";
        }
        if e.is::<llm_tower_core::Transport>() {
            return "transport";
        }
        if e.is::<llm_tower_core::BadResponse>() {
            return "bad_response";
        }
        cur = e.source();
    }
    "error"
}

impl<S, B, R, C> Future for ResponseFuture<S, B, R, C>
where
    S: tower::Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<LlmResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut, timer } => {
                    let outcome = match fut.poll(cx) {
                        Poll::Ready(r) => r.map_err(Into::into),
                        Poll::Pending => match timer.poll_expired(cx) {
                            Some(t) => Err(BoxError::from(t)),
                            None => return Poll::Pending,
                        },
                    };
                    let shared = &**this.shared;
                    match outcome {
                        Ok(res) => {
                            let class = match shared.classifier.classify_response(&res) {
                                Classified::Ready(c) => c,
                                // Known only at the end of the body: too late to retry.
                                Classified::AtEnd => Classification::success(),
                            };
                            if class.class == OutcomeClass::Success {
                                if let (Some(t), Some(s)) = (&shared.latency, *this.attempt_start) {
                                    t.record(s.elapsed());
                                }
                                if *this.attempt > 1 {
                                    Counters::bump(&shared.counters.recovered);
                                }
                                return Poll::Ready(Ok(res.map(LlmResponseBody::new)));
                            }
                            if !class.retryable || *this.attempt >= shared.policy.max_attempts {
                                return Poll::Ready(Ok(give_up_response(shared, *this.attempt, res)));
                            }
                            if shared.policy.check_quota
                                && res.status() == http::StatusCode::TOO_MANY_REQUESTS
                            {
                                let (parts, body) = res.into_parts();
                                this.state.set(State::Peeking {
                                    peek: peek(body, QUOTA_PEEK_LIMIT),
                                    parts: Some(Box::new(parts)),
                                    class,
                                });
                                continue;
                            }
                            let reason = format!("status_{}", res.status().as_u16());
                            match plan(
                                shared,
                                *this.attempt,
                                this.prev_delay,
                                *this.deadline,
                                &class,
                                &reason,
                                this.req.as_ref(),
                                *this.elsewhere,
                            ) {
                                Some(delay) => {
                                    this.state.set(State::Sleeping { sleep: Box::pin(sleep(delay)) })
                                }
                                None => return Poll::Ready(Ok(give_up_response(shared, *this.attempt, res))),
                            }
                        }
                        Err(err) => {
                            let deadline_hit = this.deadline.is_some_and(|d| d <= Instant::now());
                            let err = match (deadline_hit, err.downcast_ref::<Timeout>(), *this.deadline) {
                                // Whichever timer fired first (ours or one below that
                                // we gave the same deadline), the request is out of time.
                                (true, Some(_), Some(d)) => BoxError::from(Timeout {
                                    phase: TimeoutPhase::Total,
                                    after: this
                                        .started
                                        .map_or(Duration::ZERO, |s| d.saturating_duration_since(s)),
                                }),
                                _ => err,
                            };
                            let class = shared.classifier.classify_error(&*err);
                            let stop = deadline_hit
                                || !class.retryable
                                || *this.attempt >= shared.policy.max_attempts;
                            let delay = if stop {
                                None
                            } else {
                                plan(
                                    shared,
                                    *this.attempt,
                                    this.prev_delay,
                                    *this.deadline,
                                    &class,
                                    error_reason(&*err),
                                    this.req.as_ref(),
                                    *this.elsewhere,
                                )
                            };
                            match delay {
                                Some(delay) => {
                                    this.state.set(State::Sleeping { sleep: Box::pin(sleep(delay)) })
                                }
                                None => return Poll::Ready(Err(give_up_error(shared, *this.attempt, err))),
                            }
                        }
                    }
                }
                StateProj::Peeking { peek, parts, class } => {
                    let body = ready!(Pin::new(peek).poll(cx));
                    let parts = *parts.take().expect("peeked once");
                    let shared = &**this.shared;
                    let exhausted_quota = body.prefix().windows(18).any(|w| w == b"insufficient_quota");
                    let class = *class;
                    let delay = if exhausted_quota {
                        Counters::bump(&shared.counters.quota_refusals);
                        None
                    } else {
                        plan(
                            shared,
                            *this.attempt,
                            this.prev_delay,
                            *this.deadline,
                            &class,
                            "status_429",
                            this.req.as_ref(),
                            *this.elsewhere,
                        )
                    };
                    match delay {
                        Some(delay) => this.state.set(State::Sleeping { sleep: Box::pin(sleep(delay)) }),
                        None => {
                            let res = Response::from_parts(parts, LlmResponseBody::new(body));
                            if *this.attempt > 1 {
                                Counters::bump(&shared.counters.give_ups);
                            }
                            return Poll::Ready(Ok(res));
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Done { err } => {
                    return Poll::Ready(Err(err.take().unwrap_or_else(|| "polled after completion".into())));
                }
                StateProj::Ready => {
                    if let Err(e) = ready!(this.svc.poll_ready(cx)) {
                        let shared = &**this.shared;
                        return Poll::Ready(Err(give_up_error(shared, *this.attempt, e.into())));
                    }
                    let Some(kept) = this.req.as_ref() else {
                        // Unreachable: no retry is planned without a copy.
                        let shared = &**this.shared;
                        let err = BoxError::from("no copy of the request to retry");
                        return Poll::Ready(Err(give_up_error(shared, *this.attempt, err)));
                    };
                    *this.attempt += 1;
                    let mut req = kept.clone();
                    req.extensions_mut().insert(Attempt(*this.attempt));
                    let now = Instant::now();
                    *this.attempt_start = Some(now);
                    let timer = AttemptTimer::new(this.shared, *this.deadline, now);
                    if let Some(at) = timer.at() {
                        req.extensions_mut().insert(Deadline(at));
                    }
                    let fut = this.svc.call(req);
                    this.state.set(State::Calling { fut, timer });
                }
            }
        }
    }
}
