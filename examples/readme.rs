//! The README's library example, as written there (a test checks the README
//! shows exactly the lines between the markers), run offline against the
//! built-in mock: `cargo run --example readme`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), llm_tower::core::BoxError> {
    // README:begin
    use llm_tower::core::chat::{ChatCompletionRequest, ChatMessage};
    use llm_tower::{LlmStack, Provider, ProviderSpec, Secret};

    // Offline: the built-in mock provider on a free loopback port.
    let mock = llm_tower::mock::MockServer::start(Default::default()).await?;
    let primary = match Secret::from_env("OPENAI_API_KEY") {
        Some(key) if std::env::var("USE_OPENAI").is_ok() => Provider::openai(key),
        _ => Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?,
    };
    let llm = LlmStack::new()
        .provider(ProviderSpec::new(primary).models(["gpt-4o-mini"]))
        // A failover target (nothing listens there: the primary answers).
        .provider(
            ProviderSpec::new(Provider::openai_compatible("backup", "http://127.0.0.1:9/v1")?)
                .models(["gpt-4o-mini"]),
        )
        .accounting(Default::default()) // usage, cost, budgets
        .cache(Default::default()) // deterministic requests answered from memory
        .build()?; // StackErrors: every problem, each naming where
    let answer =
        llm.client().chat(ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")])).await?;
    println!("{:?} cost ${:.6}", answer.text(), answer.cost_micros as f64 / 1e6);
    // llm.service() is the whole stack as one tower service (axum, hyper, tonic, your own).
    // README:end
    assert!(answer.text().is_some_and(|t| !t.is_empty()));
    assert!(answer.cost_micros > 0, "priced at gpt-4o-mini's list price");
    Ok(())
}
