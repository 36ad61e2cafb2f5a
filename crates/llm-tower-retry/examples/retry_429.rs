//! A provider answers 429 with `retry-after: 1`, then 503, then succeeds;
//! the retry layer waits what the server asked, backs off, and recovers.
//!
//! `cargo run -p llm-tower-retry --example retry_429` (offline: in-process mock).

use std::time::{Duration, Instant};

use llm_tower_core::LlmBody;
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower_retry::{Backoff, RetryLayer, RetryPolicy};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    let faults = FaultPlan::Script { faults: vec![Fault::status_retry_after(429, 1), Fault::status(503)] };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await?;
    let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;

    let retry = RetryLayer::new(
        RetryPolicy::default()
            .max_attempts(4)
            .backoff(Backoff::Exponential {
                base: Duration::from_millis(200),
                factor: 2.0,
                cap: Duration::from_secs(2),
            })
            .deadline(Duration::from_secs(10)),
    );
    let svc = ServiceBuilder::new().layer(retry.clone()).service(LlmHttpService::new(provider));

    let started = Instant::now();
    let req = http::Request::post("/v1/chat/completions")
        .body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#))?;
    let res = svc.oneshot(req).await?;
    println!("status {} after {:?}", res.status(), started.elapsed());
    println!("{:#?}", retry.stats());
    assert_eq!(res.status(), 200);
    Ok(())
}
