//! [`ResponseFuture`]: a rate-limited call from its decision to its answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use llm_tower_core::response::LlmResponseBody;
use llm_tower_core::usage::BodyKind;
use llm_tower_core::{BoxError, Key, LocalRateLimitHeaders, RateLimited};
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use crate::limits::{LimitKind, Mode};
use crate::settle::*;
use crate::shared::*;
use crate::store::{Adjustment, Decision, Grant, RateLimitStore, SlotFuture};

/// How soon a call waiting for a full shared concurrency limit asks again.
const SLOT_RETRY: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TicketState {
    /// Nothing reserved yet.
    Pending,
    /// Reserved and waiting in the queue.
    Queued,
    /// Reserved, not yet sent.
    Reserved,
    /// Sent upstream (or given back): nothing to undo.
    Done,
}

/// A demand's reservation, given back if the request never goes out.
pub(crate) struct Ticket<St: RateLimitStore> {
    pub(crate) shared: Arc<Shared<St>>,
    /// The key's own limits, when it has them (else the layer's).
    pub(crate) profile: Option<Arc<Profile>>,
    pub(crate) key: Key,
    /// The token estimate reserved (the rest of the demand is in `shared`).
    pub(crate) tokens: u64,
    pub(crate) state: TicketState,
}

impl<St: RateLimitStore> Ticket<St> {
    /// The limits this request is held to.
    pub(crate) fn profile(&self) -> &Profile {
        self.profile.as_deref().unwrap_or(&self.shared.default)
    }

    pub(crate) fn cancel(&mut self) {
        if matches!(self.state, TicketState::Queued | TicketState::Reserved) {
            let queued = self.state == TicketState::Queued;
            let demand = self.profile().demand(self.tokens);
            self.shared.store.adjust(&self.key, Adjustment::Cancel { demand, queued });
        }
        self.state = TicketState::Done;
    }

    pub(crate) fn refused(&mut self, limit: LimitKind, retry_after: Option<Duration>) -> BoxError {
        self.cancel();
        self.profile().counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = %self.key, limit = limit.name(), "rate limited");
        metrics::counter!("llm_tower_ratelimit_rejected_total", "limit" => limit.name()).increment(1);
        Box::new(RateLimited::new(self.key.as_str(), limit.name(), retry_after))
    }
}

impl<St: RateLimitStore> Drop for Ticket<St> {
    fn drop(&mut self) {
        self.cancel();
    }
}

pin_project! {
    #[project = StateProj]
    pub(crate) enum State<F, Res> {
        Failed { err: Option<BoxError> },
        Reserving { #[pin] reserve: Res },
        Waiting { sleep: Pin<Box<Sleep>> },
        Permit { acquire: Pin<Box<dyn Future<Output = Result<Result<OwnedSemaphorePermit, tokio::sync::AcquireError>, tokio::time::error::Elapsed>> + Send>> },
        Slot { acquire: SlotFuture },
        SlotRetry { sleep: Pin<Box<Sleep>> },
        Ready,
        Calling { #[pin] fut: F },
    }
}

/// What a request that cannot be sent at once keeps until it is.
pub(crate) struct Slow<S, B> {
    pub(crate) svc: S,
    pub(crate) req: Option<Request<B>>,
    /// Until when a full shared concurrency limit is asked again (wait mode).
    pub(crate) slot_deadline: Option<tokio::time::Instant>,
}

pin_project! {
    /// Response future of [`RateLimit`].
    pub struct ResponseFuture<S, B, St>
    where
        S: tower::Service<Request<B>>,
        St: RateLimitStore,
    {
        pub(crate) slow: Option<Box<Slow<S, B>>>,
        pub(crate) ticket: Ticket<St>,
        pub(crate) grant: Option<Grant>,
        pub(crate) permit: Option<Permit>,
        pub(crate) above: QuotaHeadersAbove,
        #[pin]
        pub(crate) state: State<S::Future, St::Reserve>,
    }
}

impl<S, B, R, St> Future for ResponseFuture<S, B, St>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    St: RateLimitStore,
{
    type Output = Result<Response<LlmResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Failed { err } => {
                    return Poll::Ready(Err(err.take().unwrap_or_else(|| "polled after completion".into())));
                }
                StateProj::Reserving { reserve } => match ready!(reserve.poll(cx)) {
                    Err(e) => {
                        this.ticket.state = TicketState::Done;
                        return Poll::Ready(Err(e));
                    }
                    Ok(Decision::Denied { limit, retry_after }) => {
                        return Poll::Ready(Err(this.ticket.refused(limit, retry_after)));
                    }
                    Ok(Decision::Granted(g)) => {
                        *this.grant = Some(g);
                        if g.wait.is_zero() {
                            this.ticket.state = TicketState::Reserved;
                            this.state.set(State::Ready);
                        } else {
                            this.ticket.state = TicketState::Queued;
                            let c = &this.ticket.profile().counters;
                            c.waited.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("llm_tower_ratelimit_waited_total").increment(1);
                            c.wait_ns.fetch_add(g.wait.as_nanos() as u64, Ordering::Relaxed);
                            this.state.set(State::Waiting { sleep: Box::pin(tokio::time::sleep(g.wait)) });
                        }
                    }
                },
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    let t = &mut *this.ticket;
                    t.shared.store.adjust(&t.key, Adjustment::Dequeue);
                    t.state = TicketState::Reserved;
                    this.state.set(State::Ready);
                }
                StateProj::Permit { acquire } => match ready!(acquire.as_mut().poll(cx)) {
                    Ok(Ok(p)) => {
                        *this.permit = Some(Permit::Local(p));
                        this.state.set(State::Ready);
                    }
                    _ => return Poll::Ready(Err(this.ticket.refused(LimitKind::Concurrency, None))),
                },
                StateProj::Slot { acquire } => match ready!(acquire.as_mut().poll(cx)) {
                    Ok(Some(slot)) => {
                        *this.permit = Some(Permit::Shared(slot));
                        this.state.set(State::Ready);
                    }
                    Ok(None) => {
                        // Every slot taken, across processes: nothing wakes
                        // us when one frees, so wait mode asks again shortly
                        // until its longest wait.
                        let slow = this.slow.as_mut().expect("the slow path keeps the request");
                        let now = tokio::time::Instant::now();
                        let deadline = match this.ticket.profile().limits.mode {
                            Mode::Wait { max_wait, .. } => *slow.slot_deadline.get_or_insert(now + max_wait),
                            Mode::Reject => now,
                        };
                        if now >= deadline {
                            return Poll::Ready(Err(this.ticket.refused(LimitKind::Concurrency, None)));
                        }
                        let sleep = tokio::time::sleep_until(deadline.min(now + SLOT_RETRY));
                        this.state.set(State::SlotRetry { sleep: Box::pin(sleep) });
                    }
                    Err(e) => {
                        this.ticket.state = TicketState::Done;
                        return Poll::Ready(Err(e));
                    }
                },
                StateProj::SlotRetry { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    if this.permit.is_none() {
                        if let Some(max) = this.ticket.profile().limits.max_concurrent {
                            if let Some(acquire) =
                                this.ticket.shared.store.acquire_slot(&this.ticket.key, max)
                            {
                                this.state.set(State::Slot { acquire });
                                continue;
                            }
                            let sem = this.ticket.shared.semaphore(&this.ticket.key, max);
                            match sem.clone().try_acquire_owned() {
                                Ok(p) => *this.permit = Some(Permit::Local(p)),
                                Err(_) => match this.ticket.profile().limits.mode {
                                    Mode::Wait { max_wait, .. } => {
                                        let acquire = tokio::time::timeout(max_wait, sem.acquire_owned());
                                        this.state.set(State::Permit { acquire: Box::pin(acquire) });
                                        continue;
                                    }
                                    Mode::Reject => {
                                        return Poll::Ready(Err(this
                                            .ticket
                                            .refused(LimitKind::Concurrency, None)));
                                    }
                                },
                            }
                        }
                    }
                    let slow = this.slow.as_mut().expect("the slow path keeps the request");
                    let req = slow.req.take().expect("sent once");
                    this.ticket.state = TicketState::Done;
                    this.ticket.profile().counters.allowed.fetch_add(1, Ordering::Relaxed);
                    let fut = slow.svc.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let t = &*this.ticket;
                    let shared = &t.shared;
                    let p = t.profile();
                    return Poll::Ready(match ready!(fut.poll(cx)) {
                        Err(e) => {
                            refund_tokens(shared, &p.rates, &t.key, t.tokens);
                            Err(e.into())
                        }
                        Ok(res) if p.unlimited => Ok(res.map(LlmResponseBody::new)),
                        Ok(res) => {
                            let (mut parts, body) = res.into_parts();
                            // Headers a limiter below wrote are its quota, not the provider's.
                            let local = parts.extensions.get::<LocalRateLimitHeaders>().is_some();
                            if p.limits.adaptive && !local {
                                adapt(shared, &t.key, parts.status, &parts.headers);
                            }
                            // Only on successes: a failure's hints stay the upstream's own,
                            // for the retry and breaker layers above.
                            if p.limits.emit_headers && parts.status.is_success() {
                                if let Some(g) = this.grant {
                                    set_headers(
                                        &mut parts.headers,
                                        g,
                                        &p.rates,
                                        &p.limit_values,
                                        *this.above,
                                    );
                                    parts.extensions.insert(LocalRateLimitHeaders);
                                }
                            }
                            let meter = p.rates.tpm.map(|_| Meter {
                                shared: shared.clone(),
                                rates: p.rates,
                                key: t.key.clone(),
                                reserved: t.tokens,
                                success: parts.status.is_success(),
                                kind: BodyKind::from_headers(&parts.headers),
                            });
                            let mut body = LlmResponseBody::new(body);
                            let permit = this.permit.take();
                            if meter.is_some() || permit.is_some() {
                                body.observe(Settle { meter, permit });
                            }
                            Ok(Response::from_parts(parts, body))
                        }
                    });
                }
            }
        }
    }
}
