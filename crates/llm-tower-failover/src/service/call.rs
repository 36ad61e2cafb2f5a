//! The tower Service: readiness and the attempt loop over the plan.

use super::*;

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

    /// Ready when one backend is (held for the next call); `Pending` when
    /// none is. See [`Failover`]'s "Readiness".
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.held.is_some() {
            return Poll::Ready(Ok(()));
        }
        let backends = &self.shared.backends;
        let mut pending = false;
        for (i, b) in backends.iter().enumerate() {
            let mut svc = match self.waiting.get_mut(i).and_then(Option::take) {
                Some(s) => s,
                None => b.service.clone(),
            };
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.held = Some((i, svc));
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => {
                    let e: BoxError = e.into();
                    tracing::debug!(backend = &*b.state.name, error = %e, "backend not ready");
                }
                Poll::Pending => {
                    if self.waiting.len() < backends.len() {
                        self.waiting.resize_with(backends.len(), || None);
                    }
                    self.waiting[i] = Some(svc);
                    pending = true;
                }
            }
        }
        // Every backend failed its readiness: calls will fail and say why.
        if pending { Poll::Pending } else { Poll::Ready(Ok(())) }
    }

    fn call(&mut self, mut req: Request<LlmBody>) -> Self::Future {
        let held = self.held.take();
        // Parsed here, not in the future: the box holds the routing future
        // alone, not a wrapper keeping a second copy of its arguments.
        match RequestInfo::ensure(&mut req) {
            Ok(info) => {
                let info = info.clone();
                Box::pin(route_request(self.shared.clone(), req, info, held))
            }
            Err(e) => Box::pin(std::future::ready(Err(BoxError::from(e)))),
        }
    }
}

/// Routes one request: the attempt loop over the route's plan.
///
/// A plain function returning an `async move` block, not an `async fn`: an
/// `async fn` keeps each argument twice in its future (as captured and as
/// the local it is moved into), which here was 416 bytes of the future every
/// request allocates and writes; the block uses what it captured in place.
#[allow(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice in its future")]
pub(crate) fn route_request<S, B>(
    shared: Arc<Shared<S>>,
    mut req: Request<LlmBody>,
    info: Arc<RequestInfo>,
    mut held: Option<(usize, S)>,
) -> impl Future<Output = Result<Response<LlmResponseBody>, BoxError>>
where
    S: tower::Service<Request<LlmBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async move {
        let mut model = info.model.clone();
        let mut attempts = Vec::new();
        // The last failed call's answer, and how many calls failed.
        let mut last = None;
        let mut tried = 0;
        // The models fallen back from (the request's own is `info.model`).
        let mut tried_models: Vec<&str> = Vec::new();
        // Calls made for this request (hedges included): every call after the
        // first draws on the route's budget.
        let mut calls = 0u32;
        let mut deposited = false;
        loop {
            let Some(route) = shared.routes.get(&*model) else {
                return Err(Box::new(ModelNotFound::new(&*model)) as BoxError);
            };
            if let Some(h) = &route.hedge {
                h.refill();
            }
            if let (Some(b), false) = (&route.budget, deposited) {
                b.deposit();
                deposited = true;
            }
            let fallback =
                route.context_fallback.as_deref().filter(|f| *f != &*info.model && !tried_models.contains(f));
            // The plan lives in this block only: once it is the steps'
            // iterator, the future keeps no second copy of it.
            let (mut steps, last_usable, mut only) = {
                let mut plan = shared.plan(route, &req, &mut attempts);
                if let Some((ready, _)) = &held {
                    // `poll_ready` found every backend before the held one not ready:
                    // the plan's steps on those go after the ready one.
                    if let Some(k) = plan.iter().position(|s| s.backend == *ready) {
                        if plan[..k].iter().all(|s| s.backend < *ready) {
                            plan[..=k].rotate_right(1);
                        }
                    }
                }
                // Attempts before the plan's last usable step may move on unretried.
                let last_usable = plan.iter().rposition(|s| s.usable);
                // One step and nothing to fall back to: the request itself is
                // the only attempt's (no copy of its head and extensions).
                let only = plan.len() == 1 && fallback.is_none();
                (plan.into_iter().enumerate().peekable(), last_usable, only)
            };
            let elsewhere = |k: usize| last_usable.is_some_and(|l| k < l);
            let mut attempt_req = |step: &Step, elsewhere: bool| {
                let mut r = if std::mem::take(&mut only) {
                    retarget(std::mem::take(&mut req), &info, step.model.as_deref())
                } else {
                    request_for(&req, &info, step.model.as_deref())
                };
                // A usable backend still to come: a failure here moves on to it at
                // once instead of being retried (and waited out) on this one.
                if elsewhere {
                    r.extensions_mut().insert(RetryElsewhere);
                } else if let Some(b) = &route.budget {
                    // The provider's retries draw on the route's budget (a marked
                    // attempt is never retried: it needs none).
                    r.extensions_mut().insert(b.clone());
                }
                r
            };
            let mut too_long = false;
            // Backends that failed an attempt marked `RetryElsewhere` (their
            // retries skipped for the next backend): gone back to, with their
            // retry policy, if the rest of the plan fails too.
            let mut go_back: Vec<Step> = Vec::new();
            while let Some((k, step)) = steps.next() {
                if calls > 0 && route.budget.as_ref().is_some_and(|b| !b.withdraw()) {
                    // The route's extra calls are spent (a route-wide outage):
                    // no more calls for this request.
                    metrics::counter!("llm_tower_failover_budget_refusals_total").increment(1);
                    let name = &*shared.backends[step.backend].state.name;
                    attempts.push(BackendAttempt::new(name, "route retry budget spent").skipped());
                    break;
                }
                calls += 1;
                let marked = elsewhere(k);
                let r = attempt_req(&step, marked);
                let retry_later = marked.then(|| step.clone());
                let peek = fallback.is_some();
                let hedge = route.hedge.as_ref().filter(|_| steps.peek().is_some());
                // The service polled ready serves this attempt if it is its backend's.
                let ready = match held.take() {
                    Some((i, svc)) if i == step.backend => Some(svc),
                    _ => None,
                };
                let observe = route.hedge.as_ref();
                let first_backend = step.backend;
                let started = Instant::now();
                // One attempt future, made where it is awaited: inline in
                // this future, or, for a hedged attempt (its timer, the race
                // and the second call), in the hedge's own box, made only on a
                // route with a hedge and a step after this one. The future of
                // every other request is the size of one attempt and the loop
                // around it, and neither holds the attempt twice.
                let outcome = match hedge {
                None => call_one(shared.clone(), step, r, peek, ready, observe).await,
                Some(h) => {
                    Box::pin(async {
                        let mut first = std::pin::pin!(call_one(shared.clone(), step, r, peek, ready, observe));
                        let delay = h.delay();
                        tokio::select! {
                            o = &mut first => o,
                            _ = tokio::time::sleep(delay) => {
                                if h.take() {
                                    let (k2, second) = steps.next().expect("peeked");
                                    calls += 1;
                                    let hedged = &shared.backends[second.backend].state;
                                    hedged.hedges.fetch_add(1, Ordering::Relaxed);
                                    metrics::counter!("llm_tower_failover_hedges_total", "backend" => hedged.name.to_string()).increment(1);
                                    let r2 = attempt_req(&second, elsewhere(k2));
                                    let pair = Racers {
                                        backends: [first_backend, second.backend],
                                        started: [started, Instant::now()],
                                        input_tokens: info.estimated_input_tokens,
                                    };
                                    let second = Box::pin(call_one(shared.clone(), second, r2, peek, None, observe));
                                    race(&shared, pair, first, second, &mut attempts, &mut tried).await
                                } else {
                                    first.await
                                }
                            }
                        }
                    })
                    .await
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
                        go_back.extend(retry_later);
                    }
                    Outcome::TooLong(a) => {
                        attempts.push(a);
                        too_long = true;
                        break;
                    }
                }
            }
            // The plan failed after moving on from backends without retrying
            // them: back to those, in order, now with their retry policy (backoff,
            // `retry-after`), within the route's budget.
            for step in go_back.into_iter().filter(|_| !too_long) {
                if route.budget.as_ref().is_some_and(|b| !b.withdraw()) {
                    metrics::counter!("llm_tower_failover_budget_refusals_total").increment(1);
                    let name = &*shared.backends[step.backend].state.name;
                    attempts.push(BackendAttempt::new(name, "route retry budget spent").skipped());
                    break;
                }
                calls += 1;
                metrics::counter!("llm_tower_failover_go_backs_total").increment(1);
                let r = attempt_req(&step, false);
                let again = Box::pin(call_one(
                    shared.clone(),
                    step,
                    r,
                    fallback.is_some(),
                    None,
                    route.hedge.as_ref(),
                ));
                match again.await {
                    Outcome::Answer(res) => return Ok(res),
                    Outcome::Error(e) => return Err(e),
                    Outcome::Failed(a, l) => {
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
                    tried_models.push(f);
                    model = Arc::from(f);
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
}
