//! The gateway service: routes, the proxy handler, errors, access log, serving.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use llm_tower::Llm;
use llm_tower_cache::CacheKey;
use llm_tower_core::chat::ModelList;
use llm_tower_core::response::{BodyEnd, BodyObserver};
use llm_tower_core::usage::{BodyKind, UsageReport};
use llm_tower_core::{
    Api, Deadline, ErrorInfo, InvalidRequest, LlmBody, ModelNotFound, PayloadTooLarge, RequestInfo, Secret,
    ServedBy, Timeout, TimeoutPhase, Upstream,
};
use llm_tower_http::HttpClient;
use llm_tower_mock::MockServer;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;

use crate::GatewayConfig;
use llm_tower::config::{BuildError, ConfigError};

/// Why the gateway could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is invalid (every problem found).
    Config(Vec<ConfigError>),
    /// A socket could not be opened.
    Io(io::Error),
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
        }
    }
}

impl std::error::Error for StartError {}

struct AppState {
    /// The whole stack, built by `LlmStack` (as library users build it).
    llm: Llm,
    tenant_header: http::HeaderName,
    models: HashSet<String>,
    admin_token: Option<Secret>,
    models_json: Bytes,
    /// Each model's own JSON (`GET /v1/models/{id}`).
    model_json: std::collections::HashMap<String, Bytes>,
    max_body: usize,
    /// The longest a client waits for an answer to start (`server.deadline_ms`).
    deadline: Option<Duration>,
    _mocks: Vec<MockServer>,
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
        let state = Arc::new(AppState {
            models: llm.models().into_iter().collect(),
            llm,
            tenant_header,
            admin_token: config.admin_token(),
            models_json,
            model_json,
            max_body: config.server.max_body_bytes,
            deadline: config.deadline(),
            _mocks: mocks,
        });
        let mut router = Router::new();
        if state.admin_token.is_some() {
            router = router.route("/admin/cache/invalidate", post(invalidate_cache));
        }
        let router = router
            .route("/v1/chat/completions", post(proxy))
            .route("/v1/embeddings", post(proxy))
            .route("/v1/responses", post(proxy))
            .route("/v1/messages", post(proxy))
            .route("/v1/models", get(models))
            .route("/v1/models/{*id}", get(model))
            .route("/health", get(health))
            .route("/stats", get(stats))
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
        let signal = async move {
            shutdown.await;
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
        tokio::select! {
            r = server.into_future() => r,
            _ = deadline => {
                tracing::warn!(grace_secs = grace.as_secs_f64(), "shutdown grace period over: closing remaining connections");
                Ok(())
            }
        }
    }
}

fn error(err: &(dyn std::error::Error + 'static)) -> Response {
    ErrorInfo::from_error(err).into_response().map(AxumBody::new)
}

async fn health() -> Response {
    json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

/// `GET /stats`: per provider, its breaker (state per key) and retry counters;
/// per upstream host, its connections and requests.
async fn stats(State(app): State<Arc<AppState>>) -> Response {
    let llm = &app.llm;
    let providers: Vec<serde_json::Value> = llm
        .providers()
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": &*p.name,
                "circuit_breaker": p.breaker.stats(),
                "retry": p.retry.stats(),
                "rate_limit": p.limiter.stats(),
            })
        })
        .collect();
    let tenants = llm.tenant_limits().map(|t| {
        let overrides: serde_json::Map<String, serde_json::Value> = t
            .overrides()
            .iter()
            .map(|(name, l)| (name.clone(), serde_json::to_value(l.stats()).unwrap_or_default()))
            .collect();
        serde_json::json!({
            "header": app.tenant_header.as_str(),
            "default": t.default_layer().map(|l| l.stats()),
            "overrides": overrides,
        })
    });
    let body = serde_json::json!({
        "providers": providers,
        "backends": llm.failover().stats(),
        "tenants": tenants,
        "usage": llm.accounting().map(|a| a.ledger().entries()),
        "cache": llm.cache().map(|c| c.stats()),
        "upstream_hosts": llm.http_client().stats(),
    });
    json(StatusCode::OK, Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
}

/// Constant-time comparison (the token's length is not secret).
fn same_token(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `POST /admin/cache/invalidate` with `{"key": "<hex>"}`, `{"tenant": "<name>"}`
/// or `{"all": true}`; `authorization: Bearer <server.admin_token>`.
async fn invalidate_cache(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let want = app.admin_token.as_ref().map(|t| t.expose().as_bytes()).unwrap_or_default();
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if want.is_empty() || !same_token(given.as_bytes(), want) {
        let mut info =
            ErrorInfo::new(StatusCode::UNAUTHORIZED, "invalid_request_error", "invalid admin token");
        info.code = Some("invalid_api_key");
        return info.into_response().map(AxumBody::new);
    }
    let Some(cache) = app.llm.cache() else {
        return error(&InvalidRequest::new("the cache is not configured"));
    };
    let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(&InvalidRequest::new("could not read the request body")),
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Invalidate {
        key: Option<String>,
        tenant: Option<String>,
        #[serde(default)]
        all: bool,
    }
    let what = match serde_json::from_slice::<Invalidate>(&body) {
        Ok(w) => w,
        Err(e) => return error(&InvalidRequest::new(format!("invalid body: {e}"))),
    };
    let done = match (what.key, what.tenant, what.all) {
        (Some(k), None, false) => match k.parse::<CacheKey>() {
            Ok(key) => {
                cache.invalidate(key).await;
                serde_json::json!({"invalidated": "key", "key": k})
            }
            Err(_) => {
                return error(&InvalidRequest::new("key: not a cache key (32 hex digits)").with_param("key"));
            }
        },
        (None, Some(t), false) => {
            cache.invalidate_scope(&t).await;
            serde_json::json!({"invalidated": "tenant", "tenant": t})
        }
        (None, None, true) => {
            cache.invalidate_all().await;
            serde_json::json!({"invalidated": "all"})
        }
        _ => return error(&InvalidRequest::new("give exactly one of key, tenant, all")),
    };
    tracing::info!(what = %done, "cache invalidated");
    json(StatusCode::OK, Bytes::from(done.to_string()))
}

async fn models(State(app): State<Arc<AppState>>) -> Response {
    json(StatusCode::OK, app.models_json.clone())
}

/// `GET /v1/models/{id}` (the SDKs' `models.retrieve`); ids may contain `/`.
async fn model(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match app.model_json.get(&id) {
        Some(body) => json(StatusCode::OK, body.clone()),
        None => error(&ModelNotFound::new(&id)),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response {
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

/// Largest non-JSON upstream error body read to build an OpenAI-format error.
const MAX_ERROR_BODY: usize = 64 << 10;

async fn proxy(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path: Arc<str> = parts.uri.path().into();
    let bytes = match Limited::new(body, app.max_body).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let res = if e.is::<http_body_util::LengthLimitError>() {
                error(&PayloadTooLarge { limit: app.max_body })
            } else {
                error(&InvalidRequest::new("could not read the request body"))
            };
            log_error(&method, &path, None, None, res.status(), start, "request body");
            return res;
        }
    };
    let tenant: Option<Arc<str>> =
        parts.headers.get(&app.tenant_header).and_then(|v| v.to_str().ok()).map(Arc::from);
    let info = match RequestInfo::parse(Api::from_path(&path), &bytes) {
        Ok(mut i) => {
            i.tenant = tenant.clone();
            Arc::new(i)
        }
        Err(e) => {
            let res = error(&e);
            log_error(&method, &path, None, None, res.status(), start, &e.to_string());
            return res;
        }
    };
    if !app.models.contains(&*info.model) {
        let res = error(&ModelNotFound::new(&*info.model));
        log_error(&method, &path, Some(&info.model), None, res.status(), start, "unknown model");
        return res;
    }
    let mut upstream_req = http::Request::from_parts(parts, LlmBody::from(bytes));
    upstream_req.extensions_mut().insert(info.clone());
    // The stack LlmStack built: counted, accounted, cached, tenant limits,
    // then failover over the providers' own stacks. The request's deadline
    // covers all of it: every layer below sees it (`Deadline`), and whatever
    // is still waiting when it passes is dropped and answered 504.
    let deadline = app.deadline.map(|limit| (start + limit, limit));
    if let Some((at, _)) = deadline {
        upstream_req.extensions_mut().insert(Deadline(at));
    }
    let call = app.llm.service().oneshot(upstream_req);
    let outcome = match deadline {
        Some((at, limit)) => match tokio::time::timeout_at(at, call).await {
            Ok(r) => r,
            Err(_) => Err(Timeout { phase: TimeoutPhase::Total, after: limit }.into()),
        },
        None => call.await,
    };
    let res = match outcome {
        Ok(res) => res,
        Err(e) => {
            let res = error(&*e);
            log_error(&method, &path, Some(&info.model), None, res.status(), start, &e.to_string());
            return res;
        }
    };
    let status = res.status();
    let answered_by = ServedBy::of(&res).map(str::to_owned);
    let kind = BodyKind::from_headers(res.headers());
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !status.is_success() && kind != BodyKind::Sse && !is_json {
        // A load balancer's HTML or plain-text error: turn it into OpenAI format.
        let hint = llm_tower_core::hint::retry_hint(res.headers(), SystemTime::now()).map(|h| h.after);
        let (parts, body) = res.into_parts();
        let text =
            Limited::new(body, MAX_ERROR_BODY).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let mut out = error(&Upstream::from_body(status, hint, &text));
        for (k, v) in parts.headers.iter() {
            if k.as_str().starts_with("x-ratelimit-") || k == "x-request-id" {
                out.headers_mut().insert(k.clone(), v.clone());
            }
        }
        log_error(
            &method,
            &path,
            Some(&info.model),
            answered_by.as_deref(),
            status,
            start,
            "upstream error page",
        );
        return out;
    }
    let headers_at = start.elapsed();
    // Who answered: the provider, or the cache.
    let provider: Arc<str> =
        res.extensions().get::<ServedBy>().map_or_else(|| Arc::from("-"), |s| s.0.clone());
    let model = info.model.clone();
    let log = move |report: UsageReport| {
        access_log(&method, &path, &model, &provider, status, headers_at, start, &report)
    };
    let (parts, mut body) = res.into_parts();
    // The access line, written when the body ends, with the usage the
    // body's one meter read (and any estimate accounting filled in).
    body.observe(AccessLog { kind, log: Some(log) });
    // A stream that breaks mid-way ends with an SSE error event.
    if kind == BodyKind::Sse {
        body.guard_sse();
    }
    Response::from_parts(parts, AxumBody::new(body)).into_response()
}

/// Writes a request's access line when its answer's body ends.
struct AccessLog<F> {
    kind: BodyKind,
    log: Option<F>,
}

impl<F: FnOnce(UsageReport) + Send + 'static> BodyObserver for AccessLog<F> {
    fn wants_usage(&self) -> Option<BodyKind> {
        Some(self.kind)
    }

    fn on_end(mut self: Box<Self>, end: &mut BodyEnd) {
        if let Some(log) = self.log.take() {
            log(end.report.clone().unwrap_or_else(|| UsageReport::ended(end.end)));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn access_log(
    method: &Method,
    path: &str,
    model: &str,
    provider: &str,
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
