//! [`RateLimitLayer`] and the [`RateLimit`] service: a call's decision (its
//! future is in `future.rs`, the observer that settles it in `settle.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use llm_tower_core::response::LlmResponseBody;
use llm_tower_core::{BoxError, Key, KeyFn, RequestInfo};

use crate::future::*;
use crate::limits::{Limits, Mode};
use crate::settle::QuotaHeadersAbove;
use crate::shared::*;
use crate::store::{Decision, Demand, KeyStats, MemoryStore, RateLimitStore};

/// Keyed rate limits: requests per minute and per day, **tokens per minute**
/// (weighted by each request's estimate and reconciled with real usage),
/// concurrency, a minimum interval. See [`Limits`].
///
/// All limits of a request are taken atomically or not at all. At a limit the
/// request is refused with [`RateLimited`](llm_tower_core::RateLimited) (429 with `retry-after`), or in
/// [`Mode::Wait`] waits its turn (FIFO) up to `max_wait`; a waiter that is
/// dropped gives its reservation back. With `adaptive` on, the provider's
/// `x-ratelimit-remaining-*`/`reset-*` and 429 `retry-after` make the limiter
/// hold or pace the key before the provider refuses.
///
/// The token estimate is `RequestInfo::estimated_input_tokens` (a token
/// counting layer fills it), else the body size / 4, plus `max_tokens × n`
/// (or `default_output_tokens`). Real usage, read from the response as it
/// passes, is charged or refunded when the body ends; a failed call's tokens
/// are refunded.
///
/// `poll_ready` forwards to the inner service: limits are taken in `call`,
/// so a breaker outside this layer that refuses a call spends no quota.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_core::KeyFn;
/// use llm_tower_ratelimit::{Limits, Mode, RateLimitLayer};
/// let limiter = RateLimitLayer::new(
///     Limits::default()
///         .requests_per_minute(500)
///         .tokens_per_minute(150_000)
///         .mode(Mode::Wait { max_wait: Duration::from_secs(5), max_queue: 256 }),
/// )
/// .keyed(KeyFn::header("x-tenant"));
/// let stack = tower::ServiceBuilder::new().layer(limiter.clone());
/// # let _ = stack;
/// ```
///
/// # Reads and writes
///
/// - Reads the request's `Arc<RequestInfo>` for its token estimate (input
///   estimate + `max_tokens` x `n`), parsing it once itself when no layer
///   above did (`RequestInfo::ensure_any`); the key from its `KeyFn`.
/// - Refuses with core's `RateLimited` (an error: 429 with `retry-after` at
///   the edge), never a response; a refusal is not an upstream failure for a
///   breaker or retry above.
/// - On 2xx answers writes `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
///   from its own state (`emit_headers`) and marks the response with core's
///   `LocalRateLimitHeaders`, so an adaptive limiter above never reads them
///   as the provider's. Failures keep the upstream's hints untouched.
/// - Reads the provider's `x-ratelimit-*` and `retry-after` (`adaptive`),
///   unless marked local.
/// - Settles when the response body ends (`LlmResponseBody` observer): the
///   token reservation is reconciled with the usage the body reports, and a
///   concurrency permit is held until then. A body never read to its end
///   settles when it is dropped.
pub struct RateLimitLayer<St = MemoryStore> {
    pub(crate) shared: Arc<Shared<St>>,
    pub(crate) key_fn: Option<KeyFn>,
}

impl<St> Clone for RateLimitLayer<St> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone(), key_fn: self.key_fn.clone() }
    }
}

impl<St> std::fmt::Debug for RateLimitLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limits", &self.shared.default.limits)
            .field("key_limits", &self.shared.per_key_map().len())
            .finish()
    }
}

impl RateLimitLayer<MemoryStore> {
    /// Limits kept in memory (this process only).
    pub fn new(limits: Limits) -> Self {
        Self::with_store(limits, MemoryStore::default())
    }
}

impl<St: RateLimitStore> RateLimitLayer<St> {
    /// Limits kept in `store` (e.g. shared by several gateways).
    pub fn with_store(limits: Limits, store: St) -> Self {
        Self::with_key_limits(limits, std::iter::empty::<(String, Limits)>(), store)
    }

    /// Limits kept in `store`, with some keys limited by their own `per_key`
    /// limits instead of `limits` (named tenants with a larger quota, say).
    /// Each key still has its own state; a key with no limit at all (in
    /// `limits`, or its own) passes without touching the store. Use it with
    /// [`keyed`](Self::keyed): unkeyed, every request is the key `*`.
    ///
    /// ```
    /// use llm_tower_core::KeyFn;
    /// use llm_tower_ratelimit::{Limits, MemoryStore, RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let tenants = RateLimitLayer::with_key_limits(
    ///     Limits::default().requests_per_minute(60),
    ///     [("acme", Limits::default().requests_per_minute(6_000))],
    ///     MemoryStore::default(),
    /// )
    /// .keyed(KeyFn::header("x-tenant"));
    /// let as_tenant = |t: &str| http::Request::builder().header("x-tenant", t).body(()).unwrap();
    /// assert_eq!(tenants.limits_for(&as_tenant("acme")).requests_per_minute, Some(6_000));
    /// assert_eq!(tenants.limits_for(&as_tenant("globex")).requests_per_minute, Some(60));
    /// # }
    /// ```
    pub fn with_key_limits<I, K>(limits: Limits, per_key: I, store: St) -> Self
    where
        I: IntoIterator<Item = (K, Limits)>,
        K: Into<String>,
    {
        let per_key: std::collections::HashMap<_, _> = per_key
            .into_iter()
            .map(|(k, l)| (k.into().into_boxed_str(), Arc::new(Profile::new(l))))
            .collect();
        Self {
            shared: Arc::new(Shared {
                default: Profile::new(limits),
                any_key: (!per_key.is_empty()).into(),
                per_key: per_key.into(),
                store,
                semaphores: std::sync::OnceLock::new(),
            }),
            key_fn: None,
        }
    }

    /// The limits of every key without limits of its own.
    pub fn limits(&self) -> Limits {
        self.shared.default.limits
    }

    /// The limits `req` is held to: its key's own, else the layer's.
    pub fn limits_for<B>(&self, req: &Request<B>) -> Limits {
        let key = self.key_fn.as_ref().map_or(GLOBAL, |f| f.key(req));
        self.shared.profile_of(&key).map_or(self.shared.default.limits, |p| p.limits)
    }

    /// The keys with limits of their own, sorted.
    pub fn limited_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.shared.per_key_map().keys().map(|k| k.to_string()).collect();
        keys.sort_unstable();
        keys
    }

    /// Gives `key` limits of its own from now on, replacing any it had (a
    /// virtual key created or changed at run time). Its state in the store
    /// (what it already spent of a window) is kept; its counters start anew.
    /// Every clone of the layer and every service made from it sees the change
    /// at the next request.
    ///
    /// ```
    /// use llm_tower_core::KeyFn;
    /// use llm_tower_ratelimit::{Limits, RateLimitLayer};
    /// let layer = RateLimitLayer::new(Limits::default()).keyed(KeyFn::header("x-tenant"));
    /// let req = http::Request::builder().header("x-tenant", "acme").body(()).unwrap();
    /// assert_eq!(layer.limits_for(&req).requests_per_minute, None);
    /// layer.set_key_limits("acme", Limits::default().requests_per_minute(60));
    /// assert_eq!(layer.limits_for(&req).requests_per_minute, Some(60));
    /// assert!(layer.remove_key_limits("acme"));
    /// assert_eq!(layer.limits_for(&req).requests_per_minute, None);
    /// ```
    pub fn set_key_limits(&self, key: impl Into<String>, limits: Limits) {
        let profile = Arc::new(Profile::new(limits));
        self.shared.edit_keys(|m| m.insert(key.into().into_boxed_str(), profile));
    }

    /// Puts `key` back under the layer's own limits; whether it had its own.
    pub fn remove_key_limits(&self, key: &str) -> bool {
        self.shared.edit_keys(|m| m.remove(key).is_some())
    }

    /// One set of limits per key (tenant, model, ...), for the layer this
    /// returns and the services it makes. It shares its store, stats and
    /// handles with the layer it came from and that layer's clones (which keep
    /// their own key function): calling it at any point is safe.
    pub fn keyed(mut self, key_fn: KeyFn) -> Self {
        self.key_fn = Some(key_fn);
        self
    }

    /// A snapshot of the counters of requests under the layer's own limits,
    /// with the store's keys but those limited by their own.
    pub fn stats(&self) -> RateLimitStats {
        let shared = &self.shared;
        let mut keys = self.key_stats();
        {
            let own = shared.per_key_map();
            keys.retain(|k| !own.contains_key(k.key.as_str()));
        }
        counters_of(&shared.default.counters, keys)
    }

    /// A snapshot of the counters of `key`, when it has limits of its own.
    pub fn stats_for(&self, key: &str) -> Option<RateLimitStats> {
        let profile = self.shared.per_key_map().get(key)?.clone();
        let mut keys = self.key_stats();
        keys.retain(|k| k.key == key);
        Some(counters_of(&profile.counters, keys))
    }

    fn key_stats(&self) -> Vec<KeyStats> {
        let shared = &self.shared;
        let own = shared.per_key_map();
        shared.store.key_stats(&|k| own.get(k).map_or(shared.default.rates, |p| p.rates))
    }

    /// How long `req` would wait here now, without taking anything (`None`:
    /// the store cannot tell at once). A router uses it to prefer a backend
    /// whose limits have room.
    ///
    /// ```
    /// use llm_tower_ratelimit::{Limits, RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = RateLimitLayer::new(Limits::default().requests_per_minute(60));
    /// let req = http::Request::new(());
    /// assert_eq!(layer.wait_for(&req), Some(std::time::Duration::ZERO));
    /// # }
    /// ```
    pub fn wait_for<B>(&self, req: &Request<B>) -> Option<Duration> {
        let shared = &self.shared;
        let key = self.key_fn.as_ref().map_or(GLOBAL, |f| f.key(req));
        let own = shared.profile_of(&key);
        let profile = own.as_deref().unwrap_or(&shared.default);
        if profile.unlimited {
            return Some(Duration::ZERO);
        }
        let tokens = if profile.rates.tpm.is_some() { estimate_tokens(req, &profile.limits) } else { 0 };
        shared.store.peek(&key, &profile.demand(tokens))
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}

impl<S, St> tower::Layer<S> for RateLimitLayer<St> {
    type Service = RateLimit<S, St>;

    fn layer(&self, inner: S) -> RateLimit<S, St> {
        RateLimit { inner, shared: self.shared.clone(), key_fn: self.key_fn.clone() }
    }
}

/// The rate-limiting service. See [`RateLimitLayer`].
pub struct RateLimit<S, St = MemoryStore> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared<St>>,
    pub(crate) key_fn: Option<KeyFn>,
}

impl<S: Clone, St> Clone for RateLimit<S, St> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), shared: self.shared.clone(), key_fn: self.key_fn.clone() }
    }
}

impl<S: std::fmt::Debug, St> std::fmt::Debug for RateLimit<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("inner", &self.inner).finish()
    }
}

pub(crate) const GLOBAL: Key = Key::from_static("*");

fn counters_of(c: &Counters, keys: Vec<KeyStats>) -> RateLimitStats {
    RateLimitStats {
        allowed: c.allowed.load(Ordering::Relaxed),
        rejected: c.rejected.load(Ordering::Relaxed),
        waited: c.waited.load(Ordering::Relaxed),
        wait_ms: c.wait_ns.load(Ordering::Relaxed) / 1_000_000,
        keys,
    }
}

pub(crate) fn base_demand(limits: &Limits) -> Demand {
    let (max_wait, max_queue) = match limits.mode {
        Mode::Reject => (None, 0),
        Mode::Wait { max_wait, max_queue } => (Some(max_wait), max_queue),
    };
    Demand { requests: 1, tokens: 0, rates: limits.rates(), max_wait, max_queue }
}

pub(crate) fn estimate_tokens<B>(req: &Request<B>, limits: &Limits) -> u64 {
    let Some(info) = RequestInfo::get(req) else { return u64::from(limits.default_output_tokens) };
    let input = info.estimated_input_tokens.map_or((info.body_bytes as u64).div_ceil(4), u64::from);
    let output =
        u64::from(info.max_tokens.unwrap_or(limits.default_output_tokens)) * u64::from(info.n.max(1));
    input + output
}

impl<S, B, R, St> tower::Service<Request<B>> for RateLimit<S, St>
where
    S: tower::Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: 'static,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    St: RateLimitStore,
{
    type Response = Response<LlmResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, St>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        let key = self.key_fn.as_ref().map_or(GLOBAL, |f| f.key(&req));
        let profile = shared.profile_of(&key);
        let p = profile.as_deref().unwrap_or(&shared.default);
        if p.unlimited {
            let ticket = Ticket { shared, profile, key, tokens: 0, state: TicketState::Done };
            let state = State::Calling { fut: self.inner.call(req) };
            let above = QuotaHeadersAbove::default();
            return ResponseFuture { slow: None, ticket, grant: None, permit: None, above, state };
        }
        // The quotas a limiter above writes, and this one's for those below.
        let above = if p.limits.emit_headers {
            QuotaHeadersAbove::take_and_mark(&mut req, &p.rates)
        } else {
            QuotaHeadersAbove::default()
        };
        let tokens = if p.rates.tpm.is_some() {
            // The request's meaning, parsed here if no layer above did (one
            // shared parse): a bare limiter reserves by `max_tokens` too.
            RequestInfo::ensure_any(&mut req);
            estimate_tokens(&req, &p.limits)
        } else {
            0
        };
        // Without a token limit every demand is the same: no copy of it per call.
        let mut reserve = if tokens == 0 {
            shared.store.reserve(&key, &p.demand)
        } else {
            shared.store.reserve(&key, &p.demand(tokens))
        };
        let mut ticket = Ticket { shared, profile, key, tokens, state: TicketState::Pending };
        // A store that decides at once (the in-memory one) is polled here, so
        // the common case (granted, no wait, no concurrency limit) calls the
        // inner service now instead of going through the state machine.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = Pin::new(&mut reserve).poll(&mut cx);
        // The slow paths (waiting, a concurrency permit, a networked store)
        // keep the request and a ready service in one box; the fast path
        // calls the service that was polled ready and keeps neither.
        let slow = |inner: &mut S, req| {
            let clone = inner.clone();
            Some(Box::new(Slow { svc: std::mem::replace(inner, clone), req: Some(req), slot_deadline: None }))
        };
        let (state, slow, grant) = match first {
            Poll::Pending => (State::Reserving { reserve }, slow(&mut self.inner, req), None),
            Poll::Ready(Err(e)) => {
                ticket.state = TicketState::Done;
                (State::Failed { err: Some(e) }, None, None)
            }
            Poll::Ready(Ok(Decision::Denied { limit, retry_after })) => {
                let err = ticket.refused(limit, retry_after);
                (State::Failed { err: Some(err) }, None, None)
            }
            Poll::Ready(Ok(Decision::Granted(g))) if !g.wait.is_zero() => {
                ticket.state = TicketState::Queued;
                let c = &ticket.profile().counters;
                c.waited.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("llm_tower_ratelimit_waited_total").increment(1);
                c.wait_ns.fetch_add(g.wait.as_nanos() as u64, Ordering::Relaxed);
                let sleep = Box::pin(tokio::time::sleep(g.wait));
                (State::Waiting { sleep }, slow(&mut self.inner, req), Some(g))
            }
            Poll::Ready(Ok(Decision::Granted(g))) if ticket.profile().limits.max_concurrent.is_some() => {
                ticket.state = TicketState::Reserved;
                (State::Ready, slow(&mut self.inner, req), Some(g))
            }
            Poll::Ready(Ok(Decision::Granted(g))) => {
                ticket.state = TicketState::Done;
                ticket.profile().counters.allowed.fetch_add(1, Ordering::Relaxed);
                (State::Calling { fut: self.inner.call(req) }, None, Some(g))
            }
        };
        ResponseFuture { slow, ticket, grant, permit: None, above, state }
    }
}
