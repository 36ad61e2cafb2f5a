//! [`LlmHttpService`], its response future and its response body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use llm_tower_core::LlmResponseBody;
use llm_tower_core::sse::EventSizeLimit;
use llm_tower_core::{
    Api, BadResponse, BadResponseKind, BoxError, Connect, Deadline, InvalidRequest, LlmBody, RequestInfo,
    StreamAborted, Timeout, TimeoutPhase, Transport,
};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::client::{HostCounters, HttpClient, authority_key};
use crate::{Provider, ProviderKind, strip_hop_by_hop};

/// Time limits of one upstream call, by phase. The connect limit lives in
/// [`ClientConfig`](crate::ClientConfig). Each expiry is a typed
/// [`Timeout`] naming its phase.
///
/// ```
/// use std::time::Duration;
/// let t = llm_tower_http::Timeouts { idle: Some(Duration::from_secs(30)), ..Default::default() };
/// assert_eq!(t.total, Some(Duration::from_secs(600)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Until the response head (time to first byte). Non-streamed answers
    /// arrive only when generation ends, so keep this generous; it also bounds
    /// reading a non-streamed answer whole. Default 120 s (a long non-streamed
    /// answer from a slow reasoning model can need more: raise it, or stream).
    pub headers: Option<Duration>,
    /// Between two body chunks: a stalled stream is cut. Default 120 s.
    pub idle: Option<Duration>,
    /// The whole call, body included. Default 600 s (the OpenAI SDK's).
    pub total: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            headers: Some(Duration::from_secs(120)),
            idle: Some(Duration::from_secs(120)),
            total: Some(Duration::from_secs(600)),
        }
    }
}

impl Timeouts {
    /// No limits at all.
    ///
    /// ```
    /// assert_eq!(llm_tower_http::Timeouts::none().total, None);
    /// ```
    pub fn none() -> Self {
        Self { headers: None, idle: None, total: None }
    }
}

/// The hyper-based LLM HTTP service: sends a request to its [`Provider`] and
/// returns its answer.
///
/// A streamed answer (`text/event-stream`, `application/x-ndjson`, or any
/// answer to a request whose [`RequestInfo`] says `stream`) is returned at its
/// head with a body that passes chunks on as they come. Any other answer is
/// read whole first, up to [`max_response_bytes`](Self::max_response_bytes)
/// (default [`DEFAULT_MAX_RESPONSE_BYTES`]), so that the response this service
/// returns is complete: an answer that breaks off, or a 2xx JSON answer that
/// does not parse, becomes a retryable [`BadResponse`] error (no byte of it was
/// passed on, so a retry or failover layer above can try again), and one over
/// the limit a non-retryable one. Layers above then see a body whose
/// `size_hint` is exact.
///
/// A [`Deadline`] in the request's extensions bounds the wait for the answer
/// (the head, and for a non-streamed answer its whole body) together with the
/// [`Timeouts`]; the earlier wins.
///
/// It rewrites the URL for the provider, sets its credentials, replaces an
/// aliased model name (only the `model` field of the body changes), strips
/// hop-by-hop headers and the caller's own credentials, asks for an
/// uncompressed body (`accept-encoding: identity`: the layers above read it),
/// and enforces
/// [`Timeouts`] by phase. Upstream error statuses are returned as responses;
/// transport failures are typed errors ([`Connect`], [`Transport`],
/// [`Timeout`], [`StreamAborted`] from the body).
///
/// `poll_ready` is always ready: the pool has no fixed capacity. With
/// `max_connections_per_host` a request waits for a connection inside its
/// future, bounded by the headers timeout.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
/// use http_body_util::BodyExt;
/// use llm_tower_core::LlmBody;
/// use llm_tower_http::{LlmHttpService, Provider};
/// use tower::ServiceExt;
///
/// let mock = llm_tower_mock::MockServer::start(Default::default()).await?;
/// let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;
/// let svc = LlmHttpService::new(provider);
/// let req = http::Request::post("/v1/chat/completions")
///     .header("content-type", "application/json")
///     .body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#))?;
/// let res = svc.oneshot(req).await?;
/// assert_eq!(res.status(), 200);
/// let body = res.into_body().collect().await?.to_bytes();
/// assert!(body.starts_with(b"{"));
/// # Ok(()) }
/// ```
///
/// # Reads and writes
///
/// - Reads the request's `Arc<RequestInfo>` (stream or not, the model to
///   rewrite for an alias) and core's `Deadline` (it stops waiting there).
/// - Removes hop-by-hop headers and the caller's credentials, adds the
///   provider's; sets `accept-encoding: identity`.
/// - Writes core's `ServedBy` (the provider's name) and `ServedModel` on
///   responses. A non-streamed answer is read whole first (its body is then
///   an exact `LlmResponseBody::full`); a stream is passed on as it comes.
#[derive(Clone)]
pub struct LlmHttpService {
    client: HttpClient,
    provider: Provider,
    timeouts: Timeouts,
    max_response_bytes: usize,
    max_event_bytes: usize,
    counters: Arc<HostCounters>,
}

/// The default limit on a non-streamed answer: 8 MiB (a chat answer is a few
/// KiB; a large embeddings batch in float form can need more: raise it, or ask
/// for `encoding_format: "base64"`).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 << 20;

impl std::fmt::Debug for LlmHttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmHttpService")
            .field("provider", &self.provider)
            .field("timeouts", &self.timeouts)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl LlmHttpService {
    /// A service for `provider` with its own [`HttpClient`] (default config).
    /// Must be called inside a tokio runtime.
    pub fn new(provider: Provider) -> Self {
        Self::with_client(provider, HttpClient::new(Default::default()))
    }

    /// A service for `provider` sharing `client`'s pool.
    pub fn with_client(provider: Provider, client: HttpClient) -> Self {
        let key = authority_key(&format!("{}/", provider.base_url()).parse().unwrap_or_default());
        let counters = client.registry.host(&key);
        Self {
            client,
            provider,
            timeouts: Timeouts::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_event_bytes: llm_tower_core::sse::DEFAULT_MAX_EVENT_BYTES,
            counters,
        }
    }

    /// Sets the largest event of a streamed (`text/event-stream`) answer, in
    /// bytes (default 4 MiB, core's `DEFAULT_MAX_EVENT_BYTES`): a longer one
    /// (an upstream that never ends a line or an event) ends the stream with
    /// a typed [`EventTooLarge`](llm_tower_core::EventTooLarge), so memory
    /// stays bounded all the way up the stack.
    pub fn max_event_bytes(mut self, limit: usize) -> Self {
        self.max_event_bytes = limit;
        self
    }

    /// Sets the largest non-streamed answer read (bytes); a larger one is a
    /// [`BadResponse`] (`TooLarge`, HTTP 502). Streams are not limited by it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
    /// use llm_tower_core::{BadResponse, LlmBody};
    /// use llm_tower_http::{LlmHttpService, Provider};
    /// use tower::ServiceExt;
    ///
    /// let mock = llm_tower_mock::MockServer::start(Default::default()).await?;
    /// let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;
    /// let svc = LlmHttpService::new(provider).max_response_bytes(64);
    /// let req = http::Request::post("/v1/chat/completions")
    ///     .body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#))?;
    /// let err = svc.oneshot(req).await.unwrap_err();
    /// assert!(err.is::<BadResponse>());
    /// # Ok(()) }
    /// ```
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Sets the time limits.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The provider.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The client (for its per-host stats).
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// The request as the upstream gets it, and the model it is asked for.
    fn prepare(&self, req: Request<LlmBody>) -> Result<(Request<LlmBody>, Option<Arc<str>>), BoxError> {
        let (mut parts, mut body) = req.into_parts();
        let p = &self.provider;
        let needs_model = p.has_aliases() || matches!(p.kind(), ProviderKind::Azure { .. });
        let mut upstream_model: Option<Arc<str>> = None;
        if needs_model && !body.as_bytes().is_empty() {
            let model = match parts.extensions.get::<Arc<RequestInfo>>() {
                Some(info) => info.model.clone(),
                None => RequestInfo::parse(Api::from_path(parts.uri.path()), body.as_bytes())?.model,
            };
            let target = p.upstream_model(&model);
            if target != &*model {
                if let Some(b) = llm_tower_core::info::rewrite_model(body.as_bytes(), target) {
                    body = LlmBody::from(b);
                }
                upstream_model = Some(target.into());
            } else {
                upstream_model = Some(model);
            }
        }
        parts.uri = p
            .upstream_uri(parts.uri.path(), parts.uri.query(), upstream_model.as_deref())
            .map_err(InvalidRequest::new)?;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(http::header::HOST);
        parts.headers.remove(http::header::CONTENT_LENGTH);
        // Layers above read response bodies (usage, cache): ask for them uncompressed.
        parts.headers.insert(http::header::ACCEPT_ENCODING, http::HeaderValue::from_static("identity"));
        p.apply_headers(&mut parts.headers);
        parts.version = Version::HTTP_11;
        let served =
            upstream_model.or_else(|| parts.extensions.get::<Arc<RequestInfo>>().map(|i| i.model.clone()));
        Ok((Request::from_parts(parts, body), served))
    }
}

impl tower::Service<Request<LlmBody>> for LlmHttpService {
    type Response = Response<LlmResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<LlmBody>) -> ResponseFuture {
        let caller_deadline = Deadline::of(&req);
        let streamed_request = req.extensions().get::<Arc<RequestInfo>>().is_some_and(|i| i.stream);
        let (req, served_model) = match self.prepare(req) {
            Ok(r) => r,
            Err(e) => return ResponseFuture { state: State::Failed { err: Some(e) } },
        };
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight::new(self.counters.clone());
        let start = Instant::now();
        let t = self.timeouts;
        let total_deadline = t.total.map(|d| start + d);
        let (mut phase, mut after) = match (t.headers, t.total) {
            (Some(h), Some(tot)) if tot < h => (TimeoutPhase::Total, Some(tot)),
            (Some(h), _) => (TimeoutPhase::Headers, Some(h)),
            (None, tot) => (TimeoutPhase::Total, tot),
        };
        let mut deadline = after.map(|d| start + d);
        if let Some(c) = caller_deadline
            && deadline.is_none_or(|d| c < d)
        {
            deadline = Some(c);
            phase = TimeoutPhase::Headers;
            after = Some(c.saturating_duration_since(start));
        }
        ResponseFuture {
            state: State::Waiting {
                inner: self.client.inner.request(req),
                timer: None,
                ctx: Some(Ctx {
                    deadline,
                    guard,
                    phase,
                    after,
                    total_deadline,
                    caller_deadline,
                    timeouts: t,
                    authority: self.provider.authority().clone(),
                    served_by: self.provider.name_arc(),
                    served_model,
                    streamed_request,
                    max_response_bytes: self.max_response_bytes,
                    max_event_bytes: self.max_event_bytes,
                }),
            },
        }
    }
}

/// Counts a request in flight until the response body ends or is dropped.
struct InFlight(Arc<HostCounters>);

impl InFlight {
    fn new(c: Arc<HostCounters>) -> Self {
        c.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(c)
    }
    fn fail(&self) {
        self.0.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Ctx {
    /// When the head must have arrived (the earlier of headers and total).
    deadline: Option<Instant>,
    guard: InFlight,
    phase: TimeoutPhase,
    after: Option<Duration>,
    total_deadline: Option<Instant>,
    /// The request's [`Deadline`]: a non-streamed answer must be read by then.
    caller_deadline: Option<Instant>,
    timeouts: Timeouts,
    authority: Authority,
    served_by: Arc<str>,
    served_model: Option<Arc<str>>,
    streamed_request: bool,
    max_response_bytes: usize,
    max_event_bytes: usize,
}

pin_project! {
    /// Response future of [`LlmHttpService`].
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Waiting {
            #[pin]
            inner: hyper_util::client::legacy::ResponseFuture,
            // One timer per call, created only if the head is not ready at
            // once, then handed to the body: each new tokio timer can wake the
            // timer driver, which measured ~6 µs per request on a
            // multi-threaded runtime; one boxed timer re-armed lazily does not.
            timer: Option<Pin<Box<Sleep>>>,
            ctx: Option<Ctx>,
        },
        // A non-streamed answer being read whole (boxed: the cold path of
        // the future's size).
        Reading {
            read: Option<Box<Reading>>,
        },
        Failed {
            err: Option<BoxError>,
        },
    }
}

/// A non-streamed answer being collected before its head is returned.
struct Reading {
    parts: http::response::Parts,
    body: Streaming,
    /// The first chunk (most answers are one), then the rest appended.
    first: Option<Bytes>,
    rest: BytesMut,
    len: usize,
    limit: usize,
    /// A 2xx JSON answer: checked to parse before it is returned.
    check_json: bool,
}

impl Reading {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response<LlmResponseBody>, BoxError>> {
        loop {
            match ready!(self.body.poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    self.len = self.len.saturating_add(data.len());
                    if self.len > self.limit {
                        self.body.fail();
                        return Poll::Ready(Err(BadResponse::new(BadResponseKind::TooLarge {
                            limit: self.limit,
                        })
                        .into()));
                    }
                    match self.first.as_ref() {
                        None if self.rest.is_empty() => self.first = Some(data),
                        _ => {
                            if let Some(first) = self.first.take() {
                                self.rest.reserve(self.len);
                                self.rest.extend_from_slice(&first);
                            }
                            self.rest.extend_from_slice(&data);
                        }
                    }
                }
                Some(Err(e)) => {
                    // A timeout keeps its type (retryable, and the deadline
                    // logic of a retry layer reads its phase); a broken body
                    // is an answer cut before anything was passed on.
                    if e.is::<Timeout>() {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Err(BadResponse::cut(e).into()));
                }
                None => {
                    let bytes = match self.first.take() {
                        Some(b) => b,
                        None => std::mem::take(&mut self.rest).freeze(),
                    };
                    if self.check_json && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
                        return Poll::Ready(Err(BadResponse::new(BadResponseKind::InvalidJson).into()));
                    }
                    let mut parts = std::mem::replace(&mut self.parts, Response::new(()).into_parts().0);
                    parts.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
                    let body = LlmResponseBody::full(bytes);
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
            }
        }
    }
}

/// Whether an answer is a stream (passed on as it comes) rather than one
/// document (read whole first).
fn is_streamed(headers: &http::HeaderMap, streamed_request: bool) -> bool {
    if streamed_request {
        return true;
    }
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        let ct = ct.trim_start();
        ct.starts_with("text/event-stream") || ct.starts_with("application/x-ndjson")
    })
}

fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"))
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"))
}

impl Future for ResponseFuture {
    type Output = Result<Response<LlmResponseBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Failed { err } => {
                    return Poll::Ready(Err(err.take().unwrap_or_else(|| "polled after completion".into())));
                }
                StateProj::Reading { read } => {
                    let r = read.as_mut().expect("polled after completion");
                    let out = ready!(r.poll_read(cx));
                    *read = None;
                    return Poll::Ready(out);
                }
                StateProj::Waiting { inner, timer, ctx } => {
                    let outcome = match inner.poll(cx) {
                        Poll::Ready(r) => r,
                        Poll::Pending => {
                            let Some(deadline) = ctx.as_ref().and_then(|c| c.deadline) else {
                                return Poll::Pending;
                            };
                            let t = timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                            if t.as_mut().poll(cx).is_ready() {
                                let c = ctx.take().expect("polled after completion");
                                c.guard.fail();
                                let after = c.after.unwrap_or_default();
                                return Poll::Ready(Err(Timeout { phase: c.phase, after }.into()));
                            }
                            return Poll::Pending;
                        }
                    };
                    let c = ctx.take().expect("polled after completion");
                    match outcome {
                        Ok(res) => {
                            let (mut parts, incoming) = res.into_parts();
                            strip_hop_by_hop(&mut parts.headers);
                            parts.extensions.insert(llm_tower_core::ServedBy(c.served_by));
                            if let Some(m) = c.served_model {
                                parts.extensions.insert(llm_tower_core::ServedModel(m));
                            }
                            if is_streamed(&parts.headers, c.streamed_request) {
                                let mut body = Streaming::new(
                                    incoming,
                                    c.timeouts,
                                    c.total_deadline,
                                    c.guard,
                                    timer.take(),
                                );
                                if is_event_stream(&parts.headers) {
                                    body.events = Some(EventSizeLimit::new(c.max_event_bytes));
                                }
                                let body = LlmResponseBody::new(body);
                                return Poll::Ready(Ok(Response::from_parts(parts, body)));
                            }
                            // Read whole, by the earlier of the total limit and the caller's deadline.
                            let total_deadline = match (c.total_deadline, c.caller_deadline) {
                                (Some(t), Some(d)) => Some(t.min(d)),
                                (t, d) => t.or(d),
                            };
                            let check_json = parts.status.is_success() && is_json(&parts.headers);
                            let body =
                                Streaming::new(incoming, c.timeouts, total_deadline, c.guard, timer.take());
                            let len_hint = body.inner.size_hint().lower() as usize;
                            let limit = c.max_response_bytes;
                            if len_hint > limit {
                                body.fail();
                                return Poll::Ready(Err(BadResponse::new(BadResponseKind::TooLarge {
                                    limit,
                                })
                                .into()));
                            }
                            let read = Reading {
                                parts,
                                body,
                                first: None,
                                rest: BytesMut::new(),
                                len: 0,
                                limit,
                                check_json,
                            };
                            State::Reading { read: Some(Box::new(read)) }
                        }
                        Err(e) => {
                            c.guard.fail();
                            return Poll::Ready(Err(map_client_error(e, &c.authority)));
                        }
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

/// Turns a hyper-util client error into our typed errors.
fn map_client_error(e: hyper_util::client::legacy::Error, authority: &Authority) -> BoxError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<Timeout>() {
            return Box::new(*t);
        }
        cur = err.source();
    }
    if e.is_connect() { Box::new(Connect::new(authority.as_str(), e)) } else { Box::new(Transport::new(e)) }
}

/// A streamed upstream body with idle and total timeouts.
///
/// One timer serves both limits and is re-armed lazily: a chunk only records
/// when it arrived; when the timer fires, the body checks the idle and total
/// deadlines and either fails or re-arms for the earlier one.
struct Streaming {
    inner: Incoming,
    timer: Option<Pin<Box<Sleep>>>,
    timeouts: Timeouts,
    total_deadline: Option<Instant>,
    last_activity: Instant,
    guard: Option<InFlight>,
    /// The per-event size limit of an event stream.
    events: Option<EventSizeLimit>,
}

impl Streaming {
    fn new(
        inner: Incoming,
        timeouts: Timeouts,
        total_deadline: Option<Instant>,
        guard: InFlight,
        timer: Option<Pin<Box<Sleep>>>,
    ) -> Self {
        Streaming {
            inner,
            timer,
            timeouts,
            total_deadline,
            last_activity: Instant::now(),
            guard: Some(guard),
            events: None,
        }
    }

    /// The deadline to wait for now: the earlier of idle and total.
    fn deadline(&self) -> Option<Instant> {
        let idle = self.timeouts.idle.map(|d| self.last_activity + d);
        match (idle, self.total_deadline) {
            (Some(i), Some(t)) => Some(i.min(t)),
            (i, t) => i.or(t),
        }
    }

    /// `Some(timeout)` if a limit has expired; otherwise arms the timer
    /// for the next deadline and registers the waker.
    fn check_deadlines(&mut self, cx: &mut Context<'_>) -> Option<Timeout> {
        loop {
            let deadline = self.deadline()?;
            let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = Instant::now();
            if self.total_deadline.is_some_and(|t| t <= now) {
                return Some(Timeout {
                    phase: TimeoutPhase::Total,
                    after: self.timeouts.total.unwrap_or_default(),
                });
            }
            if self.timeouts.idle.is_some_and(|d| self.last_activity + d <= now) {
                return Some(Timeout {
                    phase: TimeoutPhase::Idle,
                    after: self.timeouts.idle.unwrap_or_default(),
                });
            }
            // Fired for a deadline that has since moved (a chunk arrived): re-arm.
        }
    }
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Streaming::poll_frame(&mut self, cx)
    }

    fn is_end_stream(&self) -> bool {
        self.guard.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Streaming {
    /// Ends the call as failed (counted as an upstream error).
    fn fail(&self) {
        if let Some(g) = &self.guard {
            g.fail();
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        let Some(guard) = this.guard.as_ref() else { return Poll::Ready(None) };
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.timeouts.idle.is_some() {
                    this.last_activity = Instant::now();
                }
                if let (Some(limit), Some(data)) = (this.events.as_mut(), frame.data_ref())
                    && let Err(e) = limit.check(data)
                {
                    guard.fail();
                    this.guard = None;
                    this.timer = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                guard.fail();
                this.guard = None;
                Poll::Ready(Some(Err(StreamAborted::new(e).into())))
            }
            Poll::Ready(None) => {
                this.guard = None;
                this.timer = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.check_deadlines(cx) {
                None => Poll::Pending,
                Some(t) => {
                    if let Some(g) = this.guard.take() {
                        g.fail();
                    }
                    Poll::Ready(Some(Err(t.into())))
                }
            },
        }
    }
}
