//! Shared harness: the gateway in front of the real mock, and a hyper client.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use llm_tower::mock::MockServer;
use llm_tower_gateway::{Gateway, GatewayConfig};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const KEY: &str = "sk-test-secret-123";

pub struct Harness {
    pub addr: SocketAddr,
    pub client: Client<HttpConnector, Full<Bytes>>,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub server: JoinHandle<std::io::Result<()>>,
}

/// The harness config with retries, the breaker and provider-header adaptation off
/// (tests of plain mapping).
pub fn config_for(mock: &MockServer, extra: &str) -> String {
    config_with(
        mock,
        "[providers.retry]\nenabled = false\n[providers.circuit_breaker]\nenabled = false\n[providers.rate_limit]\nadaptive = false\n",
        extra,
    )
}

/// The harness config; `sections` are TOML sections for the "up" provider.
pub fn config_with(mock: &MockServer, sections: &str, extra: &str) -> String {
    format!(
        r#"
[server]
max_body_bytes = 4096
stats_public = true

[[providers]]
name = "up"
kind = "openai"
base_url = "{url}/v1"
api_key = "{KEY}"
models = ["gpt-4o-mini", "text-embedding-3-small"]
aliases = {{ fast = "gpt-4o-mini" }}
[providers.timeouts]
headers_ms = 5000
idle_ms = 2000
{sections}

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{url}/v1"
api_key = "ant-secret-456"
models = ["claude-3-5-haiku-latest"]
{extra}
"#,
        url = mock.url()
    )
}

pub async fn start(toml: &str) -> Harness {
    let cfg = GatewayConfig::from_toml(toml).unwrap();
    let gw = Gateway::new(cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(gw.serve(
        listener,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(30),
    ));
    let client = Client::builder(TokioExecutor::new()).build_http();
    Harness { addr, client, shutdown: Some(tx), server }
}

impl Harness {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> hyper::Response<hyper::body::Incoming> {
        let mut b = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        self.client.request(req).await.unwrap()
    }

    pub async fn call(&self, method: Method, path: &str, body: &str) -> (StatusCode, HeaderMap, Bytes) {
        let res = self.send(method, path, body, &[]).await;
        let (parts, body) = res.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.server.await.unwrap().unwrap();
    }
}

pub fn json(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

pub fn error_of(b: &Bytes) -> (String, Option<String>) {
    let v = json(b);
    let e = &v["error"];
    assert!(e["message"].is_string(), "OpenAI-format error expected: {v}");
    (e["type"].as_str().unwrap().to_owned(), e["code"].as_str().map(str::to_owned))
}

pub const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello gateway"}]}"#;
pub const STREAM: &str = r#"{"model":"fast","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello gateway"}]}"#;
