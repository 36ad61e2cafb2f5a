//! Active health: probing every backend on a timer.

use super::*;

/// Probes every backend every `every`, until the failover is dropped.
pub(crate) async fn probe_loop<S, B>(shared: Weak<Shared<S>>, every: Duration)
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
