//! Retry and circuit breaker in the gateway: config, behaviour, `/stats`.

mod common;

use std::time::Duration;

use http::{Method, StatusCode};
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use serde_json::Value;

use common::*;

const RETRY_FAST: &str = "[providers.retry]\nbackoff = 'fixed'\nbase_ms = 100\njitter = 'none'\n";

async fn stats(h: &Harness) -> Value {
    let (status, _, body) = h.call(Method::GET, "/stats", "").await;
    assert_eq!(status, StatusCode::OK);
    json(&body)
}

#[tokio::test(start_paused = true)]
async fn retries_recover_transient_failures() {
    let faults = FaultPlan::Script { faults: vec![Fault::status_retry_after(503, 1), Fault::Reset] };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let h = start(&config_with(&mock, RETRY_FAST, "")).await;
    let start = tokio::time::Instant::now();
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(start.elapsed(), Duration::from_millis(1000 + 100), "retry-after 1 s, then 100 ms backoff");
    assert_eq!(mock.stats().llm_requests, 3);
    let s = stats(&h).await;
    let retry = &s["providers"][0]["retry"];
    assert_eq!((retry["retries"].as_u64(), retry["recovered"].as_u64()), (Some(2), Some(1)));
    assert_eq!(retry["by_reason"]["status_503"], 1);
    assert_eq!(retry["by_reason"]["transport"], 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn client_errors_pass_through_without_retry() {
    let mock = MockServer::start(MockConfig {
        faults: FaultPlan::Always { fault: Fault::status(422) },
        ..Default::default()
    })
    .await
    .unwrap();
    let h = start(&config_with(&mock, RETRY_FAST, "")).await;
    let (status, _, _) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(mock.stats().llm_requests, 1);
    assert_eq!(
        stats(&h).await["providers"][0]["circuit_breaker"]["failures"],
        0,
        "client errors never count"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn open_breaker_answers_503_with_retry_after_and_spares_the_upstream() {
    let mock = MockServer::start(MockConfig {
        faults: FaultPlan::Always { fault: Fault::status(503) },
        ..Default::default()
    })
    .await
    .unwrap();
    let sections = "[providers.retry]\nenabled = false\n[providers.circuit_breaker]\nconsecutive_failures = 3\nopen_secs = 20\n";
    let h = start(&config_with(&mock, sections, "")).await;
    for _ in 0..3 {
        assert_eq!(
            h.call(Method::POST, "/v1/chat/completions", CHAT).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let (status, headers, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(&body), ("api_error".into(), Some("circuit_open".into())));
    let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((18..=22).contains(&after), "about the 20 s open period (±10 % jitter): {after}");
    assert_eq!(mock.stats().llm_requests, 3, "the open circuit kept traffic off the upstream");
    let s = stats(&h).await;
    let cb = &s["providers"][0]["circuit_breaker"];
    assert_eq!(cb["keys"][0]["state"], "open");
    assert_eq!((cb["failures"].as_u64(), cb["rejections"].as_u64()), (Some(3), Some(1)));
    assert!(s["upstream_hosts"][0]["requests"].as_u64().unwrap() >= 3);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn per_model_breakers_isolate_models() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let sections = "[providers.retry]\nenabled = false\n[providers.circuit_breaker]\nkey = 'model'\nconsecutive_failures = 2\n";
    let h = start(&config_with(&mock, sections, "")).await;
    mock.set_faults(FaultPlan::Always { fault: Fault::status(529) });
    for _ in 0..2 {
        h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    }
    mock.set_faults(FaultPlan::None);
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!((status, error_of(&body).1), (StatusCode::SERVICE_UNAVAILABLE, Some("circuit_open".into())));
    let emb = r#"{"model":"text-embedding-3-small","input":"x"}"#;
    assert_eq!(
        h.call(Method::POST, "/v1/embeddings", emb).await.0,
        StatusCode::OK,
        "another model is unaffected"
    );
    let s = stats(&h).await;
    let keys = s["providers"][0]["circuit_breaker"]["keys"].as_array().unwrap().clone();
    let state = |k: &str| keys.iter().find(|e| e["key"] == k).map(|e| e["state"].clone());
    assert_eq!(state("gpt-4o-mini"), Some("open".into()));
    assert_eq!(state("text-embedding-3-small"), Some("closed".into()));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_provider_is_answered_504_within_the_deadline_and_trips_the_breaker() {
    // Default retry (3 attempts): the deadline (the headers timeout, 5 s
    // here) covers all of them, so the client waits 5 s, not 3 x 5 s.
    let mock = MockServer::start(MockConfig {
        faults: FaultPlan::Always { fault: Fault::Hang },
        ..Default::default()
    })
    .await
    .unwrap();
    let h = start(&config_with(&mock, "[providers.circuit_breaker]\nconsecutive_failures = 2\n", "")).await;
    for _ in 0..2 {
        let start = tokio::time::Instant::now();
        let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{}", String::from_utf8_lossy(&body));
        assert_eq!(error_of(&body).1.as_deref(), Some("upstream_timeout"));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
    // Both hangs counted as failures: the breaker is open and spares the upstream.
    let s = stats(&h).await;
    assert_eq!(s["providers"][0]["circuit_breaker"]["failures"], 2, "{s}");
    let before = mock.stats().llm_requests;
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(
        (status, error_of(&body).1.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("circuit_open"))
    );
    assert_eq!(mock.stats().llm_requests, before);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn server_deadline_bounds_the_whole_request() {
    let mock = MockServer::start(MockConfig {
        faults: FaultPlan::Always { fault: Fault::Hang },
        ..Default::default()
    })
    .await
    .unwrap();
    let h = start(&config_with(&mock, "", "[server]\ndeadline_ms = 1500\n").replacen(
        "[server]\nmax_body_bytes = 4096\nstats_public = true\n",
        "",
        1,
    ))
    .await;
    let start = tokio::time::Instant::now();
    let (status, _, _) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_json_answer_cut_mid_body_is_retried_never_sent_as_a_200() {
    let faults = FaultPlan::Script { faults: vec![Fault::StreamCut { after_tokens: 1 }] };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let h = start(&config_with(&mock, RETRY_FAST, "")).await;
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::OK);
    assert!(json(&body)["choices"][0]["message"]["content"].is_string(), "a whole answer");
    assert_eq!(mock.stats().llm_requests, 2);
    assert_eq!(stats(&h).await["providers"][0]["retry"]["by_reason"]["bad_response"], 1);
    h.stop().await;

    // Without retries, broken JSON is a 502 with an OpenAI error body.
    let mock = MockServer::start(MockConfig {
        faults: FaultPlan::Always { fault: Fault::MalformedJson },
        ..Default::default()
    })
    .await
    .unwrap();
    let h = start(&config_for(&mock, "")).await;
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_of(&body), ("api_error".into(), Some("upstream_response_invalid".into())));
    h.stop().await;
}
