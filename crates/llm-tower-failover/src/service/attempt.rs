//! One call to one backend: the request it receives, what it came to, and how a 400 is read for context_length_exceeded.

use super::*;

#[derive(Clone)]
pub(crate) struct Step {
    pub(crate) backend: usize,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) share: f64,
    /// Neither skipped (open breaker, busy limiter) nor marked down: a
    /// backend a failed attempt can move on to at once.
    pub(crate) usable: bool,
}

/// The request as one backend receives it (its model name, its RequestInfo).
pub(crate) fn request_for(
    req: &Request<LlmBody>,
    info: &RequestInfo,
    model: Option<&str>,
) -> Request<LlmBody> {
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

/// `req` itself as one backend receives it (its model name, its
/// RequestInfo): the only attempt's, moved rather than copied.
pub(crate) fn retarget(
    mut req: Request<LlmBody>,
    info: &RequestInfo,
    model: Option<&str>,
) -> Request<LlmBody> {
    if let Some(m) = model.filter(|m| *m != &*info.model) {
        if let Some(body) = rewrite_model(req.body().as_bytes(), m) {
            *req.body_mut() = LlmBody::from(body);
        }
        let mut i = info.clone();
        i.model = Arc::from(m);
        req.extensions_mut().insert(Arc::new(i));
    }
    req
}

/// What one call came to.
pub(crate) enum Outcome {
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
pub(crate) enum Last {
    // Boxed: the failure path, and a response head is large.
    Response(Box<Response<LlmResponseBody>>),
    Error(BoxError),
}

/// How much of a 400's body is read to look for `context_length_exceeded`
/// (the whole body is passed on whatever its size).
pub(crate) const MAX_PEEK: usize = 16 << 10;

pub(crate) fn is_too_long(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.downcast_ref::<InvalidRequest>().is_some_and(|i| i.code() == Some("context_length_exceeded")) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// One call to `step`'s backend and what it came to.
///
/// An `async move` block rather than an `async fn`, as `route_request` (whose
/// future holds this one inline): its arguments are kept once, not twice.
#[allow(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice in its future")]
pub(crate) fn call_one<S, B>(
    shared: Arc<Shared<S>>,
    step: Step,
    req: Request<LlmBody>,
    peek_too_long: bool,
    mut ready: Option<S>,
    route_latency: Option<&HedgeState>,
) -> impl Future<Output = Outcome>
where
    S: tower::Service<Request<LlmBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async move {
        let backend = &shared.backends[step.backend];
        let state = &backend.state;
        let name = state.name.clone();
        let start = Instant::now();
        let guard = InFlight::new(shared.clone(), step.backend);
        // Polled ready by the failover's `poll_ready`: called at once; otherwise
        // a clone, made ready here. One call future either way (this future is
        // held inline by the failover's), and one service in it.
        let polled = ready.is_some();
        let svc = ready.get_or_insert_with(|| backend.service.clone());
        let readiness: Result<(), BoxError> = if polled {
            Ok(())
        } else {
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await.map_err(Into::into)
        };
        let result = match readiness {
            Ok(()) => svc.call(req).await.map_err(Into::into),
            Err(e) => Err(e),
        };
        let now = Instant::now();
        let health = &shared.health;
        match result {
            Err(e) => {
                // A failure that took longer than the estimate (a timeout, a
                // hang cut short) is evidence of slowness; a fast one is not
                // evidence of speed.
                let took = now.saturating_duration_since(start);
                if took > state.latency() {
                    state.observe_latency(took, now);
                }
                if peek_too_long && is_too_long(&*e) {
                    return Outcome::TooLong(
                        BackendAttempt::new(&*name, "context_length_exceeded").status(400),
                    );
                }
                let c = shared.classifier.classify_error(&*e);
                match c.class {
                    OutcomeClass::ClientError => Outcome::Error(e),
                    OutcomeClass::UpstreamFailure | OutcomeClass::Rejected
                        if c.retryable || c.class == OutcomeClass::Rejected =>
                    {
                        if c.class == OutcomeClass::UpstreamFailure && state.failure(health, now) {
                            tracing::warn!(
                                backend = &*name,
                                "backend marked down after consecutive failures"
                            );
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
                if let Some(h) = route_latency {
                    h.observe(rtt);
                }
                let c = match shared.classifier.classify_response(&res) {
                    Classified::Ready(c) => c,
                    Classified::AtEnd => llm_tower_core::Classification::success(),
                };
                let status = res.status();
                match c.class {
                    OutcomeClass::Success => {
                        state.success(now);
                        Outcome::Answer(answer(res, guard))
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
                        res.headers_mut().insert(X_LLM_BACKEND, state.header.clone());
                        Outcome::Answer(res)
                    }
                    OutcomeClass::ClientError => Outcome::Answer(answer(res, guard)),
                    _ if c.retryable => {
                        if state.failure(health, now) {
                            tracing::warn!(
                                backend = &*name,
                                "backend marked down after consecutive failures"
                            );
                        }
                        let reason =
                            format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
                        let a = BackendAttempt::new(&*name, reason.trim_end()).status(status.as_u16());
                        Outcome::Failed(
                            a.retry_after(c.hint.map(|h| h.after)),
                            Last::Response(Box::new(answer(res, guard))),
                        )
                    }
                    _ => {
                        state.failure(health, now);
                        Outcome::Answer(answer(res, guard))
                    }
                }
            }
        }
    }
}
