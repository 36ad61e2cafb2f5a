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

/// Everything this thread's tracing writes, until the guard drops.
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let w = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn access_log_has_usage_and_never_secrets() {
    let (logs, _guard) = capture();

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

#[tokio::test]
async fn keys_show_by_name_and_prefix_never_by_value() {
    let (logs, _guard) = capture();

    let config_key = "llmt-config-key-secret-4242";
    let hash = llm_tower::auth::KeyHash::of(config_key);
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let keys = format!(
        "[auth]\nmode = 'keys'\n[[keys]]\nname = 'team-a'\nhash = '{hash}'\nmodels = ['gpt-4o-mini']\n"
    );
    let toml = config_for(&mock, &keys).replace("stats_public = true\n", "admin_token = 'adm-logs-1'\n");
    let h = start(&toml).await;
    let bearer = format!("Bearer {config_key}");
    let res = h.send(Method::POST, "/v1/chat/completions", CHAT, &[("authorization", &bearer)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();
    let res = h
        .send(Method::POST, "/v1/chat/completions", CHAT, &[("authorization", "Bearer llmt-wrong-guess-77")])
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let refused = res.into_body().collect().await.unwrap().to_bytes();
    let admin = [("authorization", "Bearer adm-logs-1")];
    let res = h.send(Method::POST, "/admin/keys", r#"{"name":"svc"}"#, &admin).await;
    let created = json(&res.into_body().collect().await.unwrap().to_bytes());
    let made_key = created["key"].as_str().unwrap().to_owned();
    let res = h.send(Method::POST, "/v1/chat/completions", CHAT, &[("x-api-key", &made_key)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();
    let res = h.send(Method::GET, "/stats", "", &admin).await;
    let stats = res.into_body().collect().await.unwrap().to_bytes();
    let res = h.send(Method::GET, "/admin/keys", "", &admin).await;
    let listed = res.into_body().collect().await.unwrap().to_bytes();
    h.stop().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let access: Vec<&str> = text.lines().filter(|l| l.contains("llm_tower_gateway::access")).collect();
    assert!(access[0].contains(&format!("key=team-a ({})", hash.prefix())), "{}", access[0]);
    assert!(text.contains("key created"), "{text}");
    let shown = [
        ("logs", text.as_str()),
        ("/stats", std::str::from_utf8(&stats).unwrap()),
        ("/admin/keys", std::str::from_utf8(&listed).unwrap()),
        ("the 401", std::str::from_utf8(&refused).unwrap()),
    ];
    for (where_, body) in shown {
        for secret in [config_key, made_key.as_str(), "llmt-wrong-guess-77", &hash.to_string()[7..]] {
            assert!(!body.contains(secret), "{secret} shown in {where_}:\n{body}");
        }
    }
    let debug = format!("{:?}", GatewayConfig::from_toml(&toml).unwrap());
    assert!(!debug.contains(config_key));
}
