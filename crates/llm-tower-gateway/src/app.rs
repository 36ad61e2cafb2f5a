//! The gateway service: routes, the proxy handler, errors, access log, serving.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use llm_tower::auth::{Auth, AuthLayer};
use llm_tower::config::AuthMode;
use llm_tower::core::chat::ModelList;
use llm_tower::core::edge::{EdgeError, LlmEdge, LlmEdgeLayer};
use llm_tower::core::response::{BodyEnd, BodyObserver};
use llm_tower::core::tenant::{Tenant, TenantLayer};
use llm_tower::core::usage::{BodyKind, UsageReport};
use llm_tower::core::{
    BoxError, ErrorInfo, LlmBody, LlmResponseBody, ModelNotFound, RequestInfo, Secret, ServedBy,
};
use llm_tower::mock::MockServer;
use llm_tower::upstream::HttpClient;
use llm_tower::{Llm, LlmService};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::util::Either;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;

use crate::GatewayConfig;
use crate::admin;
use crate::keys::{self, Identities};
use crate::observe::{self, InFlight, RequestLabels, RequestMetrics};
use llm_tower::config::MetricsAccess;
use llm_tower::config::{BuildError, ConfigError};

/// Why the gateway could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is invalid (every problem found).
    Config(Vec<ConfigError>),
    /// A socket could not be opened.
    Io(io::Error),
    /// The state file could not be opened or read, or a key not loaded.
    State(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(errs) => {
                writeln!(f, "invalid configuration:")?;
                for e in errs {
                    writeln!(f, "  {e}")?;
                }
                Ok(())
            }
            StartError::Io(e) => write!(f, "{e}"),
            StartError::State(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

pub(crate) struct AppState {
    /// The whole stack, built by `LlmStack` (as library users build it).
    pub(crate) llm: Llm,
    /// The request metrics' handles (by API, served model and status).
    pub(crate) request_metrics: Arc<RequestMetrics>,
    /// Who may read `/metrics`.
    pub(crate) metrics: MetricsAccess,
    /// Set when shutdown starts: `/health/ready` answers 503 from then on.
    pub(crate) draining: AtomicBool,
    /// Virtual keys and the state file.
    pub(crate) identities: Identities,
    /// The shared Redis, and whether requests are refused while it is down.
    pub(crate) redis: Option<(llm_tower::redis::Redis, bool)>,
    /// `/stats` without the admin token.
    pub(crate) stats_public: bool,
    /// Trace export, when `[traces]` is set.
    #[cfg(feature = "otlp")]
    traces: Option<crate::traces::Traces>,
    pub(crate) tenant_header: http::HeaderName,
    /// The LLM routes: the edge, the tenant, the model check, the stack.
    proxy: Proxy,
    pub(crate) admin_token: Option<Secret>,
    models_json: Bytes,
    /// Each model's own JSON (`GET /v1/models/{id}`).
    model_json: std::collections::HashMap<String, Bytes>,
    mocks: Vec<(String, MockServer)>,
}

/// The OpenAI-compatible gateway: build it from a config, then serve it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use llm_tower_gateway::{Gateway, GatewayConfig};
/// let gw = Gateway::new(GatewayConfig::embedded_default()).await?;
/// assert!(gw.models().contains(&"gpt-4o-mini".to_string()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = tokio::spawn(gw.serve(listener, async {}, std::time::Duration::from_secs(1)));
/// server.await??;
/// # Ok(()) }
/// ```
pub struct Gateway {
    router: Router,
    state: Arc<AppState>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("models", &self.models()).finish()
    }
}

impl Gateway {
    /// Validates `config`, starts in-process mock providers, and builds the
    /// stack from it with [`LlmStack`](llm_tower::LlmStack) — the same builder
    /// library users call ([`StackConfig::build`](llm_tower::config::StackConfig::build)) — and the router.
    pub async fn new(config: GatewayConfig) -> Result<Self, StartError> {
        let built = config.build().await.map_err(|e| match e {
            BuildError::Config(errs) => StartError::Config(errs),
            BuildError::Io(e) => StartError::Io(e),
        })?;
        let llm = built.llm;
        let model_json = built
            .models
            .iter()
            .map(|m| (m.id.clone(), Bytes::from(serde_json::to_vec(m).expect("serializable"))))
            .collect();
        let models_json =
            Bytes::from(serde_json::to_vec(&ModelList::new(built.models)).expect("serializable"));
        let tenant_header =
            http::HeaderName::from_bytes(config.tenants.header.as_bytes()).expect("validated");
        let mocks = built.mocks;
        // The same pieces a library user composes: the edge (body limit, one
        // parse, the deadline, OpenAI-format errors, stream guard), then who
        // the request spends as, then the stack.
        let mut edge = LlmEdgeLayer::new().max_body_bytes(config.server.max_body_bytes);
        if let Some(limit) = config.deadline() {
            edge = edge.deadline(limit);
        }
        let known = KnownModels {
            models: Arc::new(llm.models().into_iter().collect()),
            inner: llm.service().clone(),
        };
        let redis = built.redis;
        let identities = Identities::load(&config, &llm, redis.as_ref())
            .await
            .map_err(|e| StartError::State(e.to_string()))?;
        // Who the request spends as: the key's name (keys mode), the tenant
        // header when the operator trusts it (open mode), else nobody.
        let mode = config.auth.mode;
        let auth = (mode == AuthMode::Keys).then(|| AuthLayer::new(identities.keys.clone()));
        let header = (mode == AuthMode::Open && config.auth.trust_tenant_header)
            .then(|| TenantLayer::header(tenant_header.clone()));
        let llm_routes =
            ServiceBuilder::new().layer(edge).option_layer(auth).option_layer(header).service(known);
        #[cfg(feature = "otlp")]
        let traces = match &config.traces {
            Some(t) => Some(
                crate::traces::Traces::start(t, llm.http_client().clone())
                    .map_err(|e| StartError::Config(vec![ConfigError::at("traces", "", e.to_string())]))?,
            ),
            None => None,
        };
        #[cfg(not(feature = "otlp"))]
        if config.traces.is_some() {
            let msg = "trace export needs the gateway built with its `otlp` feature";
            return Err(StartError::Config(vec![ConfigError::at("traces", "", msg)]));
        }
        let metrics = config.server.metrics;
        if metrics != MetricsAccess::Off {
            observe::prometheus();
        }
        let state = Arc::new(AppState {
            request_metrics: Arc::new(RequestMetrics::new(llm.models())),
            metrics,
            draining: AtomicBool::new(false),
            identities,
            redis: redis.map(|r| {
                let closed = config
                    .state
                    .as_ref()
                    .is_some_and(|s| s.on_redis_error == llm_tower::config::OnRedisErrorKind::Closed);
                (r, closed)
            }),
            stats_public: config.server.stats_public,
            #[cfg(feature = "otlp")]
            traces,
            llm,
            tenant_header,
            proxy: llm_routes,
            admin_token: config.admin_token(),
            models_json,
            model_json,
            mocks,
        });
        let mut router = Router::new();
        if state.admin_token.is_some() {
            router = router.route("/admin/cache/invalidate", post(admin::invalidate_cache));
            if mode == AuthMode::Keys {
                router = router
                    .route("/admin/keys", get(keys::list).post(keys::create))
                    .route("/admin/keys/reload", post(keys::reload))
                    .route("/admin/keys/{name}", axum::routing::patch(keys::update).delete(keys::revoke));
            }
        }
        if state.admin_token.is_some() || state.stats_public {
            router = router.route("/stats", get(admin::stats));
        }
        if metrics != MetricsAccess::Off {
            router = router.route("/metrics", get(observe::metrics));
        }
        let router = router
            .route("/health/live", get(observe::live))
            .route("/health/ready", get(observe::ready))
            .route("/v1/chat/completions", post(proxy))
            .route("/v1/embeddings", post(proxy))
            .route("/v1/responses", post(proxy))
            .route("/v1/messages", post(proxy))
            .route("/v1/models", get(models))
            .route("/v1/models/{*id}", get(model))
            .route("/health", get(health))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(CatchPanicLayer::custom(on_panic))
            .with_state(state.clone());
        Ok(Gateway { router, state })
    }

    /// The public model names served, sorted.
    pub fn models(&self) -> Vec<String> {
        self.state.llm.models()
    }

    /// The shared upstream client (per-host connection stats).
    pub fn client(&self) -> &HttpClient {
        self.state.llm.http_client()
    }

    /// The in-process mock behind provider `name` (`kind = "mock"`): its URL,
    /// fault plan and stats, for benchmarks and demos.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let gw = llm_tower_gateway::Gateway::new(llm_tower_gateway::GatewayConfig::embedded_default()).await?;
    /// let mock = gw.mock("mock").expect("the default config's provider is a mock");
    /// assert_eq!(mock.stats().llm_requests, 0);
    /// assert!(gw.mock("openai").is_none());
    /// # Ok(()) }
    /// ```
    pub fn mock(&self, name: &str) -> Option<&MockServer> {
        self.state.mocks.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }

    /// The stack behind the routes.
    pub fn llm(&self) -> &Llm {
        &self.state.llm
    }

    /// The axum router, to embed the gateway in a larger app.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves on `listener` (TCP_NODELAY on every accepted socket) until
    /// `shutdown` completes; then stops accepting and lets in-flight requests
    /// finish for at most `grace`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> io::Result<()> {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = self.state.clone();
        let signal = async move {
            shutdown.await;
            state.draining.store(true, Ordering::Release);
            tracing::info!("shutting down: draining in-flight requests");
            let _ = tx.send(());
        };
        let server = axum::serve(listener, self.router).with_graceful_shutdown(signal);
        let deadline = async move {
            if rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let served = tokio::select! {
            r = server.into_future() => r,
            _ = deadline => {
                tracing::warn!(grace_secs = grace.as_secs_f64(), "shutdown grace period over: closing remaining connections");
                Ok(())
            }
        };
        // The last second of spend and usage, to the state file; the last spans.
        self.state.identities.shutdown().await;
        #[cfg(feature = "otlp")]
        if let Some(t) = &self.state.traces {
            t.shutdown().await;
        }
        served
    }
}

pub(crate) fn error(err: &(dyn std::error::Error + 'static)) -> Response {
    ErrorInfo::from_error(err).into_response().map(AxumBody::new)
}

async fn health() -> Response {
    json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

/// `GET /v1/models`: in keys mode, with a key, the models its grant allows.
async fn models(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let allowed = match keys::caller(&app, req.headers()) {
        Ok(id) => id.and_then(|id| id.record().grant.models.clone()),
        Err(refused) => return *refused,
    };
    let Some(allowed) = allowed else {
        return json(StatusCode::OK, app.models_json.clone());
    };
    let mut body = b"{\"object\":\"list\",\"data\":[".to_vec();
    let mut ids: Vec<&String> = allowed.iter().filter(|m| app.model_json.contains_key(*m)).collect();
    ids.sort_unstable();
    ids.dedup();
    for (i, m) in ids.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&app.model_json[m]);
    }
    body.extend_from_slice(b"]}");
    json(StatusCode::OK, Bytes::from(body))
}

/// `GET /v1/models/{id}` (the SDKs' `models.retrieve`); ids may contain `/`.
async fn model(State(app): State<Arc<AppState>>, Path(id): Path<String>, req: Request) -> Response {
    let grant_allows = match keys::caller(&app, req.headers()) {
        Ok(who) => who.is_none_or(|w| w.record().grant.allows(&id)),
        Err(refused) => return *refused,
    };
    match app.model_json.get(&id).filter(|_| grant_allows) {
        Some(body) => json(StatusCode::OK, body.clone()),
        None => error(&ModelNotFound::new(&id)),
    }
}

pub(crate) fn json(status: StatusCode, body: Bytes) -> Response {
    let mut res = Response::new(AxumBody::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

async fn not_found(req: Request) -> Response {
    let msg = format!("Unknown request URL: {} {}", req.method(), req.uri().path());
    ErrorInfo::new(StatusCode::NOT_FOUND, "invalid_request_error", msg).into_response().map(AxumBody::new)
}

async fn method_not_allowed(req: Request) -> Response {
    let msg = format!("Method {} is not allowed for {}", req.method(), req.uri().path());
    ErrorInfo::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", msg)
        .into_response()
        .map(AxumBody::new)
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> http::Response<http_body_util::Full<Bytes>> {
    tracing::error!("request handler panicked");
    let info = ErrorInfo::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error");
    let res = info.into_response();
    res.map(|b| http_body_util::Full::new(b.into_bytes()))
}

/// Who a request is: its key, a trusted tenant header, or nobody.
type Identify<S> = Either<Auth<Either<Tenant<S>, S>>, Either<Tenant<S>, S>>;

/// The gateway's LLM routes.
type Proxy = LlmEdge<Identify<KnownModels>>;

/// Refuses a model no route serves (404 `model_not_found`) before the stack.
#[derive(Clone)]
struct KnownModels {
    /// foldhash, as the failover's routes: fixed keys from the
    /// configuration, one lookup a request by the client's model name.
    models: Arc<HashSet<String, foldhash::fast::RandomState>>,
    inner: LlmService,
}

impl tower::Service<http::Request<LlmBody>> for KnownModels {
    type Response = http::Response<LlmResponseBody>;
    type Error = BoxError;
    type Future = KnownFuture<<LlmService as tower::Service<http::Request<LlmBody>>>::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<LlmBody>) -> Self::Future {
        match RequestInfo::get(&req) {
            Some(info) if !self.models.contains(&*info.model) => {
                KnownFuture::Refused { err: Some(ModelNotFound::new(&*info.model).into()) }
            }
            _ => KnownFuture::Calling { fut: self.inner.call(req) },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = KnownProj]
    enum KnownFuture<F> {
        Refused { err: Option<BoxError> },
        Calling { #[pin] fut: F },
    }
}

impl<F, T> Future for KnownFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            KnownProj::Calling { fut } => fut.poll(cx),
            KnownProj::Refused { err } => {
                std::task::Poll::Ready(Err(err.take().unwrap_or_else(|| "polled after completion".into())))
            }
        }
    }
}

/// A gateway request's span (`[traces]`); nothing without the `otlp` feature.
#[cfg(feature = "otlp")]
type Span = crate::traces::Request;
#[cfg(not(feature = "otlp"))]
type Span = std::convert::Infallible;

#[cfg(feature = "otlp")]
fn begin_span(app: &AppState, req: &mut Request) -> Option<Span> {
    let span = app.traces.as_ref()?.begin(req.headers());
    req.extensions_mut().insert(span.traced.clone());
    Some(span)
}

#[cfg(not(feature = "otlp"))]
fn begin_span(_: &AppState, _: &mut Request) -> Option<Span> {
    None
}

/// What a request's span records when it ends.
#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
struct SpanEnd<'a> {
    method: &'a Method,
    path: &'a str,
    model: &'a str,
    provider: &'a str,
    key: Option<&'a llm_tower::auth::Identity>,
    status: StatusCode,
    report: Option<&'a UsageReport>,
    error: Option<&'a str>,
}

#[cfg(feature = "otlp")]
fn end_span(span: Option<Span>, e: SpanEnd<'_>) {
    if let Some(s) = span {
        crate::traces::request_span(
            s, e.method, e.path, e.model, e.provider, e.key, e.status, e.report, e.error,
        );
    }
}

#[cfg(not(feature = "otlp"))]
fn end_span(span: Option<Span>, _: SpanEnd<'_>) {
    if let Some(never) = span {
        match never {}
    }
}

async fn proxy(State(app): State<Arc<AppState>>, mut req: Request) -> Response {
    let start = Instant::now();
    let span = begin_span(&app, &mut req);
    let in_flight = InFlight::start(&app.request_metrics);
    let method = req.method().clone();
    let path: Arc<str> = req.uri().path().into();
    let res = match app.proxy.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    let (parts, mut body) = res.into_parts();
    let status = parts.status;
    let model = parts.extensions.get::<Arc<RequestInfo>>().map(|i| i.model.clone());
    let served: Option<Arc<str>> = parts.extensions.get::<ServedBy>().map(|s| s.0.clone());
    let labels = RequestLabels::new(&app.request_metrics, &path, model.as_deref());
    // Named by its name and hash prefix, never by the key.
    let key = llm_tower::auth::identity(&parts.extensions).cloned();
    if let Some(EdgeError(e)) = parts.extensions.get::<EdgeError>() {
        log_error(&method, &path, model.as_deref(), served.as_deref(), status, start, e);
        let end = SpanEnd {
            method: &method,
            path: &path,
            model: model.as_deref().unwrap_or("-"),
            provider: served.as_deref().unwrap_or("-"),
            key: key.as_deref(),
            status,
            report: None,
            error: Some(e),
        };
        end_span(span, end);
        labels.finished(status, start.elapsed());
        return Response::from_parts(parts, AxumBody::new(body));
    }
    let headers_at = start.elapsed();
    let kind = BodyKind::from_headers(&parts.headers);
    let provider = served.unwrap_or_else(|| Arc::from("-"));
    let model = model.unwrap_or_else(|| Arc::from("-"));
    let streamed = kind == BodyKind::Sse;
    let log = move |report: UsageReport, first_data: Option<Instant>| {
        access_log(&method, &path, &model, &provider, key.as_deref(), status, headers_at, start, &report);
        let end = SpanEnd {
            method: &method,
            path: &path,
            model: &model,
            provider: &provider,
            key: key.as_deref(),
            status,
            report: Some(&report),
            error: None,
        };
        end_span(span, end);
        if let Some(at) = first_data.filter(|_| streamed) {
            labels.first_token(at.saturating_duration_since(start));
        }
        labels.finished(status, start.elapsed());
        drop(in_flight);
    };
    // The access line and the request's metrics, written when the body ends,
    // with the usage the body's one meter read (and any estimate accounting
    // filled in).
    body.observe(AccessLog { kind, log: Some(log), first_data: None });
    Response::from_parts(parts, AxumBody::new(body))
}

/// Writes a request's access line when its answer's body ends.
struct AccessLog<F> {
    kind: BodyKind,
    log: Option<F>,
    /// When the first bytes of the answer passed (a stream's first event).
    first_data: Option<Instant>,
}

impl<F: FnOnce(UsageReport, Option<Instant>) + Send + 'static> BodyObserver for AccessLog<F> {
    fn wants_usage(&self) -> Option<BodyKind> {
        Some(self.kind)
    }

    fn on_data(&mut self, _: &Bytes) {
        if self.first_data.is_none() {
            self.first_data = Some(Instant::now());
        }
    }

    fn on_end(mut self: Box<Self>, end: &mut BodyEnd) {
        if let Some(log) = self.log.take() {
            log(end.report.clone().unwrap_or_else(|| UsageReport::ended(end.end)), self.first_data);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn access_log(
    method: &Method,
    path: &str,
    model: &str,
    provider: &str,
    key: Option<&llm_tower::auth::Identity>,
    status: StatusCode,
    headers_at: Duration,
    start: Instant,
    report: &UsageReport,
) {
    let usage = report.usage.unwrap_or_default();
    tracing::info!(
        target: "llm_tower_gateway::access",
        method = %method,
        path,
        gen_ai.request.model = model,
        gen_ai.provider.name = provider,
        key = key.map(tracing::field::display),
        status = status.as_u16(),
        ttfb_ms = headers_at.as_secs_f64() * 1e3,
        duration_ms = start.elapsed().as_secs_f64() * 1e3,
        gen_ai.usage.input_tokens = usage.input,
        gen_ai.usage.output_tokens = usage.output,
        gen_ai.response.finish_reasons = report.finish_reason.as_deref().unwrap_or(""),
        end = ?report.end,
        "request"
    );
}

fn log_error(
    method: &Method,
    path: &str,
    model: Option<&str>,
    provider: Option<&str>,
    status: StatusCode,
    start: Instant,
    error: &str,
) {
    tracing::warn!(
        target: "llm_tower_gateway::access",
        method = %method,
        path,
        gen_ai.request.model = model.unwrap_or(""),
        gen_ai.provider.name = provider.unwrap_or(""),
        status = status.as_u16(),
        duration_ms = start.elapsed().as_secs_f64() * 1e3,
        error,
        "request failed"
    );
}
