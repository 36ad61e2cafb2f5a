//! An outage opens the breaker; while open, calls fail fast without touching
//! the provider; when the outage ends, a probe closes it again.
//!
//! `cargo run -p llm-tower-circuit --example outage` (offline: in-process mock).

use std::time::Duration;

use llm_tower_circuit::{CircuitBreakerLayer, CircuitConfig};
use llm_tower_core::LlmBody;
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
use tower::{Layer, ServiceExt};

fn request() -> http::Request<LlmBody> {
    http::Request::post("/v1/chat/completions")
        .body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#))
        .expect("valid request")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    let mock = MockServer::start(MockConfig::default()).await?;
    let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;
    let layer = CircuitBreakerLayer::new(
        CircuitConfig::default()
            .consecutive_failures(Some(3))
            .open_duration(Duration::from_millis(300))
            .half_open_probes(1)
            .half_open_successes(1),
    );
    let handle = layer.handle();
    let mut transitions = handle.subscribe();
    tokio::spawn(async move {
        while transitions.changed().await.is_ok() {
            if let Some(t) = transitions.borrow().clone() {
                println!("  transition: {} -> {}", t.from, t.to);
            }
        }
    });
    let svc = layer.layer(LlmHttpService::new(provider));

    println!("outage starts");
    mock.set_faults(FaultPlan::Always { fault: Fault::status(503) });
    for i in 1..=6 {
        match svc.clone().oneshot(request()).await {
            Ok(res) => println!("call {i}: upstream answered {}", res.status()),
            Err(e) => println!("call {i}: refused: {e}"),
        }
    }
    println!("provider saw {} requests (3 before the circuit opened)", mock.stats().llm_requests);

    println!("outage ends; waiting out the open period");
    mock.set_faults(FaultPlan::None);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let res = svc.clone().oneshot(request()).await?;
    println!("probe: {} -> circuit {}", res.status(), handle.state("*"));
    tokio::task::yield_now().await;
    println!("{}", serde_json::to_string_pretty(&handle.stats())?);
    assert_eq!(handle.state("*"), llm_tower_circuit::CircuitState::Closed);
    Ok(())
}
