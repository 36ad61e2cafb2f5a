//! Token counting, cost and a spending budget around a provider: the input is
//! counted exactly before sending (tiktoken), the estimated cost reserved
//! against the tenant's budget, and the real usage read from the answer
//! (JSON or stream) priced and recorded in the ledger. Once the budget is
//! spent, requests are refused before they reach the provider.
//!
//! `cargo run -p llm-tower-tokens --example cost_and_budget` (offline: in-process mock).

use std::collections::HashMap;

use http_body_util::BodyExt;
use llm_tower_core::{BudgetExceeded, LlmBody};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{MockConfig, MockServer};
use llm_tower_tokens::{AccountingConfig, Budget, Period, Preflight, TokenAccountingLayer, TokenCountLayer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    let mock = MockServer::start(MockConfig::default()).await?;
    let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;
    // gpt-4o list prices; a budget of a tenth of a cent a day for everyone.
    let accounting = TokenAccountingLayer::new(AccountingConfig {
        default_budget: Some(Budget { limit_micros: 1_000, period: Period::Day }),
        budgets: HashMap::new(),
        ..AccountingConfig::default()
    });
    let svc = ServiceBuilder::new()
        .layer(TokenCountLayer::new(Preflight::Enforce))
        .layer(accounting.clone())
        .service(LlmHttpService::new(provider));

    let body = r#"{"model":"gpt-4o","max_tokens":50,"messages":[{"role":"user","content":"Write a haiku about queues."}]}"#;
    let stream = body.replacen('{', r#"{"stream":true,"#, 1);
    let mut refused = None;
    for i in 1..=20 {
        // Every other request streams, without asking for usage: the layer asks
        // for it and hides the extra chunk, so streams are priced too.
        let b = if i % 2 == 0 { stream.clone() } else { body.to_owned() };
        let req = http::Request::post("/v1/chat/completions").body(LlmBody::from(b))?;
        match svc.clone().oneshot(req).await {
            Ok(res) => {
                res.into_body().collect().await?;
            }
            Err(e) => {
                let over = e.downcast_ref::<BudgetExceeded>().ok_or(e.to_string())?;
                println!("request {i}: {over}");
                refused = Some(i);
                break;
            }
        }
    }
    for line in accounting.ledger().entries() {
        println!(
            "{} / {} / {}: {} calls, {} input + {} output tokens, ${:.6}",
            line.tenant,
            line.model,
            line.provider,
            line.total.requests,
            line.total.input_tokens,
            line.total.output_tokens,
            line.total.cost_micros as f64 / 1e6
        );
    }
    let spent = accounting.ledger().entries()[0].total.cost_micros;
    assert!(refused.is_some(), "the budget ran out");
    assert!(spent <= 1_000, "never spent past the budget: {spent}");
    Ok(())
}
