//! The gateway's access log, captured. In its own test binary: tracing caches
//! per-callsite interest process-wide, so a thread-local subscriber must not
//! share the process with tests that run without one.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower_gateway::GatewayConfig;

use common::*;

/// A tracing writer that keeps everything written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn access_log_has_usage_and_never_secrets() {
    let logs = Captured::default();
    let w = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let faults = FaultPlan::Script { faults: vec![Fault::Ok, Fault::Ok, Fault::Reset] };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let toml = config_for(&mock, "");
    let h = start(&toml).await;
    let client_key = [("authorization", "Bearer client-secret-789")];
    let res = h.send(Method::POST, "/v1/chat/completions", CHAT, &client_key).await;
    res.into_body().collect().await.unwrap();
    let res = h.send(Method::POST, "/v1/chat/completions", STREAM, &client_key).await;
    res.into_body().collect().await.unwrap();
    let res = h.send(Method::POST, "/v1/chat/completions", CHAT, &client_key).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    res.into_body().collect().await.unwrap();
    h.stop().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("llm_tower_gateway::access")).collect();
    assert_eq!(lines.len(), 3, "one line per request:\n{text}");
    assert!(
        lines[0].contains("gen_ai.usage.output_tokens=16") && lines[0].contains("status=200"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("gen_ai.usage.output_tokens=16") && lines[1].contains("end=Complete"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("status=502"), "{}", lines[2]);
    // The client's key never went upstream, and no key is in any log line or config dump.
    assert!(mock.requests().iter().all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))));
    let cfg_dump = format!("{:?}", GatewayConfig::from_toml(&toml).unwrap());
    for secret in [KEY, "ant-secret-456", "client-secret-789"] {
        assert!(!text.contains(secret), "{secret} leaked into logs:\n{text}");
        assert!(!cfg_dump.contains(secret), "{secret} leaked into the config's Debug");
    }
}
