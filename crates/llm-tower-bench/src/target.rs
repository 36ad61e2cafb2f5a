//! What is measured: a gateway at a URL, or one started in-process on its
//! own runtime and threads (`--embedded`), with its mock providers.

use std::net::SocketAddr;
use std::time::Duration;

use llm_tower_gateway::{Gateway, GatewayConfig};
use tokio::sync::oneshot;

/// The bench's embedded config: two in-process mock providers behind one
/// route (priority: `primary`, then `standby`), a breaker that closes again
/// within seconds, a request limit on `primary` that a stress ramp crosses,
/// and the conservative cache.
pub const EMBEDDED_CONFIG: &str = include_str!("../embedded.toml");

/// A gateway to measure.
///
/// ```
/// let t = llm_tower_bench::Target::url("http://127.0.0.1:8080/v1", false).unwrap();
/// assert_eq!(t.root(), "http://127.0.0.1:8080");
/// assert!(llm_tower_bench::Target::url("https://api.openai.com/v1", false).is_err());
/// ```
pub struct Target {
    name: String,
    base: String,
    root: String,
    mocks: Vec<(String, String)>,
    embedded: Option<Running>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).field("base", &self.base).finish()
    }
}

/// A gateway on its own runtime, stopped when dropped.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `url`'s host is a loopback address (`127.0.0.0/8`, `::1`, `localhost`).
///
/// ```
/// assert!(llm_tower_bench::is_loopback("http://127.0.0.1:8080/v1"));
/// assert!(llm_tower_bench::is_loopback("http://[::1]:9/v1"));
/// assert!(!llm_tower_bench::is_loopback("http://10.0.0.1/v1"));
/// ```
pub fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else { return false };
    let Some(host) = uri.host() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check(url: &str, allow_remote: bool) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: not a URL ({e})"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// targets (put TLS in front of the bench, not in it)"));
    }
    if !allow_remote && !is_loopback(url) {
        return Err(format!("{url}: not a loopback address (pass --allow-remote to measure it)"));
    }
    Ok(())
}

fn root_of(base: &str) -> String {
    let b = base.trim_end_matches('/');
    b.strip_suffix("/v1").unwrap_or(b).to_owned()
}

impl Target {
    /// A running gateway: `base` is its OpenAI base URL (`http://host:port/v1`).
    /// Only loopback unless `allow_remote`.
    pub fn url(base: &str, allow_remote: bool) -> Result<Self, String> {
        check(base, allow_remote)?;
        let base = base.trim_end_matches('/').to_owned();
        Ok(Self { name: base.clone(), root: root_of(&base), base, mocks: Vec::new(), embedded: None })
    }

    /// Names a mock provider behind the target (`NAME=URL`, the mock's root URL),
    /// for the breaker scenario's outage and the upstream call counts.
    pub fn with_mock(mut self, name: &str, url: &str, allow_remote: bool) -> Result<Self, String> {
        check(url, allow_remote)?;
        self.mocks.push((name.to_owned(), url.trim_end_matches('/').to_owned()));
        Ok(self)
    }

    /// Starts the gateway on `config` (TOML; [`EMBEDDED_CONFIG`] when `None`)
    /// on its own runtime with `threads` worker threads, listening on an
    /// ephemeral loopback port; its `kind = "mock"` providers run there too.
    ///
    /// ```
    /// let t = llm_tower_bench::Target::embedded(None, 1).unwrap();
    /// assert_eq!(t.mocks().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["primary", "standby"]);
    /// assert!(t.base().starts_with("http://127.0.0.1:"));
    /// ```
    pub fn embedded(config: Option<&str>, threads: usize) -> Result<Self, String> {
        let mut cfg =
            GatewayConfig::from_toml(config.unwrap_or(EMBEDDED_CONFIG)).map_err(|e| e.to_string())?;
        // The bench reads /stats; it never listens anywhere but loopback.
        cfg.server.stats_public = true;
        let names: Vec<String> = cfg.providers.iter().map(|p| p.name.clone()).collect();
        let backlog = cfg.server.listen_backlog;
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<Result<(SocketAddr, Vec<(String, String)>), String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-gateway".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name("gateway")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let started = async {
                        let gw = Gateway::new(cfg).await.map_err(|e| e.to_string())?;
                        let listener = llm_tower_gateway::listen(([127, 0, 0, 1], 0).into(), backlog)
                            .map_err(|e| e.to_string())?;
                        let addr = listener.local_addr().map_err(|e| e.to_string())?;
                        let mocks =
                            names.iter().filter_map(|n| gw.mock(n).map(|m| (n.clone(), m.url()))).collect();
                        Ok::<_, String>((gw, listener, addr, mocks))
                    };
                    match started.await {
                        Ok((gw, listener, addr, mocks)) => {
                            let _ = ready_tx.send(Ok((addr, mocks)));
                            let stop = async {
                                let _ = stop_rx.await;
                            };
                            let _ = gw.serve(listener, stop, Duration::from_secs(1)).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        let (addr, mocks) =
            ready_rx.recv().map_err(|_| "the embedded gateway did not start".to_owned())??;
        let base = format!("http://{addr}/v1");
        let name = if config.is_some() { "embedded (given config)" } else { "embedded (bench default)" };
        Ok(Self {
            name: name.into(),
            root: root_of(&base),
            base,
            mocks,
            embedded: Some(Running { stop: Some(stop_tx), thread: Some(thread) }),
        })
    }

    /// What the reports call it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OpenAI base URL (`…/v1`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The gateway's root URL (where `/stats` is).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The mock providers known behind it: `(provider name, root URL)`.
    pub fn mocks(&self) -> &[(String, String)] {
        &self.mocks
    }

    /// Whether the bench started it.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }
}
