//! OpenAI chat completions served by Anthropic- and Gemini-dialect providers
//! (the mock speaking Messages and generateContent on loopback): the request
//! goes out in the provider's API, the answer comes back as OpenAI's, JSON and
//! streamed, tool calls included.

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

fn gemini(m: &MockServer) -> LlmHttpService {
    let p = Provider::new("gemini", ProviderKind::Gemini, &format!("{}/v1beta", m.url()))
        .unwrap()
        .with_key(Secret::new("g-key"));
    LlmHttpService::new(p)
}

fn sse_chunks(body: &str) -> Vec<Value> {
    let data: Vec<&str> = body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect()
}

#[tokio::test]
async fn gemini_answers_plain_and_streamed_in_openai_shape() {
    let mock = MockServer::start(MockConfig { require_key: Some("g-key".into()), ..Default::default() })
        .await
        .unwrap();
    let svc = gemini(&mock);
    let (status, _, body) = call(
        &svc,
        r#"{"model":"gemini-2.0-flash","max_tokens":4,"messages":[{"role":"system","content":"brief"},{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "4 tokens asked");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let last = mock.requests().pop().unwrap();
    assert_eq!(last.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    let sent: Value = serde_json::from_str(&last.body).unwrap();
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "brief");

    let (status, _, body) = call(
        &svc,
        r#"{"model":"gemini-2.0-flash","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let chunks = sse_chunks(&body);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!text.is_empty());
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");
    assert!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let path = mock.requests().pop().unwrap().path;
    assert!(path.contains(":streamGenerateContent") && path.ends_with("alt=sse"), "{path}");
}

const TOOLS: &str = r#""tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]"#;

#[tokio::test]
async fn tool_calls_come_back_from_both_dialects_and_results_go_back() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    for (svc, model) in [(anthropic(&mock), "claude-3-5-haiku-latest"), (gemini(&mock), "gemini-2.0-flash")] {
        let ask = format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"weather in Paris?"}}],{TOOLS}}}"#
        );
        let (status, _, body) = call(&svc, &ask).await;
        assert_eq!(status, 200, "{model}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{model}: {v}");
        let call_ = v["choices"][0]["message"]["tool_calls"][0].clone();
        assert_eq!(call_["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(call_["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, serde_json::json!({"city": "mock"}));

        // Streamed: the call's deltas, indexed, with its id first.
        let streamed = ask.replacen('{', r#"{"stream":true,"#, 1);
        let (_, _, body) = call(&svc, &streamed).await;
        let chunks = sse_chunks(&body);
        let deltas: Vec<&Value> =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
        assert!(deltas[0]["id"].is_string() && deltas.iter().all(|d| d["index"] == 0), "{model}: {deltas:?}");
        let joined: String = deltas.iter().filter_map(|d| d["function"]["arguments"].as_str()).collect();
        assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), args, "{model}");
        assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");

        // The result goes back; the provider answers in text.
        let id = call_["id"].as_str().unwrap();
        let answer = format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"weather in Paris?"}},{{"role":"assistant","content":null,"tool_calls":[{call_}]}},{{"role":"tool","tool_call_id":"{id}","content":"12 C"}}],{TOOLS}}}"#
        );
        let (status, _, body) = call(&svc, &answer).await;
        assert_eq!(status, 200, "{model}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{model}: {v}");
    }
}

fn openai(m: &MockServer) -> LlmHttpService {
    LlmHttpService::new(Provider::openai_compatible("openai", &format!("{}/v1", m.url())).unwrap())
}

async fn messages(svc: &LlmHttpService, body: &str) -> (http::StatusCode, String) {
    let req = http::Request::post("/v1/messages").body(LlmBody::from(body.to_owned())).unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn a_messages_client_is_served_by_an_openai_provider() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let svc = openai(&mock);
    let (status, body) = messages(
        &svc,
        r#"{"model":"gpt-4o-mini","max_tokens":64,"system":"brief","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["type"].as_str(), v["stop_reason"].as_str()), (Some("message"), Some("end_turn")), "{v}");
    assert!(v["content"][0]["text"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        v["usage"]["input_tokens"].as_u64().unwrap() > 0 && v["usage"]["output_tokens"].as_u64().unwrap() > 0
    );
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");

    let (status, body) = messages(
        &svc,
        r#"{"model":"gpt-4o-mini","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"weather?"}],"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("event: "))
        .map(|e| e.split('\n').next().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert!(names.contains(&"content_block_start") && names.contains(&"content_block_stop"), "{names:?}");
    assert!(body.contains(r#""stop_reason":"tool_use""#) && body.contains("input_json_delta"), "{body}");

    // An OpenAI error comes back in Anthropic's shape.
    let (status, body) = messages(
        &svc,
        r#"{"model":"no-such-model","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("not_found_error")),
        "{v}"
    );
}
