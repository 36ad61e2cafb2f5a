//! Breaker, retry and rate limit around a gRPC client: the layers are
//! generic over any HTTP service, and `GrpcClassifier` reads `grpc-status`
//! (in trailers, or trailers-only heads). The client is hyper over HTTP/2
//! against the mock's small gRPC echo service (`/echo.Echo/Say`); a tonic
//! channel is the same kind of service and takes the same layers.
//!
//! `cargo run --example grpc_client` (offline: in-process mock).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState};
use llm_tower::core::GrpcClassifier;
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::retry::{Backoff, RetryLayer, RetryPolicy};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    let mock = MockServer::start(MockConfig::default()).await?;
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let channel = tower::service_fn(move |r: http::Request<Full<Bytes>>| {
        let h2 = h2.clone();
        async move { h2.request(r).await }
    });
    let retry = RetryLayer::new(RetryPolicy::default().backoff(Backoff::Fixed(Duration::from_millis(5))))
        .with_classifier(GrpcClassifier);
    let breaker = CircuitBreakerLayer::new(CircuitConfig::default().consecutive_failures(Some(3)))
        .with_classifier(GrpcClassifier);
    let limiter = RateLimitLayer::new(Limits::default().requests_per_minute(6_000));
    let svc =
        ServiceBuilder::new().layer(retry.clone()).layer(breaker.clone()).layer(limiter).service(channel);
    let url = format!("{}/echo.Echo/Say", mock.url());
    let say = |text: &'static [u8]| {
        let mut frame = vec![0u8, 0, 0, 0, text.len() as u8];
        frame.extend_from_slice(text);
        http::Request::post(url.as_str())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(frame)))
    };

    // UNAVAILABLE once: retried, then echoed.
    mock.set_faults(FaultPlan::Script { faults: vec![Fault::status(503)] });
    let res = svc.clone().oneshot(say(b"hello")?).await?;
    let out = res.into_body().collect().await?;
    let status = out.trailers().map(|t| t["grpc-status"].clone());
    println!("echo {:?}, grpc-status {status:?}, retries {}", out.to_bytes(), retry.stats().retries);
    assert_eq!(retry.stats().retries, 1);

    // INTERNAL every time: the breaker opens after 3 calls and refuses the rest.
    mock.set_faults(FaultPlan::Always { fault: Fault::status(500) });
    for _ in 0..6 {
        // Read each answer to its end: the trailers carry the status.
        if let Ok(res) = svc.clone().oneshot(say(b"x")?).await {
            let _ = res.into_body().collect().await;
        }
    }
    println!("breaker state: {:?}", breaker.handle().state("*"));
    assert_eq!(breaker.handle().state("*"), CircuitState::Open);
    Ok(())
}
