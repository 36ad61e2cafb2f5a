//! Layers composed by hand in the README's order, against the mock: a layer's
//! own output is never read as the upstream's.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState};
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::retry::{Backoff, Jitter, RetryLayer, RetryPolicy};
use llm_tower::{LlmBody, LlmHttpService, Provider};
use tower::{Layer, ServiceExt};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// A mock that answers 590 requests, then a 503, then answers again; and the
/// requests to fill a 600 RPM limiter up to that 503.
async fn almost_full(
    svc: &(
         impl tower::Service<
        Request<LlmBody>,
        Response = http::Response<impl http_body::Body<Data = bytes::Bytes, Error = impl std::fmt::Debug>>,
        Error = tower::BoxError,
    > + Clone
     ),
) {
    for _ in 0..590 {
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers().contains_key("x-ratelimit-reset-requests"),
            "successes carry the limiter's headers"
        );
        res.into_body().collect().await.unwrap();
    }
}

async fn mock_then_503() -> (MockServer, LlmHttpService) {
    let mut faults = vec![Fault::Ok; 590];
    faults.push(Fault::status(503));
    let mock = MockServer::start(MockConfig { faults: FaultPlan::Script { faults }, ..Default::default() })
        .await
        .unwrap();
    let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap();
    (mock, LlmHttpService::new(provider))
}

fn req() -> Request<LlmBody> {
    Request::post("/v1/chat/completions").body(LlmBody::from(CHAT)).unwrap()
}

fn limiter() -> RateLimitLayer {
    // RPM 600: after 590 requests its own reset is about a minute away.
    RateLimitLayer::new(Limits::default().requests_per_minute(600))
}

#[tokio::test(start_paused = true)]
async fn one_503_is_retried_after_the_configured_backoff_whatever_the_limiters_state() {
    let (_mock, http) = mock_then_503().await;
    let retry = RetryLayer::new(
        RetryPolicy::default()
            .backoff(Backoff::Fixed(Duration::from_millis(20)))
            .jitter(Jitter::None)
            .budget(None),
    );
    let breaker = CircuitBreakerLayer::new(CircuitConfig::default());
    let svc = retry.layer(breaker.layer(limiter().layer(http)));
    almost_full(&svc).await;
    let start = tokio::time::Instant::now();
    let res = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_millis(20), "the backoff, not the limiter's reset");
    assert_eq!(retry.stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn the_breakers_open_time_is_its_own() {
    let (_mock, http) = mock_then_503().await;
    let breaker = CircuitBreakerLayer::new(
        CircuitConfig::default()
            .consecutive_failures(Some(1))
            .open_duration(Duration::from_millis(500))
            .open_jitter(0.0)
            .half_open_successes(1),
    );
    let svc = breaker.layer(limiter().layer(http));
    almost_full(&svc).await;
    assert_eq!(svc.clone().oneshot(req()).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(breaker.handle().state("*"), CircuitState::Open);
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    let open = err.downcast_ref::<llm_tower::core::CircuitOpen>().expect("refused while open");
    assert_eq!(open.retry_after, Some(Duration::from_millis(500)), "its own open period");
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        svc.clone().oneshot(req()).await.unwrap().status(),
        StatusCode::OK,
        "a probe passes after 500 ms"
    );
    assert_eq!(breaker.handle().state("*"), CircuitState::Closed);
}
