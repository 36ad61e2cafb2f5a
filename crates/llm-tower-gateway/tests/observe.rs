//! What an operator watches: Prometheus `/metrics` (parsed as the exposition
//! format), `/health/live` and `/health/ready`, over loopback against the mock.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use llm_tower::mock::{MockConfig, MockServer};
use llm_tower_gateway::{Gateway, GatewayConfig};
use tower::ServiceExt;

use common::*;

/// One sample of the text exposition format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus' text format strictly: every line is a comment (`# HELP`
/// or `# TYPE` with a known type) or a sample `name{label="value",...} number`.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(_), Some(t)) => {
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "{line}")
                }
                (Some("HELP"), Some(_), _) => {}
                _ => panic!("not a comment of the format: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name, labels)
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// The value of `name` with (at least) these labels; 0 when absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(h: &Harness) -> Vec<Sample> {
    let (status, headers, body) = h.call(Method::GET, "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    parse(std::str::from_utf8(&body).unwrap())
}

/// Tests whose requests move the same process-wide counters take turns.
static COUNTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn metrics_move_as_requests_pass() {
    let _turn = COUNTERS.lock().await;
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let before = scrape(&h).await;
    let ok = [("api", "chat_completions"), ("model", "gpt-4o-mini"), ("status", "200")];
    for _ in 0..3 {
        assert_eq!(h.call(Method::POST, "/v1/chat/completions", CHAT).await.0, StatusCode::OK);
    }
    let (status, _, _) = h.call(Method::POST, "/v1/chat/completions", STREAM).await;
    assert_eq!(status, StatusCode::OK);
    let unknown = r#"{"model":"made-up-by-the-client","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(h.call(Method::POST, "/v1/chat/completions", unknown).await.0, StatusCode::NOT_FOUND);
    let after = scrape(&h).await;

    let moved =
        |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(moved("llm_tower_requests_total", &ok), 3.0);
    assert_eq!(moved("llm_tower_requests_total", &[("model", "fast"), ("status", "200")]), 1.0);
    // A model the client made up is not a label: it is counted as `other`.
    assert_eq!(moved("llm_tower_requests_total", &[("model", "other"), ("status", "404")]), 1.0);
    assert!(after.iter().all(|(_, l, _)| l.get("model").is_none_or(|m| m != "made-up-by-the-client")));
    let chat = [("api", "chat_completions"), ("model", "gpt-4o-mini")];
    assert_eq!(moved("llm_tower_request_duration_seconds_count", &chat), 3.0);
    assert!(moved("llm_tower_request_duration_seconds_sum", &chat) > 0.0);
    assert_eq!(
        moved("llm_tower_request_duration_seconds_bucket", &[("model", "gpt-4o-mini"), ("le", "+Inf")]),
        3.0
    );
    assert_eq!(moved("llm_tower_time_to_first_token_seconds_count", &[("model", "fast")]), 1.0);
    assert_eq!(value(&after, "llm_tower_requests_in_flight", &[]), 0.0, "every request finished");
    assert!(moved("llm_tower_tokens_total", &[]) > 0.0, "the layers' own counters are exported");
    assert_eq!(value(&after, "llm_tower_backend_up", &[("backend", "up")]), 1.0);
    h.stop().await;
}

#[tokio::test]
async fn metrics_behind_the_admin_token_when_configured() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let toml = format!(
        "[server]\nadmin_token = 'adm-secret'\nmetrics = 'admin'\n[[providers]]\nname = 'up'\nkind = 'openai'\nbase_url = '{}/v1'\nmodels = ['gpt-4o-mini']\n",
        mock.url()
    );
    let h = start(&toml).await;
    assert_eq!(h.call(Method::GET, "/metrics", "").await.0, StatusCode::UNAUTHORIZED);
    let res = h.send(Method::GET, "/metrics", "", &[("authorization", "Bearer adm-secret")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    parse(std::str::from_utf8(&body).unwrap());
    h.stop().await;
}

#[tokio::test]
async fn metrics_off_is_not_served() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let toml = format!(
        "[server]\nmetrics = 'off'\n[[providers]]\nname = 'up'\nkind = 'openai'\nbase_url = '{}/v1'\nmodels = ['gpt-4o-mini']\n",
        mock.url()
    );
    let h = start(&toml).await;
    assert_eq!(h.call(Method::GET, "/metrics", "").await.0, StatusCode::NOT_FOUND);
    h.stop().await;
}

async fn get(router: &axum::Router, path: &str) -> (StatusCode, serde_json::Value) {
    let req = http::Request::get(path).body(axum::body::Body::empty()).unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    (status, json(&res.into_body().collect().await.unwrap().to_bytes()))
}

#[tokio::test]
async fn ready_names_the_routes_that_have_no_usable_backend_and_drains_on_shutdown() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::new(GatewayConfig::from_toml(&config_with(&mock, "", "")).unwrap()).await.unwrap();
    let router = gw.router();
    assert_eq!(get(&router, "/health/live").await, (StatusCode::OK, serde_json::json!({"status": "live"})));
    assert_eq!(get(&router, "/health/ready").await.0, StatusCode::OK);
    assert_eq!(get(&router, "/health").await.0, StatusCode::OK, "the old path still answers");

    // The only provider of three routes has its breaker open.
    let up = gw.llm().providers().iter().find(|p| &*p.name == "up").unwrap().breaker.clone();
    up.force_open(llm_tower::circuit::UNKEYED);
    let (status, body) = get(&router, "/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let down: Vec<&str> =
        body["routes"].as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(down, ["fast", "gpt-4o-mini", "text-embedding-3-small"], "{body}");
    assert_eq!(body["routes"][0]["unusable"], serde_json::json!(["up"]));
    up.reset(llm_tower::circuit::UNKEYED);
    assert_eq!(get(&router, "/health/ready").await.0, StatusCode::OK);

    // Shutdown: from its start, readiness says to stop sending.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(gw.serve(listener, async move { rx.await.unwrap_or(()) }, Duration::from_secs(5)));
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(
        get(&router, "/health/ready").await,
        (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": "draining"}))
    );
    assert_eq!(get(&router, "/health/live").await.0, StatusCode::OK);
}

#[tokio::test]
async fn keys_mode_counts_tokens_and_cost_by_key_name() {
    let _turn = COUNTERS.lock().await;
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let key = "llmt-metrics-key-0001";
    let hash = llm_tower::auth::KeyHash::of(key);
    let extra = format!(
        "[auth]\nmode = 'keys'\n[[keys]]\nname = 'metered'\nhash = '{hash}'\n[prices.gpt-4o-mini]\ninput = 10.0\noutput = 100.0\n"
    );
    let h = start(&config_for(&mock, &extra)).await;
    let bearer = format!("Bearer {key}");
    for _ in 0..2 {
        let res = h.send(Method::POST, "/v1/chat/completions", CHAT, &[("authorization", &bearer)]).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.into_body().collect().await.unwrap();
    }
    let samples = scrape(&h).await;
    let by = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(
        by("llm_tower_key_tokens_total", &[("key", "metered"), ("kind", "output")]),
        32.0,
        "16 a call"
    );
    assert!(by("llm_tower_key_tokens_total", &[("key", "metered"), ("kind", "input")]) > 0.0);
    assert!(by("llm_tower_key_cost_microusd_total", &[("key", "metered")]) > 0.0);
    assert!(samples.iter().all(|(_, l, _)| l.values().all(|v| !v.contains(key))), "never the key itself");
    h.stop().await;
}
