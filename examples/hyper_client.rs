//! The layers around a plain hyper-util client (not llm-tower's HTTP
//! service), with no adapter: hyper-util's `Client` is a tower `Service`, and
//! the layers take its `Incoming` body and its errors as they are. Retry and
//! the breaker are generic over any HTTP service; the limiter's token budget
//! and accounting read the request once (`LlmBody`, the request body type the
//! client is built for).
//!
//! `cargo run --example hyper_client` (offline: in-process mock).

use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llm_tower::LlmBody;
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig};
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::retry::{Backoff, RetryLayer, RetryPolicy};
use llm_tower::tokens::{AccountingConfig, TokenAccountingLayer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    // The first call gets a 429 with retry-after: 1, the second a 500.
    let faults = FaultPlan::Script { faults: vec![Fault::status_retry_after(429, 1), Fault::status(500)] };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await?;

    let hyper: Client<_, LlmBody> = Client::builder(TokioExecutor::new()).build_http();
    let retry = RetryLayer::new(
        RetryPolicy::default().max_attempts(3).backoff(Backoff::Fixed(Duration::from_millis(50))),
    );
    let accounting = TokenAccountingLayer::new(AccountingConfig::default());
    let svc = ServiceBuilder::new()
        .layer(accounting.clone())
        .layer(retry.clone())
        .layer(CircuitBreakerLayer::new(CircuitConfig::default()))
        .layer(RateLimitLayer::new(Limits::default().tokens_per_minute(100_000)))
        .service(hyper);

    let url = format!("{}/v1/chat/completions", mock.url());
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
    let started = std::time::Instant::now();
    let req = http::Request::post(url.as_str())
        .header("content-type", "application/json")
        .body(LlmBody::from(body))?;
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
    // Accounting read the answer's usage as it passed (once, with the limiter's meter).
    let spent = accounting.ledger().entries();
    assert_eq!(spent.len(), 1);
    println!(
        "recorded {} tokens, {} micro-dollars",
        spent[0].total.input_tokens + spent[0].total.output_tokens,
        spent[0].total.cost_micros
    );
    assert!(spent[0].total.output_tokens > 0);
    Ok(())
}
