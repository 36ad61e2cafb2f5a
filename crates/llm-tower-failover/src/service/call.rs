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

pub(crate) async fn route_request<S, B>(
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
