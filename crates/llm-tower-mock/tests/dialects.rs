//! The mock's Gemini endpoints and tool calls in each dialect, over loopback.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llm_tower_mock::{MockConfig, MockServer};
use serde_json::{Value, json};

async fn post(mock: &MockServer, path: &str, body: Value, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let c = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut b = Request::post(format!("{}{path}", mock.url())).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = c.request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let status = res.status();
    (status, String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
}

fn data(sse: &str) -> Vec<Value> {
    sse.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

const GEMINI: &str = "/v1beta/models/gemini-2.0-flash";

#[tokio::test]
async fn gemini_generate_content_json_and_sse() {
    let mock = MockServer::start(MockConfig { require_key: Some("g-key".into()), ..Default::default() })
        .await
        .unwrap();
    let req = json!({"systemInstruction": {"parts": [{"text": "be brief"}]},
                     "contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
                     "generationConfig": {"maxOutputTokens": 5}});
    let (status, _) = post(&mock, &format!("{GEMINI}:generateContent"), req.clone(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the key is required");
    let (status, body) =
        post(&mock, &format!("{GEMINI}:generateContent"), req.clone(), &[("x-goog-api-key", "g-key")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS", "5 tokens asked, fewer than the reply: {v}");
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 5);
    assert!(v["usageMetadata"]["promptTokenCount"].as_u64().unwrap() > 0);
    // The stream, the key in the query as Gemini also allows.
    let (status, body) =
        post(&mock, &format!("{GEMINI}:streamGenerateContent?alt=sse&key=g-key"), req, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chunks = data(&body);
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks.last().unwrap()["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert!(chunks[..4].iter().all(|c| c["candidates"][0].get("finishReason").is_none()));
}

#[tokio::test]
async fn tools_are_called_in_each_dialect_and_results_answered() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]});
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "weather?"}],
                      "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": schema}}]});
    let (_, body) = post(&mock, "/v1/chat/completions", chat.clone(), &[]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "mock"})
    );

    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let (_, body) = post(&mock, "/v1/chat/completions", streamed, &[]).await;
    let args: String = data(&body)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "mock"}));

    let mut none = chat.clone();
    none["tool_choice"] = json!("none");
    let (_, body) = post(&mock, "/v1/chat/completions", none, &[]).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["finish_reason"], "stop");
    let mut answered = chat;
    answered["messages"] = json!([{"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]);
    let (_, body) = post(&mock, "/v1/chat/completions", answered, &[]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["finish_reason"],
        "stop",
        "a tool result gets text"
    );

    let messages = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 64,
                          "messages": [{"role": "user", "content": "weather?"}],
                          "tools": [{"name": "get_weather", "input_schema": schema}]});
    let (_, body) = post(&mock, "/v1/messages", messages, &[("anthropic-version", "2023-06-01")]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"city": "mock"}));

    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "weather?"}]}],
                        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": schema}]}]});
    let (_, body) = post(&mock, &format!("{GEMINI}:generateContent"), gemini, &[]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "mock"}})
    );
}
