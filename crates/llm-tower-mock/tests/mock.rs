//! The mock over loopback, with a plain hyper client.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};
use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockLimits, MockServer};
use serde_json::{Value, json};

type C = Client<HttpConnector, Full<Bytes>>;

fn client() -> C {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    c: &C,
    mock: &MockServer,
    method: Method,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut b = Request::builder().method(method).uri(format!("{}{path}", mock.url()));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = c.request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"four score and seven years ago"}]}"#;

#[tokio::test]
async fn output_is_deterministic_and_usage_grows_with_input() {
    let mock = MockServer::start(MockConfig { seed: 42, ..Default::default() }).await.unwrap();
    let c = client();
    let (_, _, a) = send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &[]).await;
    let (_, _, b) = send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &[]).await;
    let (a, b): (Value, Value) = (serde_json::from_slice(&a).unwrap(), serde_json::from_slice(&b).unwrap());
    assert_eq!(a["choices"], b["choices"]);
    let long = CHAT.replace("four score", &"word ".repeat(400));
    let (_, _, l) = send(&c, &mock, Method::POST, "/v1/chat/completions", &long, &[]).await;
    let l: Value = serde_json::from_slice(&l).unwrap();
    assert!(
        l["usage"]["prompt_tokens"].as_u64().unwrap() > a["usage"]["prompt_tokens"].as_u64().unwrap() + 400
    );
}

#[tokio::test]
async fn control_endpoint_changes_faults_at_run_time() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let c = client();
    let outage =
        json!({"plan": "always", "fault": {"kind": "status", "status": 503, "retry_after": 3}}).to_string();
    let (s, _, _) = send(&c, &mock, Method::POST, "/mock/faults", &outage, &[]).await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..3 {
        let (s, h, _) = send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &[]).await;
        assert_eq!((s, h["retry-after"].to_str().unwrap()), (StatusCode::SERVICE_UNAVAILABLE, "3"));
    }
    send(&c, &mock, Method::POST, "/mock/faults", r#"{"plan":"none"}"#, &[]).await;
    let (s, _, _) = send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(&c, &mock, Method::POST, "/mock/faults", r#"{"plan":"bogus"}"#, &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (_, _, stats) = send(&c, &mock, Method::GET, "/mock/stats", "", &[]).await;
    let stats: Value = serde_json::from_slice(&stats).unwrap();
    assert_eq!(stats["stats"]["faults"]["status_503"], 3);
    assert_eq!(stats["stats"]["by_status"]["503"], 3);
    assert_eq!(stats["stats"]["llm_requests"], 4);
    assert!(stats["requests"].as_array().unwrap().iter().any(|r| r["path"] == "/v1/chat/completions"));
    // /mock/counters: the same counters, no log.
    let (_, _, counters) = send(&c, &mock, Method::GET, "/mock/counters", "", &[]).await;
    let counters: Value = serde_json::from_slice(&counters).unwrap();
    assert_eq!(counters["llm_requests"], 4);
    assert_eq!(counters["by_status"]["503"], 3);
    assert!(counters["requests"].is_u64(), "a count of requests, not the log: {counters}");
}

#[tokio::test]
async fn random_faults_follow_their_seeded_rate() {
    let plan = FaultPlan::Random { faults: vec![Fault::status(500)], weights: vec![0.25] };
    let run = |seed| {
        let plan = plan.clone();
        async move {
            let mock =
                MockServer::start(MockConfig { seed, faults: plan, ..Default::default() }).await.unwrap();
            let c = client();
            let mut statuses = Vec::new();
            for _ in 0..200 {
                statuses
                    .push(send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &[]).await.0.as_u16());
            }
            statuses
        }
    };
    let a = run(7).await;
    assert_eq!(a, run(7).await, "same seed, same sequence");
    let failures = a.iter().filter(|s| **s == 500).count();
    assert!((30..=70).contains(&failures), "~25% of 200, got {failures}");
}

#[tokio::test(start_paused = true)]
async fn token_bucket_limits_like_a_provider() {
    let mock = MockServer::start(MockConfig {
        limits: Some(MockLimits { rpm: 1000, tpm: 100 }),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = client();
    // Each request costs ~15 prompt + 16 output tokens: 3 fit in 100 TPM.
    for _ in 0..3 {
        assert_eq!(send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &[]).await.0, StatusCode::OK);
    }
    let (s, h, body) = send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["x-ratelimit-limit-tokens"], "100");
    let wait_ms: u64 = h["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!(wait_ms > 0);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    tokio::time::advance(Duration::from_millis(wait_ms)).await;
    assert_eq!(send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &[]).await.0, StatusCode::OK);
    assert_eq!(mock.stats().rate_limited, 1);
}

#[tokio::test]
async fn auth_and_request_validation() {
    let mock =
        MockServer::start(MockConfig { require_key: Some("k1".into()), ..Default::default() }).await.unwrap();
    let c = client();
    assert_eq!(
        send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    let ok = [("authorization", "Bearer k1")];
    assert_eq!(send(&c, &mock, Method::POST, "/v1/chat/completions", CHAT, &ok).await.0, StatusCode::OK);
    let (s, _, _) =
        send(&c, &mock, Method::POST, "/v1/chat/completions", &CHAT.replace("gpt-4o-mini", "nope"), &ok)
            .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        send(&c, &mock, Method::POST, "/v1/chat/completions", "{", &ok).await.0,
        StatusCode::BAD_REQUEST
    );
    let msg = r#"{"model":"claude-3-5-haiku-latest","messages":[]}"#;
    let (s, _, _) = send(&c, &mock, Method::POST, "/v1/messages", msg, &[("x-api-key", "k1")]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "anthropic-version and max_tokens are required");
}

#[tokio::test]
async fn anthropic_and_openai_streams_report_the_same_usage_as_json() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let c = client();
    let av = [("anthropic-version", "2023-06-01")];
    for (path, body, headers) in [
        (
            "/v1/messages",
            r#"{"model":"claude-3-5-haiku-latest","max_tokens":7,"messages":[{"role":"user","content":"hi"}]}"#,
            &av[..],
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","max_tokens":7,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
            &[][..],
        ),
    ] {
        let (_, _, json_body) = send(&c, &mock, Method::POST, path, body, headers).await;
        let streamed = body.replacen('{', r#"{"stream":true,"#, 1);
        let (_, h, sse_body) = send(&c, &mock, Method::POST, path, &streamed, headers).await;
        assert_eq!(h["content-type"], "text/event-stream");
        let mut j = UsageExtractor::new(BodyKind::Json);
        j.feed(&json_body);
        let mut s = UsageExtractor::new(BodyKind::Sse);
        s.feed(&sse_body);
        let (j, s) = (j.finish(StreamEnd::Complete), s.finish(StreamEnd::Complete));
        assert_eq!(j.usage, s.usage, "{path}");
        assert_eq!(s.usage.unwrap().output, 7);
        assert_eq!(s.end, StreamEnd::Complete);
    }
}
