//! The pooled HTTP client: connection pool, TLS, DNS cache, connection limits, stats.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use llm_tower_core::{BoxError, Connect, LlmBody, Timeout, TimeoutPhase};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Pool, TLS and DNS settings of an [`HttpClient`].
///
/// ```
/// use std::time::Duration;
/// let cfg = llm_tower_http::ClientConfig {
///     max_connections_per_host: Some(64),
///     ..Default::default()
/// };
/// assert_eq!(cfg.pool_idle_timeout, Duration::from_secs(90));
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Connect timeout (TCP and TLS). Default 10 s.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host. Default 512: a gateway streaming to a
    /// provider holds one connection per answer in flight (hundreds at a few
    /// thousand requests per second); a smaller pool closes them as a burst
    /// ends and opens them again on the next, a connect and a close per
    /// request while it is busiest.
    pub pool_max_idle_per_host: usize,
    /// Connections open at once per host (requests wait for one). Default unlimited.
    pub max_connections_per_host: Option<usize>,
    /// How long a resolved name is cached. Default 30 s.
    pub dns_ttl: Duration,
    /// TCP keep-alive probe interval. Default 60 s.
    pub tcp_keepalive: Option<Duration>,
    /// Offer HTTP/2 over TLS (ALPN). Default on.
    pub http2: bool,
    /// Speak HTTP/2 only, also over cleartext (prior knowledge, "h2c"). Default off.
    pub http2_only: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 512,
            max_connections_per_host: None,
            dns_ttl: Duration::from_secs(30),
            tcp_keepalive: Some(Duration::from_secs(60)),
            http2: true,
            http2_only: false,
        }
    }
}

/// A DNS resolver that caches answers for a TTL (tokio time).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let r = llm_tower_http::CachingResolver::new(Duration::from_secs(30));
/// let a = r.resolve("localhost").await.unwrap();
/// let b = r.resolve("localhost").await.unwrap();
/// assert_eq!(a, b);
/// assert_eq!(r.lookups(), 1);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CachingResolver {
    ttl: Duration,
    cache: Shared<HashMap<String, DnsEntry>>,
    lookups: Arc<AtomicU64>,
}

/// Resolved addresses and when they expire.
type DnsEntry = (Arc<[SocketAddr]>, Instant);

/// Names cached at most; the oldest-expiring half is dropped beyond it.
const DNS_CACHE_MAX: usize = 1024;

impl CachingResolver {
    /// A resolver caching for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, cache: Arc::default(), lookups: Arc::default() }
    }

    /// Resolves `host` (port 0), from the cache when fresh.
    pub async fn resolve(&self, host: &str) -> io::Result<Arc<[SocketAddr]>> {
        let now = Instant::now();
        if let Some((addrs, exp)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(host) {
            if *exp > now {
                return Ok(addrs.clone());
            }
        }
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host((host, 0)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no addresses for {host}")));
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= DNS_CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, (_, exp)| *exp > now);
            if cache.len() >= DNS_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(host.to_owned(), (addrs.clone(), Instant::now() + self.ttl));
        Ok(addrs)
    }

    /// Lookups that missed the cache.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

impl tower::Service<Name> for CachingResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.resolve(name.as_str()).await?.to_vec().into_iter()) })
    }
}

/// Live counters for one upstream host.
#[derive(Debug, Default)]
pub(crate) struct HostCounters {
    pub(crate) open: AtomicI64,
    pub(crate) in_flight: AtomicI64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) connect_micros: AtomicU64,
}

/// A snapshot of one host's connection and request counters.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = llm_tower_http::HttpClient::new(Default::default());
/// assert!(client.stats().is_empty());
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HostStats {
    /// `host:port`.
    pub host: String,
    /// Connections open now.
    pub open_connections: u64,
    /// Open connections not carrying a request (exact for HTTP/1.1, where a
    /// request occupies a connection; 0 while an HTTP/2 connection is busy).
    pub idle_connections: u64,
    /// Requests in flight (sent, body not yet finished).
    pub in_flight: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (connect, transport, timeout, broken body).
    pub errors: u64,
    /// Connections established.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_errors: u64,
    /// Mean time to establish a connection, microseconds.
    pub mean_connect_micros: u64,
}

type Shared<T> = Arc<Mutex<T>>;

#[derive(Clone, Default)]
pub(crate) struct Registry {
    hosts: Shared<HashMap<String, Arc<HostCounters>>>,
    limits: Shared<HashMap<String, Arc<Semaphore>>>,
    /// Requests at once per host (HTTP/1.1: one per connection), for the
    /// services' readiness.
    slots: Shared<HashMap<String, Arc<Semaphore>>>,
}

impl Registry {
    pub(crate) fn host(&self, authority: &str) -> Arc<HostCounters> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner()).entry(authority.to_owned()).or_default().clone()
    }

    pub(crate) fn slots(&self, authority: &str, max: usize) -> Arc<Semaphore> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(authority.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone()
    }

    fn limit(&self, authority: &str, max: usize) -> Arc<Semaphore> {
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(authority.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone()
    }
}

pub(crate) fn authority_key(uri: &Uri) -> String {
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    format!("{host}:{port}")
}

/// The outermost connector: connect timeout, per-host connection limit, stats.
#[derive(Clone)]
pub(crate) struct TrackedConnector {
    inner: HttpsConnector<HttpConnector<CachingResolver>>,
    registry: Registry,
    timeout: Duration,
    max_per_host: Option<usize>,
}

impl tower::Service<Uri> for TrackedConnector {
    type Response =
        Tracked<<HttpsConnector<HttpConnector<CachingResolver>> as tower::Service<Uri>>::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let key = authority_key(&uri);
        let counters = self.registry.host(&key);
        let limit = self.max_per_host.map(|m| self.registry.limit(&key, m));
        let timeout = self.timeout;
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let permit = match limit {
                Some(sem) => Some(sem.acquire_owned().await.map_err(|e| Connect::new(key.clone(), e))?),
                None => None,
            };
            let start = Instant::now();
            let io = match tokio::time::timeout(timeout, tower::Service::call(&mut inner, uri)).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => {
                    counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(Connect::new(key, e).into());
                }
                Err(_) => {
                    counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(Timeout { phase: TimeoutPhase::Connect, after: timeout }.into());
                }
            };
            counters.connect_micros.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
            counters.connects.fetch_add(1, Ordering::Relaxed);
            counters.open.fetch_add(1, Ordering::Relaxed);
            Ok(Tracked { io, counters, _permit: permit })
        })
    }
}

/// A connection that counts itself open until dropped and holds its host's
/// connection permit.
pub(crate) struct Tracked<T> {
    io: T,
    counters: Arc<HostCounters>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: Read + Unpin> Read for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

pub(crate) type Inner = hyper_util::client::legacy::Client<TrackedConnector, LlmBody>;

/// A pooled HTTP/1.1 + HTTP/2 client with rustls, shared by any number of
/// [`LlmHttpService`](crate::LlmHttpService)s. Cheap to clone (clones share
/// the pool). Must be created inside a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use llm_tower_http::{ClientConfig, HttpClient};
/// let client = HttpClient::new(ClientConfig { max_connections_per_host: Some(32), ..Default::default() });
/// # let _ = client;
/// # }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    pub(crate) inner: Inner,
    pub(crate) registry: Registry,
    resolver: CachingResolver,
    /// Requests at once per host, when connections are limited and each
    /// carries one request at a time (not `http2_only`).
    pub(crate) request_slots: Option<usize>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("hosts", &self.stats().len()).finish()
    }
}

impl HttpClient {
    /// Builds a client.
    pub fn new(config: ClientConfig) -> Self {
        let resolver = CachingResolver::new(config.dns_ttl);
        let mut http = HttpConnector::new_with_resolver(resolver.clone());
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(config.tcp_keepalive);
        http.set_happy_eyeballs_timeout(Some(Duration::from_millis(300)));
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::from_iter(webpki_roots()))
                .with_no_client_auth();
        let https = HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let https = if config.http2_only {
            https.enable_http2().wrap_connector(http)
        } else if config.http2 {
            https.enable_http1().enable_http2().wrap_connector(http)
        } else {
            https.enable_http1().wrap_connector(http)
        };
        let registry = Registry::default();
        let connector = TrackedConnector {
            inner: https,
            registry: registry.clone(),
            timeout: config.connect_timeout,
            max_per_host: config.max_connections_per_host,
        };
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(config.http2_only)
            .build(connector);
        let request_slots = config.max_connections_per_host.filter(|_| !config.http2_only);
        HttpClient { inner, registry, resolver, request_slots }
    }

    /// Per-host connection and request counters, sorted by host.
    pub fn stats(&self) -> Vec<HostStats> {
        let hosts = self.registry.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<HostStats> = hosts
            .iter()
            .map(|(host, c)| {
                let open = c.open.load(Ordering::Relaxed).max(0) as u64;
                let in_flight = c.in_flight.load(Ordering::Relaxed).max(0) as u64;
                let connects = c.connects.load(Ordering::Relaxed);
                HostStats {
                    host: host.clone(),
                    open_connections: open,
                    idle_connections: open.saturating_sub(in_flight),
                    in_flight,
                    requests: c.requests.load(Ordering::Relaxed),
                    errors: c.errors.load(Ordering::Relaxed),
                    connects,
                    connect_errors: c.connect_errors.load(Ordering::Relaxed),
                    mean_connect_micros: c
                        .connect_micros
                        .load(Ordering::Relaxed)
                        .checked_div(connects)
                        .unwrap_or(0),
                }
            })
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    /// The client's DNS cache.
    pub fn resolver(&self) -> &CachingResolver {
        &self.resolver
    }
}

fn webpki_roots() -> impl Iterator<Item = rustls::pki_types::TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS.iter().cloned()
}
