//! The gateway end to end over loopback: a real hyper client, the gateway, and
//! the real mock provider behind it. Time-dependent cases run on paused time.

mod common;

use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use llm_tower::mock::{Fault, FaultPlan, Latency, MockConfig, MockServer};
use serde_json::Value;

use common::*;

#[tokio::test]
async fn models_and_health() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let (status, _, body) = h.call(Method::GET, "/v1/models", "").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<String> = json(&body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["claude-3-5-haiku-latest", "fast", "gpt-4o-mini", "text-embedding-3-small"]);
    let (status, _, body) = h.call(Method::GET, "/health", "").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &br#"{"status":"ok"}"#[..]));
    h.stop().await;
}

#[tokio::test]
async fn chat_json_embeddings_and_alias() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let (status, headers, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("x-request-id"), "provider request id preserved");
    let v = json(&body);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["completion_tokens"], 16);

    let alias = CHAT.replace("gpt-4o-mini", "fast");
    let (status, _, _) = h.call(Method::POST, "/v1/chat/completions", &alias).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mock.requests().last().unwrap().json()["model"], "gpt-4o-mini", "alias rewritten upstream");

    let (status, _, body) =
        h.call(Method::POST, "/v1/embeddings", r#"{"model":"text-embedding-3-small","input":"abc"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["data"][0]["object"], "embedding");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn streams_chunk_by_chunk_with_final_usage() {
    let latency = Latency { headers: Duration::ZERO, per_token: Duration::from_secs(1) };
    let mock = MockServer::start(MockConfig { latency, ..Default::default() }).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let start = tokio::time::Instant::now();
    let res = h.send(Method::POST, "/v1/chat/completions", STREAM, &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "first chunk forwarded at once, got {:?}",
        start.elapsed()
    );
    assert!(mock.stats().chunks_sent < 4);
    let rest = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.ends_with("data: [DONE]\n\n"));
    let usage_line = text.lines().rfind(|l| l.contains("\"usage\":{")).expect("final usage chunk");
    let v: Value = serde_json::from_str(usage_line.trim_start_matches("data: ")).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 16);
    h.stop().await;
}

/// A burst of events (the mock writes a whole answer at once) reaches the
/// caller in a few writes, not one per event: the gateway hands on what the
/// upstream connection has already read as one chunk.
#[tokio::test]
async fn a_burst_of_events_is_forwarded_in_a_few_chunks() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let res = h.send(Method::POST, "/v1/chat/completions", STREAM, &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let (mut chunks, mut bytes) = (0, Vec::new());
    while let Some(frame) = body.frame().await {
        chunks += 1;
        bytes.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    let events = bytes.windows(6).filter(|w| w == b"data: ").count();
    assert!(bytes.ends_with(b"data: [DONE]\n\n"));
    assert!(events >= 16 && chunks <= 4, "{events} events came in {chunks} chunks");
    h.stop().await;
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    type Case<'a> = (Method, &'a str, String, StatusCode, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/chat/completions",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            r#"{"messages":[]}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            r#"{"model":"gpt-9","messages":[]}"#.into(),
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            format!(
                r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(5000)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("payload_too_large"),
        ),
        (Method::POST, "/v1/nope", "{}".into(), StatusCode::NOT_FOUND, "invalid_request_error", None),
        (
            Method::GET,
            "/v1/chat/completions",
            "".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            None,
        ),
    ];
    for (method, path, body, status, kind, code) in cases {
        let (got, _, resp) = h.call(method.clone(), path, &body).await;
        assert_eq!(got, status, "{method} {path} {}", &body[..body.len().min(60)]);
        assert_eq!(error_of(&resp), (kind.to_owned(), code.map(str::to_owned)), "{path}");
    }
    let (_, _, resp) = h.call(Method::POST, "/v1/chat/completions", r#"{"messages":[]}"#).await;
    assert_eq!(json(&resp)["error"]["param"], "model");
    assert_eq!(mock.stats().llm_requests, 0, "nothing invalid reached the provider");
    h.stop().await;
}

#[tokio::test]
async fn upstream_failures_map_to_statuses() {
    let faults = FaultPlan::Script {
        faults: vec![
            Fault::status_retry_after(503, 4),
            Fault::HtmlError { status: 502 },
            Fault::status_retry_after(429, 2),
            Fault::Reset,
        ],
    };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = format!(
        "[[providers]]\nname='dead'\nkind='openai'\nbase_url='http://127.0.0.1:{dead}/v1'\nmodels=['dead-model']\n"
    );
    let h = start(&config_for(&mock, &extra)).await;

    let (status, headers, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "4");
    error_of(&body);

    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_of(&body).0, "api_error", "HTML error page became OpenAI JSON");

    let (status, headers, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(error_of(&body).0, "rate_limit_error");

    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_of(&body).1.as_deref(), Some("upstream_connection_error"));

    let (status, _, body) =
        h.call(Method::POST, "/v1/chat/completions", &CHAT.replace("gpt-4o-mini", "dead-model")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_of(&body).1.as_deref(), Some("upstream_unreachable"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn upstream_timeout_is_504() {
    let mock = MockServer::start(MockConfig {
        faults: FaultPlan::Always { fault: Fault::Hang },
        ..Default::default()
    })
    .await
    .unwrap();
    let h = start(&config_for(&mock, "")).await;
    let start = tokio::time::Instant::now();
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_of(&body), ("timeout_error".into(), Some("upstream_timeout".into())));
    assert_eq!(start.elapsed(), Duration::from_secs(5), "the configured headers_ms");
    h.stop().await;
}

#[tokio::test]
async fn broken_stream_ends_with_an_sse_error_event() {
    let faults = FaultPlan::Always { fault: Fault::StreamCut { after_tokens: 2 } };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", STREAM).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{last}");
    let v: Value = serde_json::from_str(last.split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "upstream_stream_aborted");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stalled_stream_ends_with_a_timeout_event() {
    let faults = FaultPlan::Always { fault: Fault::SlowBody { per_chunk_ms: 60_000 } };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", STREAM).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("event: error\n"), "{text}");
    assert!(text.contains("\"type\":\"timeout_error\""), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn anthropic_messages_pass_through() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let body =
        r#"{"model":"claude-3-5-haiku-latest","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, resp) = h.call(Method::POST, "/v1/messages", body).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&resp);
    assert_eq!((v["type"].as_str(), v["usage"]["output_tokens"].as_u64()), (Some("message"), Some(4)));
    let seen = mock.requests().pop().unwrap();
    assert_eq!(seen.header("x-api-key"), Some("ant-secret-456"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_in_flight_streams_finish() {
    let latency = Latency { headers: Duration::ZERO, per_token: Duration::from_millis(500) };
    let mock = MockServer::start(MockConfig { latency, ..Default::default() }).await.unwrap();
    let mut h = start(&config_for(&mock, "")).await;
    let res = h.send(Method::POST, "/v1/chat/completions", STREAM, &[]).await;
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    // Shut down while the stream is mid-way.
    let _ = h.shutdown.take().unwrap().send(());
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(rest.ends_with(b"data: [DONE]\n\n"), "the in-flight stream completed");
    h.server.await.unwrap().unwrap();
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(h.addr).await.is_err());
}

#[tokio::test]
async fn a_stream_event_that_never_ends_is_cut_with_a_typed_error_event() {
    let faults = FaultPlan::Always { fault: Fault::EndlessEvent { bytes: 32 << 20 } };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", STREAM).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.len() < (4 << 20) + (128 << 10), "cut at the 4 MiB event limit: {}", body.len());
    let text = String::from_utf8_lossy(&body);
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{}", &last[..last.len().min(200)]);
    let v: Value = serde_json::from_str(last.split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "upstream_event_too_large");
    h.stop().await;
}

#[tokio::test]
async fn a_single_model_is_retrieved_and_an_unknown_one_is_404() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let (status, _, body) = h.call(Method::GET, "/v1/models/gpt-4o-mini", "").await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!((v["id"].as_str(), v["object"].as_str()), (Some("gpt-4o-mini"), Some("model")));
    let (status, _, body) = h.call(Method::GET, "/v1/models/no-such-model", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body).1.as_deref(), Some("model_not_found"));
    h.stop().await;
}

#[tokio::test]
async fn chat_bodies_the_upstream_would_refuse_are_400_without_a_call() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    for (body, param) in [
        (r#"{"model":"gpt-4o-mini","messages":"hi"}"#, None),
        (r#"{"model":"gpt-4o-mini"}"#, Some("messages")),
        (r#"{"model":"gpt-4o-mini","messages":[],"n":-1}"#, None),
    ] {
        let (status, _, out) = h.call(Method::POST, "/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let v = json(&out);
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p);
        }
    }
    assert_eq!(mock.stats().llm_requests, 0);
    h.stop().await;
}
