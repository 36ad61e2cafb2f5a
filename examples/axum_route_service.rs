//! A stack composed by hand from the layer crates and mounted on an axum
//! route with `Router::route_service`: no adapter code. The edge layer takes
//! axum's body, parses the request once and answers every error in OpenAI's
//! format; the tenant layer says who each request spends as.
//!
//! `cargo run --example axum_route_service` (offline: in-process mock; it
//! starts the app on a free port, calls it, and exits).

use std::time::Duration;

use axum::Router;
use http_body_util::{BodyExt, Full};
use llm_tower::cache::{CacheConfig, CacheLayer};
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig};
use llm_tower::core::edge::LlmEdgeLayer;
use llm_tower::core::tenant::TenantLayer;
use llm_tower::mock::MockServer;
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::retry::{RetryLayer, RetryPolicy};
use llm_tower::tokens::{AccountingConfig, Budget, Period, TokenAccountingLayer};
use llm_tower::{LlmHttpService, Provider};
use tower::ServiceBuilder;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    let mock = MockServer::start(Default::default()).await?;
    let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;

    // README:begin
    let accounting = TokenAccountingLayer::new(AccountingConfig {
        default_budget: Some(Budget { limit_micros: 1_000_000, period: Period::Day }),
        ..Default::default()
    });
    let cache = CacheLayer::new(CacheConfig::default());
    let stack = ServiceBuilder::new()
        .layer(LlmEdgeLayer::new().max_body_bytes(64 << 10).deadline(Duration::from_secs(30)))
        .layer(TenantLayer::header(http::HeaderName::from_static("x-team")))
        .layer(accounting.clone())
        .layer(cache.clone())
        .layer(RetryLayer::new(RetryPolicy::default()))
        .layer(CircuitBreakerLayer::new(CircuitConfig::default()))
        .layer(RateLimitLayer::new(Limits::default().requests_per_minute(600).tokens_per_minute(100_000)))
        .service(LlmHttpService::new(provider));
    let app = Router::new().route_service("/v1/chat/completions", stack);
    // README:end

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let chat = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"What is a tower layer?"}]}"#;
    let mut statuses = Vec::new();
    for body in [chat, chat, r#"{"model":"gpt-4o-mini","messages":"hi"}"#] {
        let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("x-team", "search")
            .body(Full::new(bytes::Bytes::from(body)))?;
        let res = http.request(req).await?;
        let status = res.status();
        let cache_status = res.headers().get("x-llm-cache").map(|v| v.to_str().unwrap_or("").to_owned());
        let text = res.into_body().collect().await?.to_bytes();
        println!(
            "{status} (cache: {}): {}",
            cache_status.as_deref().unwrap_or("-"),
            String::from_utf8_lossy(&text)
        );
        statuses.push(status.as_u16());
    }
    // A call, the same call from the cache, and a body the upstream would refuse (400, no call).
    assert_eq!(statuses, [200, 200, 400]);
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(mock.stats().llm_requests, 1);
    let spent: Vec<_> = accounting.ledger().entries().into_iter().map(|e| e.tenant.to_string()).collect();
    println!("ledger tenants: {spent:?}");
    assert!(spent.iter().all(|t| t == "search"), "{spent:?}");
    Ok(())
}
