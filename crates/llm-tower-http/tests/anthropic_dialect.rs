//! OpenAI chat completions served by an Anthropic-dialect provider (the mock
//! speaking Anthropic Messages on loopback): the request goes out as
//! `POST /v1/messages`, the answer comes back as OpenAI's, JSON and streamed.

use http_body_util::BodyExt;
use llm_tower_core::{LlmBody, Secret};
use llm_tower_http::{LlmHttpService, Provider, ProviderKind};
use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
use serde_json::Value;
use tower::ServiceExt;

fn anthropic(m: &MockServer) -> LlmHttpService {
    let kind = ProviderKind::Anthropic { version: llm_tower_http::ANTHROPIC_VERSION.into() };
    let p =
        Provider::new("claude", kind, &format!("{}/v1", m.url())).unwrap().with_key(Secret::new("ant-key"));
    LlmHttpService::new(p)
}

async fn call(svc: &LlmHttpService, body: &str) -> (http::StatusCode, http::HeaderMap, String) {
    let req = http::Request::post("/v1/chat/completions").body(LlmBody::from(body.to_owned())).unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn a_plain_answer_comes_back_in_openai_shape() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let svc = anthropic(&mock);
    let (status, headers, body) = call(
        &svc,
        r#"{"model":"claude-3-5-haiku-latest","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-3-5-haiku-latest");
    assert!(v["choices"][0]["message"]["content"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0 && u["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    // The mock saw the native endpoint, authenticated the Anthropic way.
    let seen = mock.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/v1/messages");
    let sent: Value = serde_json::from_str(&last.body).unwrap();
    assert_eq!(sent["system"], "be brief");
    assert_eq!(sent["max_tokens"], 4096, "the documented default");
}

#[tokio::test]
async fn a_stream_comes_back_as_openai_chunks_with_usage_last() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let svc = anthropic(&mock);
    let (status, headers, body) = call(
        &svc,
        r#"{"model":"claude-3-5-haiku-latest","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let data: Vec<&str> = body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!text.is_empty());
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], serde_json::json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn refusals_and_provider_errors_are_openai_errors() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let svc = anthropic(&mock);
    let req = http::Request::post("/v1/chat/completions")
        .body(LlmBody::from(r#"{"model":"claude-3-5-haiku-latest","n":2,"messages":[]}"#))
        .unwrap();
    let err = svc.clone().oneshot(req).await.unwrap_err();
    let res = llm_tower_core::error_response(&*err);
    assert_eq!(res.status(), 400);
    assert_eq!(mock.stats().llm_requests, 0, "refused before any call");

    let overloaded = FaultPlan::Always { fault: Fault::status(529) };
    let mock = MockServer::start(MockConfig { faults: overloaded, ..Default::default() }).await.unwrap();
    let (status, _, body) = call(
        &anthropic(&mock),
        r#"{"model":"claude-3-5-haiku-latest","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 529);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"]["message"].as_str().is_some(), "an OpenAI error body: {body}");
}
