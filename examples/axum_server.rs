//! An axum application that calls an LLM through the whole stack (a typed
//! `Client` over `LlmStack`), and puts llm-tower layers on its own routes too
//! (a rate limit on `/ask`).
//!
//! `cargo run --example axum_server` (offline: in-process mock; it starts the
//! app on a free port, calls it, and exits).

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::routing::post;
use http_body_util::BodyExt;
use llm_tower::cache::CacheConfig;
use llm_tower::core::chat::{ChatCompletionRequest, ChatMessage};
use llm_tower::mock::MockServer;
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::tokens::AccountingConfig;
use llm_tower::{Client, LlmService, LlmStack, Provider, ProviderSpec};

/// `POST /ask` with a question as the body; answers with the model's text.
async fn ask(
    State(client): State<Client<LlmService>>,
    question: String,
) -> Result<String, (http::StatusCode, String)> {
    let mut req = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(question)]);
    req.temperature = Some(0.0);
    let answer = client.chat(req).await.map_err(|e| {
        let info = llm_tower::core::ErrorInfo::from_error(&*e);
        (info.status, info.message)
    })?;
    let by = answer.served_by.as_deref().unwrap_or("?");
    Ok(format!(
        "{} [{} tokens, ${:.6}, from {by}]",
        answer.text().unwrap_or(""),
        answer.usage.total(),
        answer.cost_micros as f64 / 1e6
    ))
}

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    let mock = MockServer::start(Default::default()).await?;
    let llm = LlmStack::new()
        .provider(
            ProviderSpec::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?)
                .models(["gpt-4o-mini"]),
        )
        .accounting(AccountingConfig::default())
        .cache(CacheConfig::default())
        .build()
        .map_err(|e| format!("{e:?}"))?;
    // The app's own route is limited by the same layer the stack uses.
    let per_app = tower::ServiceBuilder::new()
        // axum wants infallible services: a refusal becomes its OpenAI-format error response.
        .layer(HandleErrorLayer::new(
            |e: tower::BoxError| async move { llm_tower::core::error_response(&*e) },
        ))
        .layer(RateLimitLayer::new(Limits::default().requests_per_minute(2)));
    let app = Router::new().route("/ask", post(ask)).layer(per_app).with_state(llm.client());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let req = http::Request::post(format!("http://{addr}/ask"))
            .body(http_body_util::Full::new(bytes::Bytes::from("What is a tower layer?")))?;
        let res = http.request(req).await?;
        let status = res.status();
        let text = res.into_body().collect().await?.to_bytes();
        println!("{status}: {}", String::from_utf8_lossy(&text));
        statuses.push(status.as_u16());
    }
    // The second answer came from the cache (temperature 0); the third hit the app's own limit.
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(llm.cache().map(|c| c.stats().hits), Some(1));
    Ok(())
}
