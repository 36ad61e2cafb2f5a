//! Deciding after a failed attempt: retry or not, after how long, and what the caller gets when the layer gives up.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Body;
use llm_tower_core::LlmResponseBody;
use llm_tower_core::budget::RouteBudget;
use llm_tower_core::{BoxError, Classification, RetriesExhausted};
use tokio::time::Instant;

use crate::stats::Counters;

use crate::service::*;

/// Decides whether to retry after `attempt` failed, and after how long.
#[allow(clippy::too_many_arguments)] // the future's fields, borrowed one by one (it is pinned)
pub(crate) fn plan<C, B>(
    shared: &Shared<C>,
    attempt: u32,
    prev_delay: &mut Duration,
    deadline: Option<Instant>,
    class: &Classification,
    reason: &str,
    req: Option<&http::Request<B>>,
    elsewhere: bool,
) -> Option<Duration> {
    let c = &shared.counters;
    if elsewhere {
        // Another backend of the route is waiting for this request: no
        // backoff here, the failover above moves on at once.
        Counters::bump(&c.elsewhere_refusals);
        metrics::counter!("llm_tower_retry_refused_total", "why" => "elsewhere").increment(1);
        tracing::debug!(attempt, reason, "not retrying here: another backend can serve it");
        return None;
    }
    // No copy kept: the future made none because no retry can follow.
    let req = req?;
    let route_budget = RouteBudget::of(req);
    let delay = match class.hint {
        Some(h) if h.after > shared.policy.max_retry_after => {
            Counters::bump(&c.hint_refusals);
            metrics::counter!("llm_tower_retry_refused_total", "why" => "retry_after").increment(1);
            tracing::debug!(
                attempt,
                retry_after_ms = h.after.as_millis() as u64,
                "not retrying: server asks for too long a wait"
            );
            return None;
        }
        Some(h) => h.after,
        None => shared.policy.delay(attempt, *prev_delay, &*shared.rng),
    };
    if deadline.is_some_and(|d| Instant::now() + delay >= d) {
        Counters::bump(&c.deadline_refusals);
        metrics::counter!("llm_tower_retry_refused_total", "why" => "deadline").increment(1);
        return None;
    }
    // The route's budget, when a failover above shares one, replaces this
    // layer's own: one bound on the route's extra calls.
    let budget = route_budget.or(shared.budget.as_ref());
    if budget.is_some_and(|b| !b.withdraw()) {
        Counters::bump(&c.budget_refusals);
        metrics::counter!("llm_tower_retry_refused_total", "why" => "budget").increment(1);
        tracing::debug!(attempt, reason, "not retrying: retry budget spent");
        return None;
    }
    c.retried(reason);
    *prev_delay = delay;
    tracing::debug!(attempt = attempt + 1, delay_ms = delay.as_millis() as u64, reason, "retrying");
    Some(delay)
}

pub(crate) fn give_up_response<C, R>(
    shared: &Shared<C>,
    attempt: u32,
    res: Response<R>,
) -> Response<LlmResponseBody>
where
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    if attempt > 1 {
        Counters::bump(&shared.counters.give_ups);
        metrics::counter!("llm_tower_retry_give_ups_total").increment(1);
        tracing::info!(attempts = attempt, status = res.status().as_u16(), "giving up");
    }
    res.map(LlmResponseBody::new)
}

pub(crate) fn give_up_error<C>(shared: &Shared<C>, attempt: u32, err: BoxError) -> BoxError {
    if attempt > 1 {
        Counters::bump(&shared.counters.give_ups);
        metrics::counter!("llm_tower_retry_give_ups_total").increment(1);
        tracing::info!(attempts = attempt, error = %err, "giving up");
        Box::new(RetriesExhausted::new(attempt, err))
    } else {
        err
    }
}
