//! Every layer counts its events through the `metrics` facade (`llm_tower_*`).
//! Its own binary: the recorder is process-wide.

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::BodyExt;
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig};
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::retry::{Backoff, RetryPolicy};
use llm_tower::{LlmBody, LlmHttpService, LlmStack, Provider, ProviderSpec};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Layer, ServiceExt};

const CHAT: &str = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;

fn counters(s: &Snapshotter) -> HashMap<String, u64> {
    let mut seen = HashMap::new();
    for (key, _, _, value) in s.snapshot().into_vec() {
        let k = key.key();
        let labels: Vec<String> = k.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        if let DebugValue::Counter(n) = value {
            seen.insert(format!("{}{{{}}}", k.name(), labels.join(",")), n);
        }
    }
    seen
}

fn req() -> http::Request<LlmBody> {
    http::Request::post("/v1/chat/completions").body(LlmBody::from(CHAT)).unwrap()
}

#[tokio::test]
async fn retries_trips_failovers_refusals_and_cache_results_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let down = MockServer::start(MockConfig {
        faults: FaultPlan::Always { fault: Fault::status(503) },
        ..Default::default()
    })
    .await
    .unwrap();
    let up = MockServer::start(MockConfig::default()).await.unwrap();
    let spec = |name: &str, m: &MockServer| {
        ProviderSpec::new(Provider::openai_compatible(name, &format!("{}/v1", m.url())).unwrap())
            .models(["gpt-4o-mini"])
            .retry(RetryPolicy::default().max_attempts(2).backoff(Backoff::Fixed(Duration::from_millis(1))))
            .breaker(CircuitConfig::default().consecutive_failures(Some(2)))
    };
    let llm = LlmStack::new()
        .provider(spec("a", &down))
        .provider(spec("b", &up))
        .cache(Default::default())
        .build()
        .unwrap();
    for (header, expect) in [("x-llm-backend", "b"), ("x-llm-cache", "HIT")] {
        let res = llm.service().oneshot(req()).await.unwrap();
        assert_eq!(res.headers()[header], expect);
        res.into_body().collect().await.unwrap();
    }

    // A provider alone retries its 503 (max_attempts 2) and its breaker
    // (2 consecutive failures) trips; behind a failover with `b` to come, `a`
    // above was not retried (`RetryElsewhere`).
    let alone = llm_tower::retry::RetryLayer::new(
        RetryPolicy::default().max_attempts(2).backoff(Backoff::Fixed(Duration::from_millis(1))),
    )
    .layer(CircuitBreakerLayer::new(CircuitConfig::default().consecutive_failures(Some(2))).layer(
        LlmHttpService::new(Provider::openai_compatible("down", &format!("{}/v1", down.url())).unwrap()),
    ));
    assert_eq!(alone.oneshot(req()).await.unwrap().status(), 503);

    // Refusals of our own limiter and breaker, each on its own.
    let http = LlmHttpService::new(Provider::openai_compatible("up", &format!("{}/v1", up.url())).unwrap());
    let limited = RateLimitLayer::new(Limits::default().requests_per_minute(1)).layer(http.clone());
    for _ in 0..2 {
        let _ = limited.clone().oneshot(req()).await;
    }
    let breaker = CircuitBreakerLayer::new(CircuitConfig::default());
    breaker.handle().force_open("*");
    assert!(breaker.layer(http).oneshot(req()).await.is_err());

    let seen = counters(&snapshotter);
    let get = |k: &str| seen.get(k).copied().unwrap_or_else(|| panic!("{k} not in {seen:#?}"));
    assert_eq!(
        get("llm_tower_retries_total{reason=status_503}"),
        1,
        "the lone provider's 503 was retried once"
    );
    assert_eq!(get("llm_tower_retry_refused_total{why=elsewhere}"), 1, "a's 503 went on to b unretried");
    assert_eq!(get("llm_tower_retry_give_ups_total{}"), 1);
    assert_eq!(get("llm_tower_circuit_transitions_total{to=open}"), 1, "the lone provider's breaker tripped");
    let forced =
        seen.iter().filter(|(k, _)| k.starts_with("llm_tower_circuit_transitions_total{to=forced")).count();
    assert_eq!(forced, 1, "the forced one is counted under its own state: {seen:#?}");
    assert_eq!(get("llm_tower_failover_failed_attempts_total{backend=a}"), 1);
    assert_eq!(get("llm_tower_cache_requests_total{result=miss}"), 1);
    assert_eq!(get("llm_tower_cache_requests_total{result=hit}"), 1);
    assert_eq!(get("llm_tower_ratelimit_rejected_total{limit=requests_per_minute}"), 1);
    assert_eq!(get("llm_tower_circuit_rejections_total{}"), 1);
}
