//! A cross-dialect route: `chat` on an OpenAI-dialect provider first, then on
//! an Anthropic-dialect one (both the project's mock on loopback). The OpenAI
//! provider serves, then fails mid-test: OpenAI clients get OpenAI answers
//! from Claude; when it recovers it serves again; usage and cost are recorded
//! per provider, each at its own model's prices.

use http_body_util::BodyExt;
use llm_tower::failover::{Route, Target};
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower::tokens::AccountingConfig;
use llm_tower::upstream::ProviderKind;
use llm_tower::{LlmBody, LlmStack, Provider, ProviderSpec};
use serde_json::Value;
use tower::ServiceExt;

async fn ask(llm: &llm_tower::Llm, stream: bool) -> (String, Value) {
    let body = format!(
        r#"{{"model":"chat","stream":{stream},"messages":[{{"role":"user","content":"hello there"}}]}}"#
    );
    let req = http::Request::post("/v1/chat/completions").body(LlmBody::from(body)).unwrap();
    let res = llm.service().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let by = res.headers()["x-llm-backend"].to_str().unwrap().to_owned();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let v = if stream {
        // The last chunk with choices: the finish reason.
        let chunks: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        chunks.into_iter().rev().find(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())).unwrap()
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (by, v)
}

#[tokio::test]
async fn an_openai_route_fails_over_to_anthropic_and_back() {
    let openai = MockServer::start(MockConfig::default()).await.unwrap();
    let claude = MockServer::start(MockConfig::default()).await.unwrap();
    let anthropic = Provider::new(
        "claude",
        ProviderKind::Anthropic { version: llm_tower::upstream::ANTHROPIC_VERSION.into() },
        &format!("{}/v1", claude.url()),
    )
    .unwrap();
    let llm = LlmStack::new()
        .provider(
            ProviderSpec::new(
                Provider::openai_compatible("openai", &format!("{}/v1", openai.url())).unwrap(),
            )
            .models(["gpt-4o-mini"]),
        )
        .provider(ProviderSpec::new(anthropic).models(["claude-3-5-haiku-latest"]))
        .route(
            "chat",
            Route::new([
                Target::to("openai", "gpt-4o-mini"),
                Target::to("claude", "claude-3-5-haiku-latest"),
            ]),
        )
        .accounting(AccountingConfig::default())
        .build()
        .unwrap();

    // Healthy: the first target serves.
    for stream in [false, true] {
        assert_eq!(ask(&llm, stream).await.0, "openai");
    }
    assert_eq!(claude.stats().llm_requests, 0);
    let served_before = 2;

    // Mid-test the OpenAI provider fails: Claude answers, in OpenAI's shape.
    openai.set_faults(FaultPlan::Always { fault: Fault::status(503) });
    for stream in [false, true, false] {
        let (by, v) = ask(&llm, stream).await;
        assert_eq!(by, "claude", "the failing OpenAI provider is passed over");
        let object = if stream { "chat.completion.chunk" } else { "chat.completion" };
        assert_eq!(v["object"], object, "an OpenAI answer from Claude: {v}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
    assert!(claude.requests().iter().all(|r| r.path == "/v1/messages"), "Claude was asked natively");

    // Recovered: a healthy OpenAI provider serves again (it comes back in slow start).
    openai.set_faults(FaultPlan::None);
    let mut by_openai = 0;
    for _ in 0..40 {
        by_openai += usize::from(ask(&llm, false).await.0 == "openai");
    }
    assert!(by_openai > 0, "the OpenAI provider took traffic back");

    let lines = llm.accounting().unwrap().ledger().entries();
    let by = |p: &str| lines.iter().find(|e| e.provider == p).map(|e| e.total).unwrap();
    let (c, o) = (by("claude"), by("openai"));
    assert!(c.requests >= 3 && c.input_tokens > 0 && c.output_tokens > 0, "{lines:?}");
    assert_eq!(o.requests, (served_before + by_openai) as u64, "{lines:?}");
    // Each at its own prices: claude-3-5-haiku costs more per token than gpt-4o-mini.
    let per_token =
        |t: llm_tower::tokens::Totals| t.cost_micros as f64 / (t.input_tokens + t.output_tokens) as f64;
    assert!(per_token(c) > per_token(o), "claude {c:?} vs openai {o:?}");
}
