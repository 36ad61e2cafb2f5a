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
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::body::{Cut, MockBody};
use crate::config::{Fault, FaultPlan, MockConfig};
use crate::synth::{self, Bucket, Rng};

mod answer;
mod gemini;
mod llm;
mod route;
mod tools;

use answer::*;
use gemini::*;
use llm::*;
use route::*;
use tools::*;

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
    /// The most LLM requests being answered at once (from arrival until the
    /// response head is sent): what a concurrency limit in front of the
    /// mock let through.
    pub max_in_flight: u64,
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
    /// LLM requests between arrival and their response head.
    in_flight: AtomicU64,
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
        // A backlog of 1024, not `TcpListener::bind`'s 128: a load that opens
        // hundreds of connections at once must not meet SYN retries here.
        // (The gateway's `listen` does the same; the mock cannot call it: the
        // gateway depends on the mock.)
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
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
        let state = Arc::new(State {
            config,
            counter: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            inner: Mutex::new(inner),
        });
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
