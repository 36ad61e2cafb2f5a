//! The [`Cache`] service: plan, lookup, single flight, recording.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AGE, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use llm_tower_core::usage::{BodyKind, Prices};
use llm_tower_core::{Api, BoxError, Key, LlmBody, LlmResponseBody, RequestInfo, ServedBy};
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

use crate::body::Recorder;
use crate::entry::{Entry, Form};
use crate::layer::{Shared, log_l2};
use crate::{CacheKey, Strategy};

/// The response header naming what the cache did.
pub const X_LLM_CACHE: HeaderName = HeaderName::from_static("x-llm-cache");
/// The request header giving an entry's TTL in seconds.
pub const X_LLM_CACHE_TTL: HeaderName = HeaderName::from_static("x-llm-cache-ttl");

/// The caching service. See [`CacheLayer`](crate::CacheLayer).
pub struct Cache<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Cache { inner: self.inner.clone(), shared: self.shared.clone() }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("inner", &self.inner).finish()
    }
}

/// What to do with one cacheable request.
#[derive(Clone)]
pub(crate) struct Plan {
    pub(crate) key: CacheKey,
    pub(crate) scope: Key,
    /// Look up (false with `no-cache`: refresh only).
    read: bool,
    pub(crate) ttl: Duration,
    max_age: Option<Duration>,
    want: Form,
    include_usage: bool,
    pub(crate) convertible: bool,
    prices: Option<Prices>,
}

fn cache_control(req: &Request<LlmBody>) -> (bool, bool, Option<Duration>) {
    let (mut no_cache, mut no_store, mut max_age) = (false, false, None);
    for v in req.headers().get_all(CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()) {
        for d in v.split(',').map(str::trim) {
            let lower = d.to_ascii_lowercase();
            match lower.as_str() {
                "no-cache" => no_cache = true,
                "no-store" => no_store = true,
                _ => {
                    if let Some(n) =
                        lower.strip_prefix("max-age=").and_then(|n| n.trim_matches('"').parse().ok())
                    {
                        max_age = Some(Duration::from_secs(n));
                    }
                }
            }
        }
    }
    (no_cache, no_store, max_age)
}

impl Shared {
    /// Decides whether and how `req` uses the cache (`None`: bypass).
    ///
    /// Reads what it needs of the body in the pass that hashes it (and not
    /// at all for a byte-identical repeat, see `Memo`); `RequestInfo` is
    /// used when a layer above parsed it, never required.
    fn plan(&self, req: &mut Request<LlmBody>) -> Option<Plan> {
        let cfg = &self.cfg;
        if matches!(cfg.strategy, Strategy::Disabled) || req.method() != Method::POST {
            return None;
        }
        let api = RequestInfo::get(req).map_or_else(|| Api::from_path(req.uri().path()), |i| i.api);
        let (endpoint, tag) = match api {
            Api::ChatCompletions => ("/v1/chat/completions", 1),
            Api::Embeddings => ("/v1/embeddings", 2),
            Api::Responses => ("/v1/responses", 3),
            Api::AnthropicMessages => ("/v1/messages", 4),
            _ => return None,
        };
        let (no_cache, no_store, max_age) = cache_control(req);
        if no_store {
            return None;
        }
        let convertible = api == Api::ChatCompletions;
        let (body, facts) =
            self.memo.analyze(req.body().as_bytes(), tag, &cfg.ignored_fields, convertible).ok()?;
        let cacheable = match &cfg.strategy {
            Strategy::Aggressive => true,
            Strategy::Conservative => api == Api::Embeddings || facts.deterministic,
            Strategy::Selective(pred) => {
                let opted =
                    req.headers().get(X_LLM_CACHE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"on"));
                // The predicate may look at RequestInfo: parse it for it.
                opted || pred.as_ref().is_some_and(|p| RequestInfo::ensure(req).is_ok() && p(req))
            }
            Strategy::Disabled => false,
        };
        if !cacheable {
            return None;
        }
        let ttl_header = req
            .headers()
            .get(X_LLM_CACHE_TTL)
            .and_then(|v| v.to_str().ok()?.trim().parse().ok())
            .map(Duration::from_secs);
        let ttl = ttl_header.or(max_age).unwrap_or(cfg.ttl).min(cfg.max_ttl);
        if ttl.is_zero() {
            return None;
        }
        let scope = cfg.scope.key(req);
        Some(Plan {
            key: CacheKey::from_parts(scope.as_str(), endpoint, body),
            scope,
            read: !no_cache,
            ttl,
            max_age,
            want: if facts.stream { Form::Sse } else { Form::Json },
            include_usage: facts.include_usage,
            convertible,
            prices: req.extensions().get::<Prices>().copied(),
        })
    }

    fn count(&self, result: Outcome) {
        let c = &self.counters;
        let (n, label) = match result {
            Outcome::Hit => (&c.hits, "hit"),
            Outcome::Miss => (&c.misses, "miss"),
            Outcome::Bypass => (&c.bypasses, "bypass"),
        };
        n.fetch_add(1, Ordering::Relaxed);
        self.results[result as usize]
            .get_or_init(|| metrics::counter!("llm_tower_cache_requests_total", "result" => label))
            .increment(1);
    }

    /// A hit's response, if `entry` is fresh and renders in the wanted form.
    fn serve(&self, plan: &Plan, entry: &Entry, coalesced: bool) -> Option<Response<Bytes>> {
        let now = Instant::now();
        if !entry.fresh(now, plan.max_age) {
            return None;
        }
        let body = entry.render(plan.want, plan.include_usage)?;
        let content_type = match plan.want {
            Form::Json => "application/json",
            Form::Sse => "text/event-stream",
        };
        let mut res = Response::new(body);
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(X_LLM_CACHE, HeaderValue::from_static("HIT"));
        h.insert(AGE, HeaderValue::from(entry.age(now)));
        res.extensions_mut().insert(ServedBy::cache());
        self.count(Outcome::Hit);
        let c = &self.counters;
        if coalesced {
            c.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(u) = entry.usage {
            c.tokens_saved.fetch_add(u.total(), Ordering::Relaxed);
            if let Some(p) = plan.prices {
                c.cost_saved.fetch_add(p.cost_micros(&u), Ordering::Relaxed);
            }
        }
        tracing::debug!(key = %plan.key, age = entry.age(now), "cache hit");
        Some(res)
    }

    /// The in-memory entry, if fresh. A stale one is removed.
    fn lookup_now(&self, plan: &Plan) -> Lookup {
        match self.cache.get(&plan.key) {
            None => Lookup::Miss,
            Some(e) => match self.serve(plan, &e, false) {
                Some(res) => Lookup::Hit(res),
                None => {
                    if !e.fresh(Instant::now(), None) {
                        self.cache.invalidate(&plan.key);
                    }
                    Lookup::Miss
                }
            },
        }
    }

    /// Joins the flight for `key`, or starts one. A flight that no second
    /// request joins (every miss of a workload without repeats) allocates
    /// nothing of its own: the waiters' `Notify` is made by the first to join.
    fn join(self: &Arc<Self>, key: CacheKey) -> Role {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get_mut(&key) {
            // Made under the lock: the leader wakes waiters only after
            // taking the same lock, so this one cannot miss the wake.
            let notify = flight.waiters.get_or_insert_with(|| Arc::new(Notify::new()));
            return Role::Wait(notify.clone().notified_owned());
        }
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        flights.insert(key, Flight { id, waiters: None });
        Role::Lead(FlightGuard { shared: self.clone(), key, id })
    }
}

/// A miss in flight: the waiters for its answer, once one joins.
pub(crate) struct Flight {
    /// Tells this flight from a later one for the same key.
    id: u64,
    waiters: Option<Arc<Notify>>,
}

/// What the cache did with a request: its counter and metric label.
#[derive(Clone, Copy)]
enum Outcome {
    Hit = 0,
    Miss = 1,
    Bypass = 2,
}

enum Lookup {
    Hit(Response<Bytes>),
    Miss,
}

enum Role {
    Lead(FlightGuard),
    Wait(OwnedNotified),
}

/// The first of identical concurrent misses. Dropped when its answer is
/// stored (or known not to be): the flight ends and its waiters look again.
pub(crate) struct FlightGuard {
    shared: Arc<Shared>,
    key: CacheKey,
    id: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let waiters = {
            let mut flights = self.shared.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get(&self.key) {
                Some(f) if f.id == self.id => flights.remove(&self.key).and_then(|f| f.waiters),
                _ => None,
            }
        };
        if let Some(n) = waiters {
            n.notify_waiters();
        }
    }
}

fn with_status<B>(mut res: Response<B>, status: &'static str) -> Response<B> {
    res.headers_mut().insert(X_LLM_CACHE, HeaderValue::from_static(status));
    res
}

/// Wraps an upstream answer: recorded for the cache when it may be stored.
fn on_response<R>(
    shared: &Arc<Shared>,
    res: Response<R>,
    plan: Option<Plan>,
    flight: Option<FlightGuard>,
) -> Response<LlmResponseBody>
where
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    let Some(plan) = plan else {
        return with_status(res.map(LlmResponseBody::new), "BYPASS");
    };
    let no_store = res
        .headers()
        .get_all(CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("no-store")));
    if res.status() != StatusCode::OK || no_store {
        shared.counters.not_stored.fetch_add(1, Ordering::Relaxed);
        return with_status(res.map(LlmResponseBody::new), "MISS");
    }
    let kind = BodyKind::from_headers(res.headers());
    let rec = Recorder::new(shared.clone(), plan, kind, flight);
    with_status(llm_tower_core::response::observe(res, rec), "MISS")
}

impl<S, R> tower::Service<Request<LlmBody>> for Cache<S>
where
    S: tower::Service<Request<LlmBody>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    type Response = Response<LlmResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<LlmBody>) -> Self::Future {
        let shared = self.shared.clone();
        let Some(plan) = shared.plan(&mut req) else {
            shared.count(Outcome::Bypass);
            return ResponseFuture::call(self.inner.call(req), shared, None, None);
        };
        if plan.read {
            match shared.lookup_now(&plan) {
                Lookup::Hit(res) => return ResponseFuture::ready(Ok(res.map(LlmResponseBody::full))),
                Lookup::Miss => {}
            }
        }
        if !plan.read || !shared.cfg.coalesce {
            if plan.read && shared.l2.is_some() {
                return self.slow(req, plan, None);
            }
            shared.count(Outcome::Miss);
            return ResponseFuture::call(self.inner.call(req), shared, Some(plan), None);
        }
        match shared.join(plan.key) {
            Role::Lead(guard) if shared.l2.is_none() => {
                shared.count(Outcome::Miss);
                ResponseFuture::call(self.inner.call(req), shared, Some(plan), Some(guard))
            }
            role => self.slow(req, plan, Some(role)),
        }
    }
}

impl<S, R> Cache<S>
where
    S: tower::Service<Request<LlmBody>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    /// The paths that wait: a second-level lookup, a coalesced miss. Boxed:
    /// the hit and plain-miss paths are not.
    fn slow(&mut self, req: Request<LlmBody>, plan: Plan, role: Option<Role>) -> ResponseFuture<S::Future> {
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        ResponseFuture::boxed(Box::pin(slow(shared, svc, req, plan, role)))
    }
}

/// The waiting paths' future. An `async move` block, not an `async fn`,
/// which would keep each argument (the request, the plan, the service) twice.
#[allow(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice in its future")]
fn slow<S, R>(
    shared: Arc<Shared>,
    mut svc: S,
    req: Request<LlmBody>,
    plan: Plan,
    mut role: Option<Role>,
) -> impl Future<Output = Result<Response<LlmResponseBody>, BoxError>>
where
    S: tower::Service<Request<LlmBody>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    async move {
        let hit = |e: &Entry, coalesced: bool| {
            shared.serve(&plan, e, coalesced).map(|r| r.map(LlmResponseBody::full))
        };
        if let Some(Role::Wait(ended)) = role {
            let wait = shared.cfg.max_coalesce_wait;
            // Ends when the first request's answer is stored or dropped.
            let _ = tokio::time::timeout(wait, ended).await;
            if let Some(res) = shared.cache.get(&plan.key).and_then(|e| hit(&e, true)) {
                return Ok(res);
            }
            role = None;
        }
        if plan.read {
            if let Some(l2) = &shared.l2 {
                let found = log_l2(l2.get(plan.key).await).flatten().and_then(Entry::decode);
                if let Some(e) = found.filter(|e| e.scope.as_str() == plan.scope.as_str()) {
                    let e = Arc::new(e);
                    if let Some(res) = hit(&e, false) {
                        shared.cache.insert(plan.key, e);
                        return Ok(res);
                    }
                }
            }
        }
        let guard = match role {
            Some(Role::Lead(g)) => Some(g),
            _ => None,
        };
        shared.count(Outcome::Miss);
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.map_err(Into::into)?;
        let res = svc.call(req).await.map_err(Into::into)?;
        Ok(on_response(&shared, res, Some(plan), guard))
    }
}

type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response<LlmResponseBody>, BoxError>> + Send>>;

pin_project! {
    /// Response future of [`Cache`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Ready { res: Option<Result<Response<LlmResponseBody>, BoxError>> },
        Calling { #[pin] fut: F, shared: Arc<Shared>, plan: Option<Plan>, flight: Option<FlightGuard> },
        Slow { fut: BoxedResponse },
    }
}

impl<F> ResponseFuture<F> {
    fn ready(res: Result<Response<LlmResponseBody>, BoxError>) -> Self {
        ResponseFuture { state: State::Ready { res: Some(res) } }
    }

    fn call(fut: F, shared: Arc<Shared>, plan: Option<Plan>, flight: Option<FlightGuard>) -> Self {
        ResponseFuture { state: State::Calling { fut, shared, plan, flight } }
    }

    fn boxed(fut: BoxedResponse) -> Self {
        ResponseFuture { state: State::Slow { fut } }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    type Output = Result<Response<LlmResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready { res } => {
                Poll::Ready(res.take().unwrap_or_else(|| Err("polled after completion".into())))
            }
            StateProj::Slow { fut } => fut.as_mut().poll(cx),
            StateProj::Calling { fut, shared, plan, flight } => {
                let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                Poll::Ready(Ok(on_response(shared, res, plan.take(), flight.take())))
            }
        }
    }
}
