//! A stack put together by hand with `ServiceBuilder`, choosing the layers:
//! a retry outside a breaker outside a rate limit, around the HTTP service.
//!
//! `cargo run --example custom_stack` (offline: in-process mock).

use std::time::Duration;

use http_body_util::BodyExt;
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig};
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::retry::{Backoff, RetryLayer, RetryPolicy};
use llm_tower::{LlmBody, LlmHttpService, Provider};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    // Every third call fails with a 503.
    let faults = FaultPlan::Random { faults: vec![Fault::status(503)], weights: vec![0.33] };
    let mock = MockServer::start(MockConfig { faults, seed: 3, ..Default::default() }).await?;
    let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;

    let retry = RetryLayer::new(
        RetryPolicy::default().max_attempts(4).backoff(Backoff::Fixed(Duration::from_millis(5))),
    );
    let breaker = CircuitBreakerLayer::new(CircuitConfig::default().consecutive_failures(Some(10)));
    let limiter =
        RateLimitLayer::new(Limits::default().requests_per_minute(10_000).tokens_per_minute(2_000_000));
    let svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(breaker.clone())
        .layer(limiter.clone())
        .service(LlmHttpService::new(provider));

    let mut ok = 0;
    for _ in 0..50 {
        let req = http::Request::post("/v1/chat/completions").body(LlmBody::from(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#,
        ))?;
        let res = svc.clone().oneshot(req).await?;
        ok += u32::from(res.status().is_success());
        res.into_body().collect().await?;
    }
    let (r, b, l) = (retry.stats(), breaker.handle().stats(), limiter.stats());
    println!(
        "{ok}/50 succeeded; {} retries; breaker saw {} calls, {} failures; limiter allowed {}",
        r.retries, b.calls, b.failures, l.allowed
    );
    assert_eq!(ok, 50, "retries absorbed the 503s");
    assert!(r.retries > 0);
    Ok(())
}
