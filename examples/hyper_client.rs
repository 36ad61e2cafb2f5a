//! The layers around a plain hyper-util client (not llm-tower's HTTP
//! service): the breaker and retry are generic over any HTTP service.
//!
//! `cargo run --example hyper_client` (offline: in-process mock).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig};
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower::retry::{Backoff, RetryLayer, RetryPolicy};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    // The first call gets a 429 with retry-after: 1, the second a 500.
    let faults = FaultPlan::Script { faults: vec![Fault::status_retry_after(429, 1), Fault::status(500)] };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await?;

    let hyper: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let client = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        let hyper = hyper.clone();
        async move { hyper.request(req).await }
    });
    let retry = RetryLayer::new(
        RetryPolicy::default().max_attempts(3).backoff(Backoff::Fixed(Duration::from_millis(50))),
    );
    let breaker = CircuitBreakerLayer::new(CircuitConfig::default());
    let svc = ServiceBuilder::new().layer(retry.clone()).layer(breaker.clone()).service(client);

    let url = format!("{}/v1/chat/completions", mock.url());
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
    let started = std::time::Instant::now();
    let req = http::Request::post(url.as_str())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let res = svc.oneshot(req).await?;
    let status = res.status();
    let answer = res.into_body().collect().await?.to_bytes();
    println!(
        "{status} after {:?} and {} retries: {}",
        started.elapsed(),
        retry.stats().retries,
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(status, 200);
    assert_eq!(retry.stats().retries, 2, "the 429 (after its retry-after) and the 500 were retried");
    Ok(())
}
