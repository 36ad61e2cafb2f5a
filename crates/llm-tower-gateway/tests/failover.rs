//! Logical models served by several providers, through the gateway.

mod common;

use common::*;
use http::{Method, StatusCode};
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower_gateway::GatewayConfig;

fn two_providers(bad: &MockServer, good: &MockServer, routes: &str) -> String {
    format!(
        r#"
[server]
stats_public = true

[[providers]]
name = "bad"
kind = "openai"
base_url = "{}/v1"
models = ["bad-only"]
[providers.retry]
enabled = false

[[providers]]
name = "good"
kind = "openai"
base_url = "{}/v1"
models = ["good-only"]

{routes}
"#,
        bad.url(),
        good.url()
    )
}

const SMART: &str = r#"
[[routes]]
model = "smart"
targets = [{ provider = "bad", model = "gpt-4o-mini" }, { provider = "good", model = "gpt-4o-mini" }]
strategy = "priority"
"#;

#[tokio::test]
async fn a_logical_model_fails_over_to_the_next_provider() {
    let bad = MockServer::start(MockConfig {
        faults: FaultPlan::Always { fault: Fault::status(503) },
        ..Default::default()
    })
    .await
    .unwrap();
    let good = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&two_providers(&bad, &good, SMART)).await;
    let body = CHAT.replace("gpt-4o-mini", "smart");
    let res = h.send(Method::POST, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-llm-backend"], "good");
    assert_eq!(good.requests()[0].json()["model"], "gpt-4o-mini", "the target's model name went upstream");
    assert_eq!(bad.stats().llm_requests, 1);

    let (_, _, models) = h.call(Method::GET, "/v1/models", "").await;
    let ids: Vec<String> = json(&models)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"smart".to_owned()), "{ids:?}");

    let (_, _, stats) = h.call(Method::GET, "/stats", "").await;
    let s = json(&stats);
    let backends = s["backends"].as_array().unwrap();
    let of = |name: &str| backends.iter().find(|b| b["name"] == name).unwrap().clone();
    assert_eq!((of("bad")["failures"].as_u64(), of("good")["successes"].as_u64()), (Some(1), Some(1)));
    h.stop().await;
}

#[tokio::test]
async fn when_every_provider_of_a_route_fails_the_error_names_each() {
    let down = || {
        MockServer::start(MockConfig {
            faults: FaultPlan::Always { fault: Fault::status(500) },
            ..Default::default()
        })
    };
    let (a, b) = (down().await.unwrap(), down().await.unwrap());
    let toml = two_providers(&a, &b, SMART)
        .replace("models = [\"good-only\"]", "models = [\"good-only\"]\n[providers.retry]\nenabled = false");
    let h = start(&toml).await;
    let (status, _, body) =
        h.call(Method::POST, "/v1/chat/completions", &CHAT.replace("gpt-4o-mini", "smart")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_of(&body).1.as_deref(), Some("all_backends_failed"));
    let message = json(&body)["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("bad (500") && message.contains("good (500"), "{message}");
    h.stop().await;
}

#[test]
fn route_errors_name_the_field() {
    let toml = r#"
[[providers]]
name = "m"
kind = "mock"
models = ["x"]

[[routes]]
model = "smart"
targets = [{ provider = "nope" }]
hedge_after_ms = 100
hedge_percentile = 0.9
context_fallback = "missing"

[[routes]]
model = "smart"
targets = []
"#;
    let errs = GatewayConfig::from_toml(toml).unwrap().validate().unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "routes[0].targets[0].provider",
        "routes[0].hedge_percentile",
        "routes[0].context_fallback",
        "routes[1].model",
        "routes[1].targets",
    ] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
}
