//! The service: the request as the provider receives it, sent over the shared client.

use super::*;

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
/// Readiness: without `max_connections_per_host` the pool has no fixed
/// capacity and `poll_ready` is always ready. With it (and HTTP/1.1, one
/// request per connection), `poll_ready` waits for one of the host's request
/// slots, shared by every service of the client calling that host, and holds
/// it until the response body ends: a stack above sees the backpressure
/// before it commits to a call (a failover picks another provider, a
/// `tower::load_shed` refuses at once). With `http2_only` requests share
/// connections, and a request waits for a connection inside its future,
/// bounded by the headers timeout.
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
pub struct LlmHttpService {
    /// What every clone shares: a clone is a reference count, not a copy of
    /// the client and the provider (the failover clones a backend's stack
    /// per call).
    pub(crate) shared: Arc<Shared>,
    /// The host's request slots (connection-limited HTTP/1.1 only), and the
    /// one this handle holds after a ready `poll_ready`.
    pub(crate) slots: Option<Slots>,
}

/// The provider, its pool and limits, shared by every clone of a service.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) client: HttpClient,
    pub(crate) provider: Provider,
    pub(crate) timeouts: Timeouts,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_event_bytes: usize,
    pub(crate) counters: Arc<HostCounters>,
}

/// A service handle's view of its host's request slots.
pub(crate) struct Slots {
    pub(crate) sem: tokio_util::sync::PollSemaphore,
    pub(crate) held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Clone for LlmHttpService {
    /// A clone shares the provider, the pool and the host's slots, but not a
    /// slot this handle holds (a clone is polled ready on its own).
    fn clone(&self) -> Self {
        LlmHttpService {
            shared: self.shared.clone(),
            slots: self.slots.as_ref().map(|s| Slots { sem: s.sem.clone(), held: None }),
        }
    }
}

/// The default limit on a non-streamed answer: 8 MiB (a chat answer is a few
/// KiB; a large embeddings batch in float form can need more: raise it, or ask
/// for `encoding_format: "base64"`).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 << 20;

impl std::fmt::Debug for LlmHttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmHttpService")
            .field("provider", &self.shared.provider)
            .field("timeouts", &self.shared.timeouts)
            .field("max_response_bytes", &self.shared.max_response_bytes)
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
        let slots = client.request_slots.map(|max| Slots {
            sem: tokio_util::sync::PollSemaphore::new(client.registry.slots(&key, max)),
            held: None,
        });
        let shared = Arc::new(Shared {
            client,
            provider,
            timeouts: Timeouts::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_event_bytes: llm_tower_core::sse::DEFAULT_MAX_EVENT_BYTES,
            counters,
        });
        Self { shared, slots }
    }

    /// Sets the largest event of a streamed (`text/event-stream`) answer, in
    /// bytes (default 4 MiB, core's `DEFAULT_MAX_EVENT_BYTES`): a longer one
    /// (an upstream that never ends a line or an event) ends the stream with
    /// a typed [`EventTooLarge`](llm_tower_core::EventTooLarge), so memory
    /// stays bounded all the way up the stack.
    pub fn max_event_bytes(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_event_bytes = limit;
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
        Arc::make_mut(&mut self.shared).max_response_bytes = limit;
        self
    }

    /// Sets the time limits.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        Arc::make_mut(&mut self.shared).timeouts = timeouts;
        self
    }

    /// The provider.
    pub fn provider(&self) -> &Provider {
        &self.shared.provider
    }

    /// The client (for its per-host stats).
    pub fn client(&self) -> &HttpClient {
        &self.shared.client
    }

    /// The request as the upstream gets it, the model it is asked for, and
    /// the translation of its answer when the provider speaks another dialect.
    fn prepare(&self, req: Request<LlmBody>) -> Result<Prepared, BoxError> {
        let (mut parts, mut body) = req.into_parts();
        let p = &self.shared.provider;
        // An OpenAI chat completion for a provider that speaks Anthropic
        // Messages: translated here, its answer translated back.
        let mut translation = None;
        let chat = parts.uri.path().ends_with("/chat/completions");
        match p.kind() {
            ProviderKind::Anthropic { .. } if chat => {
                let (b, t) = crate::dialect::anthropic::to_messages(body.as_bytes())?;
                body = LlmBody::from(b);
                parts.uri = http::Uri::from_static("/v1/messages");
                translation = Some(t);
            }
            ProviderKind::Gemini if chat => {
                let (b, stream, t) = crate::dialect::gemini::to_generate_content(body.as_bytes())?;
                body = LlmBody::from(b);
                let model = p.upstream_model(&t.model);
                if !model.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)) {
                    return Err(InvalidRequest::new(format!("invalid Gemini model name {model:?}")).into());
                }
                let path = match stream {
                    true => format!("/v1/models/{model}:streamGenerateContent?alt=sse"),
                    false => format!("/v1/models/{model}:generateContent"),
                };
                parts.uri = http::Uri::try_from(path).map_err(|e| InvalidRequest::new(e.to_string()))?;
                translation = Some(t);
            }
            ProviderKind::OpenAi | ProviderKind::Azure { .. } if parts.uri.path().ends_with("/messages") => {
                let (b, t) = crate::dialect::from_messages::to_chat(body.as_bytes())?;
                body = LlmBody::from(b);
                parts.uri = http::Uri::from_static("/v1/chat/completions");
                translation = Some(t);
            }
            _ => {}
        }
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
        Ok((Request::from_parts(parts, body), served, translation))
    }
}

/// A request ready for the upstream, the model it asks for, and its answer's
/// translation (another dialect).
type Prepared = (Request<LlmBody>, Option<Arc<str>>, Option<Translation>);

impl tower::Service<Request<LlmBody>> for LlmHttpService {
    type Response = Response<LlmResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(s) = &mut self.slots {
            if s.held.is_none() {
                match ready!(s.sem.poll_acquire(cx)) {
                    Some(permit) => s.held = Some(permit),
                    None => return Poll::Ready(Err("the host's request slots are closed".into())),
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<LlmBody>) -> ResponseFuture {
        let caller_deadline = Deadline::of(&req);
        let streamed_request = req.extensions().get::<Arc<RequestInfo>>().is_some_and(|i| i.stream);
        let (mut req, served_model, translation) = match self.prepare(req) {
            Ok(r) => r,
            Err(e) => return ResponseFuture { state: State::Failed { err: Some(e) }, span: None },
        };
        let span = span::AttemptSpan::start(&mut req, &self.shared.provider);
        self.shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        // The slot `poll_ready` took rides with the call until its body ends
        // (a caller that skipped `poll_ready` goes without one).
        let slot = self.slots.as_mut().and_then(|s| s.held.take());
        let guard = InFlight::new(self.shared.counters.clone(), slot);
        let start = Instant::now();
        let t = self.shared.timeouts;
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
                inner: self.shared.client.inner.request(req),
                timer: None,
                ctx: Some(Ctx {
                    deadline,
                    guard,
                    phase,
                    after,
                    total_deadline,
                    caller_deadline,
                    timeouts: t,
                    authority: self.shared.provider.authority().clone(),
                    served_by: self.shared.provider.name_arc(),
                    served_model,
                    streamed_request,
                    max_response_bytes: self.shared.max_response_bytes,
                    max_event_bytes: self.shared.max_event_bytes,
                    translation,
                }),
            },
            span,
        }
    }
}
