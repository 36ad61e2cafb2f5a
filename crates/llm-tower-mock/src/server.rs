//! The mock server: accept loop, routing, faults, limits and answers.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::body::{Cut, MockBody};
use crate::config::{Fault, FaultPlan, MockConfig};
use crate::synth::{self, Bucket, Rng};

/// Counters of what the mock received and did.
///
/// ```
/// let s = llm_tower_mock::MockStats::default();
/// assert_eq!(s.requests, 0);
/// ```
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct MockStats {
    /// Every request received.
    pub requests: u64,
    /// Requests to LLM endpoints (chat, embeddings, messages).
    pub llm_requests: u64,
    /// Responses by status (faults that send no response are not counted here).
    pub by_status: BTreeMap<u16, u64>,
    /// Injected faults by kind.
    pub faults: BTreeMap<String, u64>,
    /// Requests refused by the mock's own RPM/TPM limits.
    pub rate_limited: u64,
    /// SSE data events written to streams.
    pub chunks_sent: u64,
}

/// One request as the mock received it.
///
/// ```
/// # async fn demo() -> std::io::Result<()> {
/// let mock = llm_tower_mock::MockServer::start(Default::default()).await?;
/// assert!(mock.requests().is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, PartialEq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// Sequence number (from 1).
    pub n: u64,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, in order (the mock is a test tool: credentials are recorded
    /// so tests can check what a client sent, and never logged).
    pub headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub body: String,
    /// The fault injected, if any.
    pub fault: Option<String>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    ///
    /// ```
    /// # let r: Option<llm_tower_mock::RecordedRequest> = None;
    /// # if let Some(r) = r { let _ = r.header("authorization"); }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

struct State {
    config: MockConfig,
    counter: AtomicU64,
    inner: Mutex<Mutable>,
}

struct Mutable {
    plan: FaultPlan,
    cursor: usize,
    rng: Rng,
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    log: VecDeque<RecordedRequest>,
    stats: MockStats,
}

/// A running mock provider on loopback. Dropping it stops it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// use llm_tower_mock::{Fault, FaultPlan, MockServer};
/// let mock = MockServer::start(Default::default()).await?;
/// assert!(mock.url().starts_with("http://127.0.0.1:"));
/// mock.set_faults(FaultPlan::Always { fault: Fault::status_retry_after(503, 1) });
/// assert_eq!(mock.stats().requests, 0);
/// mock.shutdown().await;
/// # Ok(()) }
/// ```
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer").field("addr", &self.addr).finish()
    }
}

impl MockServer {
    /// Starts a mock on `127.0.0.1` with an ephemeral port.
    pub async fn start(config: MockConfig) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts a mock on `addr`.
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Mutable {
            plan: config.faults.clone(),
            cursor: 0,
            rng: Rng::new(config.seed ^ 0x5EED),
            rpm: config.limits.map(|l| Bucket::new(l.rpm)),
            tpm: config.limits.map(|l| Bucket::new(l.tpm)),
            log: VecDeque::new(),
            stats: MockStats::default(),
        };
        let state = Arc::new(State { config, counter: AtomicU64::new(0), inner: Mutex::new(inner) });
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, state.clone(), rx));
        Ok(MockServer { addr, state, shutdown, task: Some(task) })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (append `/v1/...`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the fault plan (a script restarts from its first fault).
    pub fn set_faults(&self, plan: FaultPlan) {
        self.state.set_faults(plan);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.state.lock().stats.clone()
    }

    /// The request log, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().log.iter().cloned().collect()
    }

    /// Clears counters and log.
    pub fn reset_stats(&self) {
        let mut m = self.state.lock();
        m.stats = MockStats::default();
        m.log.clear();
    }

    /// Stops accepting, closes every connection and waits for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mutable> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_faults(&self, plan: FaultPlan) {
        let mut m = self.lock();
        m.plan = plan;
        m.cursor = 0;
    }

    fn next_fault(&self) -> Fault {
        let mut m = self.lock();
        let m = &mut *m;
        match &m.plan {
            FaultPlan::None => Fault::Ok,
            FaultPlan::Always { fault } => fault.clone(),
            FaultPlan::Script { faults } => {
                let f = faults.get(m.cursor).cloned().unwrap_or(Fault::Ok);
                m.cursor += 1;
                f
            }
            FaultPlan::Random { faults, weights } => {
                let mut x = m.rng.next_f64();
                for (f, w) in faults.iter().zip(weights) {
                    if x < *w {
                        return f.clone();
                    }
                    x -= w;
                }
                Fault::Ok
            }
        }
    }
}

/// Per-connection kill switch, used to reset a connection at the TCP level.
#[derive(Default)]
struct ConnCtl {
    killed: AtomicBool,
    notify: Notify,
}

impl ConnCtl {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// A TCP stream that closes with RST (SO_LINGER 0) when its connection was killed.
struct KillableIo {
    stream: TcpStream,
    ctl: Arc<ConnCtl>,
}

impl Drop for KillableIo {
    fn drop(&mut self) {
        if self.ctl.killed.load(Ordering::SeqCst) {
            let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for KillableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                conns.spawn(serve_conn(stream, state.clone(), shutdown.clone()));
            }
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn serve_conn(stream: TcpStream, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let ctl = Arc::new(ConnCtl::default());
    let io = TokioIo::new(KillableIo { stream, ctl: ctl.clone() });
    let svc_ctl = ctl.clone();
    let svc = service_fn(move |req| handle(state.clone(), svc_ctl.clone(), req));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, svc);
    tokio::select! {
        _ = conn => {}
        _ = ctl.notify.notified() => {}
        _ = shutdown.changed() => {}
    }
}

enum Route {
    Chat { deployment: Option<String> },
    Embeddings { deployment: Option<String> },
    Messages,
    Models,
    Health,
    Stats,
    SetFaults,
    ResetStats,
    Grpc,
    NotFound,
}

impl Route {
    fn of(method: &Method, path: &str) -> Route {
        let azure = |suffix: &str| {
            path.strip_prefix("/openai/deployments/")
                .and_then(|r| r.strip_suffix(suffix))
                .filter(|d| !d.is_empty() && !d.contains('/'))
                .map(str::to_owned)
        };
        match (method, path) {
            (&Method::POST, "/v1/chat/completions") => Route::Chat { deployment: None },
            (&Method::POST, "/v1/embeddings") => Route::Embeddings { deployment: None },
            (&Method::POST, "/v1/messages") => Route::Messages,
            (&Method::GET, "/v1/models") => Route::Models,
            (&Method::GET, "/health") => Route::Health,
            (&Method::GET, "/mock/stats") => Route::Stats,
            (&Method::POST, "/mock/faults") => Route::SetFaults,
            (&Method::POST, "/mock/reset") => Route::ResetStats,
            (&Method::POST, _) if azure("/chat/completions").is_some() => {
                Route::Chat { deployment: azure("/chat/completions") }
            }
            (&Method::POST, _) if azure("/embeddings").is_some() => {
                Route::Embeddings { deployment: azure("/embeddings") }
            }
            _ => Route::NotFound,
        }
    }
}

type Res = Response<MockBody>;

fn json_response(status: StatusCode, value: &Value) -> Res {
    let mut res = Response::new(MockBody::full(serde_json::to_vec(value).unwrap_or_default()));
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn openai_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Res {
    json_response(status, &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
}

async fn handle(state: Arc<State>, ctl: Arc<ConnCtl>, req: Request<Incoming>) -> Result<Res, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "unreadable body",
            ));
        }
    };
    let n = state.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let is_grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let route = if is_grpc { Route::Grpc } else { Route::of(&parts.method, parts.uri.path()) };
    let is_llm =
        matches!(route, Route::Chat { .. } | Route::Embeddings { .. } | Route::Messages | Route::Grpc);
    {
        let mut m = state.lock();
        m.stats.requests += 1;
        if is_llm {
            m.stats.llm_requests += 1;
        }
        if !matches!(route, Route::Stats) {
            let entry = RecordedRequest {
                n,
                method: parts.method.to_string(),
                path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
                body: String::from_utf8_lossy(&body).into_owned(),
                fault: None,
            };
            if m.log.len() >= state.config.log_capacity.max(1) {
                m.log.pop_front();
            }
            m.log.push_back(entry);
        }
    }
    let res = match route {
        Route::Models => {
            let data: Vec<Value> = state
                .config
                .models
                .iter()
                .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000u64, "owned_by": "llm-tower-mock"}))
                .collect();
            json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
        }
        Route::Health => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Route::Stats => {
            let m = state.lock();
            json_response(StatusCode::OK, &json!({"stats": m.stats, "requests": m.log}))
        }
        Route::SetFaults => match serde_json::from_slice::<FaultPlan>(&body) {
            Ok(plan) => {
                state.set_faults(plan);
                json_response(StatusCode::OK, &json!({"ok": true}))
            }
            Err(e) => openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", None, &e.to_string()),
        },
        Route::ResetStats => {
            let mut m = state.lock();
            m.stats = MockStats::default();
            m.log.clear();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        Route::NotFound => {
            openai_error(StatusCode::NOT_FOUND, "invalid_request_error", None, "unknown route")
        }
        Route::Chat { deployment } => llm(&state, &ctl, n, Kind::Chat, deployment, &parts, &body).await,
        Route::Embeddings { deployment } => {
            llm(&state, &ctl, n, Kind::Embeddings, deployment, &parts, &body).await
        }
        Route::Messages => llm(&state, &ctl, n, Kind::Messages, None, &parts, &body).await,
        Route::Grpc => grpc(&state, n, &body).await,
    };
    *state.lock().stats.by_status.entry(res.status().as_u16()).or_default() += 1;
    Ok(res)
}

/// A minimal gRPC unary endpoint on any path: it echoes the request message.
/// Faults map to gRPC statuses: 429 and 503 become a trailers-only
/// `UNAVAILABLE` (14), other statuses an `INTERNAL` (13) in the trailers;
/// reset and hang behave as for HTTP.
async fn grpc(state: &Arc<State>, n: u64, body: &Bytes) -> Res {
    let fault = state.next_fault();
    if fault != Fault::Ok {
        let mut m = state.lock();
        *m.stats.faults.entry(fault_name(&fault)).or_default() += 1;
        if let Some(entry) = m.log.iter_mut().rev().find(|e| e.n == n) {
            entry.fault = Some(fault_name(&fault));
        }
    }
    sleep(state.config.latency.headers).await;
    let head = |code: u32| {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(code));
        h
    };
    let (data, code) = match fault {
        Fault::Hang | Fault::Reset => return std::future::pending().await,
        Fault::Status { status: 429 | 503, .. } => {
            // Trailers-only: the status is in the head.
            let mut res = Response::new(MockBody::full(Bytes::new()));
            *res.headers_mut() = head(14);
            res.headers_mut().insert("grpc-message", HeaderValue::from_static("unavailable"));
            return res;
        }
        Fault::Status { .. } | Fault::LargeError { .. } | Fault::HtmlError { .. } | Fault::MalformedJson => {
            (Bytes::new(), 13)
        }
        _ => (body.clone(), 0),
    };
    let mut res = Response::new(MockBody::Grpc { data: Some(data), trailers: Some(head(code)) });
    res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    res
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Embeddings,
    Messages,
}

fn authorized(expected: &str, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
    [bearer, x_api_key, api_key].into_iter().flatten().any(|k| k == expected)
}

/// Characters of text in a chat/messages request, and its message count.
fn prompt_size(req: &Value) -> (usize, usize) {
    fn text_len(v: &Value) -> usize {
        match v {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => parts.iter().map(|p| p.get("text").map_or(0, text_len)).sum(),
            _ => 0,
        }
    }
    let messages = req.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut chars: usize = messages.iter().map(|m| m.get("content").map_or(0, text_len)).sum();
    chars += req.get("system").map_or(0, text_len);
    (chars, messages.len())
}

#[allow(clippy::too_many_arguments)]
async fn llm(
    state: &Arc<State>,
    ctl: &ConnCtl,
    n: u64,
    kind: Kind,
    deployment: Option<String>,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Res {
    let cfg = &state.config;
    if let Some(key) = &cfg.require_key {
        if !authorized(key, &parts.headers) {
            return openai_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Incorrect API key provided.",
            );
        }
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "We could not parse the JSON body of your request.",
            );
        }
    };
    if deployment.is_some() && !parts.uri.query().unwrap_or("").contains("api-version=") {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "api-version query parameter is required",
        );
    }
    if kind == Kind::Messages {
        if !parts.headers.contains_key("anthropic-version") {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "anthropic-version header is required",
            );
        }
        if req.get("max_tokens").and_then(Value::as_u64).is_none() {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "max_tokens: Field required",
            );
        }
    }
    let model = deployment.or_else(|| req.get("model").and_then(Value::as_str).map(str::to_owned));
    let Some(model) = model else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "you must provide a model parameter",
        );
    };
    if !cfg.models.is_empty() && !cfg.models.contains(&model) {
        return openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            &format!("The model `{model}` does not exist or you do not have access to it."),
        );
    }

    let fault = state.next_fault();
    if fault != Fault::Ok {
        let mut m = state.lock();
        let name = fault_name(&fault);
        *m.stats.faults.entry(name.clone()).or_default() += 1;
        if let Some(entry) = m.log.iter_mut().rev().find(|e| e.n == n) {
            entry.fault = Some(name);
        }
    }
    match fault {
        Fault::Status { status, retry_after, code, headers } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = match (status.as_u16(), code.as_deref()) {
                (_, Some("insufficient_quota")) => "insufficient_quota",
                (429, _) => "rate_limit_error",
                (400..=499, _) => "invalid_request_error",
                _ => "server_error",
            };
            let mut res = openai_error(status, kind, code.as_deref(), "injected fault");
            if let Some(s) = retry_after {
                res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(s));
            }
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) =
                    (http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v))
                {
                    res.headers_mut().insert(k, v);
                }
            }
            return res;
        }
        Fault::LargeError { status, code, bytes } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = serde_json::json!({"error": {
                "code": code,
                "type": if status.as_u16() == 429 { "rate_limit_error" } else { "invalid_request_error" },
                "message": "x".repeat(bytes.min(64 << 20)),
            }});
            let mut res = Response::new(MockBody::full(serde_json::to_vec(&body).unwrap_or_default()));
            *res.status_mut() = status;
            res.headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return res;
        }
        Fault::HtmlError { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let page = format!("<html><body><h1>{status}</h1><p>upstream unavailable</p></body></html>");
            let mut res = Response::new(MockBody::full(page));
            *res.status_mut() = status;
            res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return res;
        }
        Fault::Reset => {
            ctl.kill();
            return std::future::pending().await;
        }
        Fault::Hang => return std::future::pending().await,
        _ => {}
    }

    // Sizes: prompt estimate, and planned output.
    let (chars, messages) = match kind {
        Kind::Embeddings => {
            let inputs = match req.get("input") {
                Some(Value::Array(a)) => a.clone(),
                Some(v) => vec![v.clone()],
                None => vec![],
            };
            (inputs.iter().map(|i| i.as_str().map_or(0, |s| s.chars().count())).sum(), 0)
        }
        _ => prompt_size(&req),
    };
    let prompt = if kind == Kind::Embeddings {
        chars.div_ceil(4) as u64
    } else {
        synth::prompt_tokens(chars, messages)
    };
    let cap =
        ["max_completion_tokens", "max_tokens"].iter().find_map(|k| req.get(*k).and_then(Value::as_u64));
    let choices = req.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 16) as u32;
    let out_tokens = if kind == Kind::Embeddings {
        0
    } else {
        cap.map_or(cfg.reply_tokens, |c| c.min(u64::from(cfg.reply_tokens)) as u32)
    };
    let truncated = out_tokens < cfg.reply_tokens;

    // Provider-style limits.
    let mut limit_headers = HeaderMap::new();
    {
        let mut m = state.lock();
        let m = &mut *m;
        if let (Some(rpm), Some(tpm)) = (m.rpm.as_mut(), m.tpm.as_mut()) {
            let now = Instant::now();
            let cost = (prompt + u64::from(out_tokens) * u64::from(choices)) as f64;
            let wait = rpm.wait_for(1.0, now).max(tpm.wait_for(cost, now));
            if wait.is_zero() {
                rpm.take(1.0);
                tpm.take(cost);
            }
            let h = &mut limit_headers;
            h.insert("x-ratelimit-limit-requests", HeaderValue::from(rpm.limit()));
            h.insert("x-ratelimit-remaining-requests", HeaderValue::from(rpm.remaining()));
            h.insert("x-ratelimit-reset-requests", synth::go_duration(rpm.reset_in()).parse().unwrap());
            h.insert("x-ratelimit-limit-tokens", HeaderValue::from(tpm.limit()));
            h.insert("x-ratelimit-remaining-tokens", HeaderValue::from(tpm.remaining()));
            h.insert("x-ratelimit-reset-tokens", synth::go_duration(tpm.reset_in()).parse().unwrap());
            if !wait.is_zero() {
                m.stats.rate_limited += 1;

                let mut res = openai_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    Some("rate_limit_exceeded"),
                    "Rate limit reached for requests or tokens per minute.",
                );
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                res.headers_mut().insert("retry-after-ms", HeaderValue::from(wait.as_millis() as u64));
                res.headers_mut().extend(limit_headers);
                return res;
            }
        }
    }

    let seed = cfg.seed
        ^ synth::fnv(model.as_bytes())
        ^ synth::fnv(req.get("messages").map(|m| m.to_string()).unwrap_or_default().as_bytes());
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false) && kind != Kind::Embeddings;
    let include_usage =
        req.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let plan = Answer {
        n,
        model,
        seed,
        prompt,
        out_tokens,
        choices,
        finish: if truncated { "length" } else { "stop" },
        include_usage,
        fault,
        latency: cfg.latency,
    };

    sleep(cfg.latency.headers).await;
    let mut res = match (kind, stream) {
        (Kind::Embeddings, _) => {
            sleep(plan.fault_delay()).await;
            embeddings(&plan, &req, cfg.embedding_dims)
        }
        (Kind::Chat, false) => plan.json_answer(chat_json(&plan)).await,
        (Kind::Messages, false) => plan.json_answer(messages_json(&plan)).await,
        (Kind::Chat, true) => plan.stream(ChunkCounter(state.clone()), chat_events),
        (Kind::Messages, true) => plan.stream(ChunkCounter(state.clone()), messages_events),
    };
    res.headers_mut().extend(limit_headers);
    res.headers_mut().insert("x-request-id", format!("req_mock_{n}").parse().unwrap());
    res
}

/// Sleeps for `d`, or not at all when it is zero (a zero tokio sleep still
/// waits for the next timer tick, about a millisecond).
async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn fault_name(f: &Fault) -> String {
    match f {
        Fault::Ok => "ok".into(),
        Fault::Status { status, .. } => format!("status_{status}"),
        Fault::HtmlError { status } => format!("html_{status}"),
        Fault::LargeError { status, .. } => format!("large_{status}"),
        Fault::Reset => "reset".into(),
        Fault::Hang => "hang".into(),
        Fault::StreamCut { .. } => "stream_cut".into(),
        Fault::MalformedJson => "malformed_json".into(),
        Fault::SlowBody { .. } => "slow_body".into(),
        Fault::EndlessEvent { .. } => "endless_event".into(),
    }
}

/// Counts SSE events written, into the shared stats.
#[derive(Clone)]
struct ChunkCounter(Arc<State>);

impl ChunkCounter {
    fn count(&self) {
        self.0.lock().stats.chunks_sent += 1;
    }
}

struct Answer {
    n: u64,
    model: String,
    seed: u64,
    prompt: u64,
    out_tokens: u32,
    choices: u32,
    finish: &'static str,
    include_usage: bool,
    fault: Fault,
    latency: crate::Latency,
}

impl Answer {
    fn words(&self, choice: u32) -> Vec<&'static str> {
        synth::tokens(self.seed.wrapping_add(u64::from(choice)), self.out_tokens)
    }

    fn text(&self, choice: u32) -> String {
        self.words(choice).iter().map(|w| format!("{w} ")).collect::<String>().trim_end().to_owned()
    }

    fn completion_tokens(&self) -> u64 {
        u64::from(self.out_tokens) * u64::from(self.choices)
    }

    fn fault_delay(&self) -> Duration {
        match self.fault {
            Fault::SlowBody { per_chunk_ms } => Duration::from_millis(per_chunk_ms),
            _ => Duration::ZERO,
        }
    }

    /// A complete JSON answer, after the generation time, with the fault applied.
    async fn json_answer(&self, value: Value) -> Res {
        sleep(self.latency.per_token * self.out_tokens).await;
        let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let body = match self.fault {
            Fault::MalformedJson => MockBody::full(bytes.slice(..bytes.len() / 2)),
            Fault::StreamCut { .. } => {
                let (tx, rx) = mpsc::channel(2);
                let half = bytes.slice(..bytes.len() / 2);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(half)).await;
                    let _ = tx.send(Err(Cut)).await;
                });
                MockBody::Channel(rx)
            }
            Fault::SlowBody { per_chunk_ms } => {
                let (tx, rx) = mpsc::channel(4);
                let delay = Duration::from_millis(per_chunk_ms);
                tokio::spawn(async move {
                    let step = bytes.len().div_ceil(4).max(1);
                    let mut at = 0;
                    while at < bytes.len() {
                        sleep(delay).await;
                        let end = (at + step).min(bytes.len());
                        if tx.send(Ok(bytes.slice(at..end))).await.is_err() {
                            return;
                        }
                        at = end;
                    }
                });
                MockBody::Channel(rx)
            }
            _ => MockBody::full(bytes),
        };
        let mut res = Response::new(body);
        res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    }

    /// A streamed answer: events produced by `events`, paced by the latency model.
    fn stream(self, counter: ChunkCounter, events: fn(&Answer) -> Vec<Event>) -> Res {
        let (tx, rx) = mpsc::channel(16);
        let list = events(&self);
        tokio::spawn(async move {
            if let Fault::EndlessEvent { bytes } = self.fault {
                if let Some(first) = list.first() {
                    let _ = tx.send(Ok(first.bytes.clone())).await;
                }
                let _ = tx.send(Ok(Bytes::from_static(b"data: "))).await;
                let piece = Bytes::from(vec![b'x'; 64 << 10]);
                let mut sent = 0;
                while sent < bytes.min(1 << 30) {
                    if tx.send(Ok(piece.clone())).await.is_err() {
                        return;
                    }
                    sent += piece.len();
                }
                // Keep the connection open: the reader must end it.
                std::future::pending::<()>().await;
            }
            let mut tokens_sent = 0u32;
            for ev in list {
                if ev.token {
                    if let Fault::StreamCut { after_tokens } = self.fault {
                        if tokens_sent >= after_tokens {
                            let _ = tx.send(Err(Cut)).await;
                            return;
                        }
                    }
                    sleep(self.latency.per_token).await;
                    tokens_sent += 1;
                }
                sleep(self.fault_delay()).await;
                if tx.send(Ok(ev.bytes)).await.is_err() {
                    return;
                }
                counter.count();
            }
        });
        let mut res = Response::new(MockBody::Channel(rx));
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    }
}

/// One SSE event to send; `token` marks events that carry a generated token.
struct Event {
    bytes: Bytes,
    token: bool,
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    let mut s = String::new();
    if let Some(e) = event {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(&data.to_string());
    s.push_str("\n\n");
    Bytes::from(s)
}

fn chat_usage(a: &Answer) -> Value {
    json!({
        "prompt_tokens": a.prompt,
        "completion_tokens": a.completion_tokens(),
        "total_tokens": a.prompt + a.completion_tokens(),
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

fn chat_json(a: &Answer) -> Value {
    let choices: Vec<Value> = (0..a.choices)
        .map(|i| {
            json!({"index": i, "message": {"role": "assistant", "content": a.text(i), "refusal": null},
                   "logprobs": null, "finish_reason": a.finish})
        })
        .collect();
    json!({
        "id": format!("chatcmpl-mock-{}", a.n),
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": a.model,
        "choices": choices,
        "usage": chat_usage(a),
        "system_fingerprint": "fp_mock",
    })
}

fn chat_events(a: &Answer) -> Vec<Event> {
    let id = format!("chatcmpl-mock-{}", a.n);
    let chunk = |choices: Value, usage: Value| {
        let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                           "model": a.model, "system_fingerprint": "fp_mock", "choices": choices});
        if a.include_usage {
            v["usage"] = usage;
        }
        v
    };
    let mut out = Vec::new();
    if matches!(a.fault, Fault::MalformedJson) {
        out.push(Event { bytes: Bytes::from_static(b"data: {\"id\": broken\n\n"), token: false });
        out.push(Event { bytes: Bytes::from_static(b"data: [DONE]\n\n"), token: false });
        return out;
    }
    for i in 0..a.choices {
        let role = json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
        out.push(Event { bytes: sse(None, &chunk(role, Value::Null)), token: false });
    }
    for t in 0..a.out_tokens as usize {
        for i in 0..a.choices {
            let words = a.words(i);
            let piece = if t == 0 { words[t].to_owned() } else { format!(" {}", words[t]) };
            let c =
                json!([{"index": i, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}]);
            out.push(Event { bytes: sse(None, &chunk(c, Value::Null)), token: i == 0 });
        }
    }
    for i in 0..a.choices {
        let fin = json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": a.finish}]);
        out.push(Event { bytes: sse(None, &chunk(fin, Value::Null)), token: false });
    }
    if a.include_usage {
        out.push(Event { bytes: sse(None, &chunk(json!([]), chat_usage(a))), token: false });
    }
    out.push(Event { bytes: Bytes::from_static(b"data: [DONE]\n\n"), token: false });
    out
}

fn anthropic_stop(a: &Answer) -> &'static str {
    if a.finish == "length" { "max_tokens" } else { "end_turn" }
}

fn messages_json(a: &Answer) -> Value {
    json!({
        "id": format!("msg_mock_{}", a.n),
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": [{"type": "text", "text": a.text(0)}],
        "stop_reason": anthropic_stop(a),
        "stop_sequence": null,
        "usage": {"input_tokens": a.prompt, "output_tokens": a.out_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    })
}

fn messages_events(a: &Answer) -> Vec<Event> {
    let ev = |name: &str, data: Value, token: bool| Event { bytes: sse(Some(name), &data), token };
    let mut out = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_mock_{}", a.n), "type": "message",
                   "role": "assistant", "model": a.model, "content": [], "stop_reason": null, "stop_sequence": null,
                   "usage": {"input_tokens": a.prompt, "output_tokens": 1,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
            false,
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            false,
        ),
        ev("ping", json!({"type": "ping"}), false),
    ];
    if matches!(a.fault, Fault::MalformedJson) {
        out.push(Event {
            bytes: Bytes::from_static(b"event: content_block_delta\ndata: {broken\n\n"),
            token: false,
        });
    }
    for (t, w) in a.words(0).iter().enumerate() {
        let piece = if t == 0 { (*w).to_owned() } else { format!(" {w}") };
        out.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            true,
        ));
    }
    out.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0}), false));
    out.push(ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": anthropic_stop(a), "stop_sequence": null},
               "usage": {"output_tokens": a.out_tokens}}),
        false,
    ));
    out.push(ev("message_stop", json!({"type": "message_stop"}), false));
    out
}

fn embeddings(a: &Answer, req: &Value, dims: usize) -> Res {
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::Array(items)) => items.iter().map(|v| v.to_string()).collect(),
        Some(v) => vec![v.to_string()],
        None => vec![],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut rng = Rng::new(a.seed ^ synth::fnv(text.as_bytes()));
            let raw: Vec<f64> = (0..dims.max(1)).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
            let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
            let v: Vec<f64> = raw.iter().map(|x| ((x / norm) * 1e6).round() / 1e6).collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": a.model,
                "usage": {"prompt_tokens": a.prompt, "total_tokens": a.prompt}}),
    )
}
