//! LlmHttpService against the real mock over loopback. Time-dependent cases
//! run on paused tokio time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use llm_tower_core::response::{BodyEnd, BodyObserver};
use llm_tower_core::usage::{BodyKind, StreamEnd};
use llm_tower_core::{
    BadResponse, BadResponseKind, BoxError, Classified, Classify, Connect, Deadline, ErrorInfo, LlmBody,
    LlmClassifier, Secret, StreamAborted, Timeout, TimeoutPhase, Transport, UsageReport,
};
use llm_tower_http::{ClientConfig, HttpClient, LlmHttpService, Provider, ProviderKind, Timeouts};
use llm_tower_mock::{Fault, FaultPlan, Latency, MockConfig, MockLimits, MockServer};
use tower::ServiceExt;

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the tower"}]}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello to the tower"}]}"#;

async fn mock(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg).await.expect("mock starts")
}

fn service(mock: &MockServer) -> LlmHttpService {
    let p = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))
        .unwrap()
        .with_key(Secret::new("sk-mock"));
    LlmHttpService::new(p)
}

fn post(path: &str, body: &'static str) -> Request<LlmBody> {
    Request::post(path).header("content-type", "application/json").body(LlmBody::from(body)).unwrap()
}

async fn call(
    svc: &LlmHttpService,
    req: Request<LlmBody>,
) -> Result<http::Response<llm_tower_core::LlmResponseBody>, BoxError> {
    svc.clone().oneshot(req).await
}

/// Reads a body with a usage observer attached; returns the bytes and report.
async fn read_with_usage(
    mut body: llm_tower_core::LlmResponseBody,
    kind: BodyKind,
) -> (Result<Bytes, BoxError>, UsageReport) {
    struct Keep(BodyKind, Arc<Mutex<Option<UsageReport>>>);
    impl BodyObserver for Keep {
        fn wants_usage(&self) -> Option<BodyKind> {
            Some(self.0)
        }
        fn on_end(self: Box<Self>, end: &mut BodyEnd) {
            *self.1.lock().unwrap() = end.report.clone();
        }
    }
    let slot = Arc::new(Mutex::new(None));
    body.observe(Keep(kind, slot.clone()));
    let bytes = body.collect().await.map(|c| c.to_bytes());
    let report = slot.lock().unwrap().take().expect("usage reported");
    (bytes, report)
}

#[tokio::test]
async fn json_passthrough_with_usage() {
    let mock = mock(MockConfig::default()).await;
    let res = call(&service(&mock), post("/v1/chat/completions", CHAT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["x-request-id"].to_str().unwrap().starts_with("req_mock_"));
    assert_eq!(llm_tower_core::ServedBy::of(&res), Some("mock"), "the answer names its provider");
    let (bytes, report) = read_with_usage(res.into_body(), BodyKind::Json).await;
    let v: serde_json::Value = serde_json::from_slice(&bytes.unwrap()).unwrap();
    let usage = report.usage.expect("usage read");
    assert_eq!(usage.input, v["usage"]["prompt_tokens"].as_u64().unwrap());
    assert_eq!(usage.output, 16);
    assert_eq!(report.finish_reason.as_deref(), Some("stop"));
    assert_eq!(report.end, StreamEnd::Complete);
    // The provider's key went upstream, as a bearer token.
    assert_eq!(mock.requests()[0].header("authorization"), Some("Bearer sk-mock"));
}

#[tokio::test(start_paused = true)]
async fn stream_first_chunk_arrives_before_the_last_is_sent() {
    let latency = Latency { headers: Duration::from_millis(300), per_token: Duration::from_secs(1) };
    let mock = mock(MockConfig { latency, ..Default::default() }).await;
    let start = tokio::time::Instant::now();
    let res = call(&service(&mock), post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    // 16 tokens at 1 s each: the first chunk came long before generation ended.
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert!(mock.stats().chunks_sent < 5, "{:?}", mock.stats());
    let (rest, report) = read_with_usage(body, BodyKind::Sse).await;
    assert!(rest.unwrap().ends_with(b"data: [DONE]\n\n"));
    assert!(start.elapsed() >= Duration::from_secs(16));
    assert_eq!(report.usage.unwrap().output, 16);
    assert_eq!(report.end, StreamEnd::Complete);
}

#[tokio::test]
async fn upstream_error_status_is_returned_with_its_hint() {
    let faults = FaultPlan::Script { faults: vec![Fault::status_retry_after(503, 7)] };
    let mock = mock(MockConfig { faults, ..Default::default() }).await;
    let res = call(&service(&mock), post("/v1/chat/completions", CHAT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "7");
    let Classified::Ready(c) = LlmClassifier::default().classify_response(&res) else { panic!() };
    assert!(c.retryable);
    assert_eq!(c.retry_after(), Some(Duration::from_secs(7)));
    // The next request is answered normally.
    let res = call(&service(&mock), post("/v1/chat/completions", CHAT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn reset_before_headers_is_a_retryable_transport_error() {
    let faults = FaultPlan::Script { faults: vec![Fault::Reset] };
    let mock = mock(MockConfig { faults, ..Default::default() }).await;
    let err = call(&service(&mock), post("/v1/chat/completions", CHAT)).await.unwrap_err();
    assert!(err.is::<Transport>(), "{err:?}");
    assert!(LlmClassifier::default().classify_error(&*err).retryable);
    assert_eq!(ErrorInfo::from_error(&*err).status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(start_paused = true)]
async fn hang_hits_the_headers_timeout() {
    let mock =
        mock(MockConfig { faults: FaultPlan::Always { fault: Fault::Hang }, ..Default::default() }).await;
    let svc =
        service(&mock).timeouts(Timeouts { headers: Some(Duration::from_secs(5)), ..Default::default() });
    let start = tokio::time::Instant::now();
    let err = call(&svc, post("/v1/chat/completions", CHAT)).await.unwrap_err();
    let t = err.downcast_ref::<Timeout>().expect("typed timeout");
    assert_eq!(t.phase, TimeoutPhase::Headers);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(ErrorInfo::from_error(&*err).status, StatusCode::GATEWAY_TIMEOUT);
    let host = &svc.client().stats()[0];
    assert_eq!((host.requests, host.errors, host.in_flight), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn total_timeout_bounds_headers_when_shorter() {
    let mock =
        mock(MockConfig { faults: FaultPlan::Always { fault: Fault::Hang }, ..Default::default() }).await;
    let t =
        Timeouts { headers: Some(Duration::from_secs(60)), idle: None, total: Some(Duration::from_secs(3)) };
    let err = call(&service(&mock).timeouts(t), post("/v1/chat/completions", CHAT)).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Timeout>().unwrap().phase, TimeoutPhase::Total);
}

#[tokio::test(start_paused = true)]
async fn stalled_stream_hits_the_idle_timeout() {
    let faults = FaultPlan::Always { fault: Fault::SlowBody { per_chunk_ms: 10_000 } };
    let mock = mock(MockConfig { faults, ..Default::default() }).await;
    let t = Timeouts { idle: Some(Duration::from_secs(2)), ..Default::default() };
    let res = call(&service(&mock).timeouts(t), post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    let (bytes, report) = read_with_usage(res.into_body(), BodyKind::Sse).await;
    let err = bytes.unwrap_err();
    assert_eq!(err.downcast_ref::<Timeout>().unwrap().phase, TimeoutPhase::Idle);
    assert_eq!(report.end, StreamEnd::Failed);
}

#[tokio::test(start_paused = true)]
async fn long_stream_hits_the_total_timeout() {
    let latency = Latency { headers: Duration::ZERO, per_token: Duration::from_secs(1) };
    let mock = mock(MockConfig { latency, ..Default::default() }).await;
    let t = Timeouts {
        headers: Some(Duration::from_secs(5)),
        idle: Some(Duration::from_secs(5)),
        total: Some(Duration::from_secs(8)),
    };
    let res = call(&service(&mock).timeouts(t), post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(err.downcast_ref::<Timeout>().unwrap().phase, TimeoutPhase::Total);
}

#[tokio::test]
async fn stream_cut_midway_is_stream_aborted_and_ended_early() {
    let faults = FaultPlan::Always { fault: Fault::StreamCut { after_tokens: 3 } };
    let mock = mock(MockConfig { faults, ..Default::default() }).await;
    let res = call(&service(&mock), post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (bytes, report) = read_with_usage(res.into_body(), BodyKind::Sse).await;
    let err = bytes.unwrap_err();
    assert!(err.is::<StreamAborted>(), "{err:?}");
    assert_eq!(report.end, StreamEnd::Failed);
    assert!(report.usage.is_none());
}

#[tokio::test]
async fn malformed_json_answer_is_a_retryable_bad_response_not_a_200() {
    let mock =
        mock(MockConfig { faults: FaultPlan::Always { fault: Fault::MalformedJson }, ..Default::default() })
            .await;
    let err = call(&service(&mock), post("/v1/chat/completions", CHAT)).await.unwrap_err();
    let bad = err.downcast_ref::<BadResponse>().expect("typed bad response");
    assert_eq!(bad.kind, BadResponseKind::InvalidJson);
    assert!(LlmClassifier::default().classify_error(&*err).retryable);
    assert_eq!(ErrorInfo::from_error(&*err).status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn json_answer_cut_mid_body_is_a_retryable_bad_response() {
    let faults = FaultPlan::Always { fault: Fault::StreamCut { after_tokens: 1 } };
    let mock = mock(MockConfig { faults, ..Default::default() }).await;
    let svc = service(&mock);
    let err = call(&svc, post("/v1/chat/completions", CHAT)).await.unwrap_err();
    let bad = err.downcast_ref::<BadResponse>().expect("typed bad response");
    assert_eq!(bad.kind, BadResponseKind::Cut);
    assert!(LlmClassifier::default().classify_error(&*err).retryable);
    assert_eq!(ErrorInfo::from_error(&*err).code, Some("upstream_response_cut"));
    let host = &svc.client().stats()[0];
    assert_eq!((host.errors, host.in_flight), (1, 0));
}

#[tokio::test]
async fn json_answer_is_complete_before_its_head_is_returned() {
    let mock = mock(Default::default()).await;
    let res = call(&service(&mock), post("/v1/chat/completions", CHAT)).await.unwrap();
    let body = res.into_body();
    let len = body.size_hint().exact().expect("exact size");
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(bytes.len() as u64, len);
    serde_json::from_slice::<serde_json::Value>(&bytes).expect("whole JSON");
}

#[tokio::test]
async fn json_answer_over_the_limit_is_refused_as_too_large() {
    let mock = mock(Default::default()).await;
    let err =
        call(&service(&mock).max_response_bytes(100), post("/v1/chat/completions", CHAT)).await.unwrap_err();
    let bad = err.downcast_ref::<BadResponse>().expect("typed bad response");
    assert_eq!(bad.kind, BadResponseKind::TooLarge { limit: 100 });
    assert!(!LlmClassifier::default().classify_error(&*err).retryable);
    // A stream is not limited by it.
    let res = call(&service(&mock).max_response_bytes(100), post("/v1/chat/completions", CHAT_STREAM))
        .await
        .unwrap();
    assert!(res.into_body().collect().await.unwrap().to_bytes().len() > 100);
}

#[tokio::test(start_paused = true)]
async fn callers_deadline_bounds_the_wait_for_the_head() {
    let mock =
        mock(MockConfig { faults: FaultPlan::Always { fault: Fault::Hang }, ..Default::default() }).await;
    let svc = service(&mock); // headers timeout 300 s
    let start = tokio::time::Instant::now();
    let mut req = post("/v1/chat/completions", CHAT);
    req.extensions_mut().insert(Deadline(start + Duration::from_secs(7)));
    let err = call(&svc, req).await.unwrap_err();
    let t = err.downcast_ref::<Timeout>().expect("typed timeout");
    assert_eq!((t.phase, t.after), (TimeoutPhase::Headers, Duration::from_secs(7)));
    assert_eq!(start.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn callers_deadline_bounds_reading_a_slow_json_answer() {
    let faults = FaultPlan::Always { fault: Fault::SlowBody { per_chunk_ms: 3_000 } };
    let mock = mock(MockConfig { faults, ..Default::default() }).await;
    let start = tokio::time::Instant::now();
    let mut req = post("/v1/chat/completions", CHAT);
    req.extensions_mut().insert(Deadline(start + Duration::from_secs(5)));
    let err = call(&service(&mock), req).await.unwrap_err();
    assert!(err.is::<Timeout>(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = Provider::openai_compatible("gone", &format!("http://127.0.0.1:{port}/v1")).unwrap();
    let err = call(&LlmHttpService::new(p), post("/v1/chat/completions", CHAT)).await.unwrap_err();
    let c = err.downcast_ref::<Connect>().expect("typed connect error");
    assert_eq!(c.authority(), format!("127.0.0.1:{port}"));
    assert!(LlmClassifier::default().classify_error(&*err).retryable);
    assert_eq!(ErrorInfo::from_error(&*err).status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(start_paused = true)]
async fn tls_handshake_that_never_completes_hits_the_connect_timeout() {
    // A TCP listener that accepts and never speaks TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    let client =
        HttpClient::new(ClientConfig { connect_timeout: Duration::from_secs(3), ..Default::default() });
    let p = Provider::openai_compatible("silent", &format!("https://{addr}/v1")).unwrap();
    let err =
        call(&LlmHttpService::with_client(p, client), post("/v1/chat/completions", CHAT)).await.unwrap_err();
    let t = err.downcast_ref::<Timeout>().expect("typed timeout");
    assert_eq!((t.phase, t.after), (TimeoutPhase::Connect, Duration::from_secs(3)));
}

#[tokio::test]
async fn azure_request_shape() {
    let mock = mock(MockConfig { models: vec![], ..Default::default() }).await;
    let p = Provider::azure(&mock.url(), "2024-10-21", Secret::new("az-key"))
        .unwrap()
        .with_alias("gpt-4o-mini", "prod-4o-mini");
    let mut req = post("/v1/chat/completions", CHAT);
    req.headers_mut().insert("authorization", "Bearer caller-key".parse().unwrap());
    let res = call(&LlmHttpService::new(p), req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = &mock.requests()[0];
    assert_eq!(seen.path, "/openai/deployments/prod-4o-mini/chat/completions?api-version=2024-10-21");
    assert_eq!(seen.header("api-key"), Some("az-key"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.json()["model"], "prod-4o-mini");
}

#[tokio::test]
async fn anthropic_request_shape_and_stream_usage() {
    let mock = mock(MockConfig::default()).await;
    let p = Provider::new(
        "anthropic",
        ProviderKind::Anthropic { version: "2023-06-01".into() },
        &format!("{}/v1", mock.url()),
    )
    .unwrap()
    .with_key(Secret::new("ant-key"))
    .with_alias("haiku", "claude-3-5-haiku-latest");
    let body = r#"{"model":"haiku","max_tokens":5,"stream":true,"system":"be brief","messages":[{"role":"user","content":"hello"}],"metadata":{"user_id":"u1"}}"#;
    let res = call(&LlmHttpService::new(p), post("/v1/messages", body)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (bytes, report) = read_with_usage(res.into_body(), BodyKind::Sse).await;
    assert!(bytes.unwrap().windows(12).any(|w| w == b"message_stop"));
    let usage = report.usage.unwrap();
    assert_eq!(usage.output, 5);
    assert!(usage.input > 0);
    assert_eq!(report.finish_reason.as_deref(), Some("max_tokens"));
    let seen = &mock.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("ant-key"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    // Only the model changed: every other byte is the caller's.
    assert_eq!(seen.body, body.replace("\"haiku\"", "\"claude-3-5-haiku-latest\""));
}

#[tokio::test]
async fn hop_by_hop_and_caller_credentials_do_not_cross() {
    let mock = mock(MockConfig::default()).await;
    let mut req = post("/v1/chat/completions", CHAT);
    let h = req.headers_mut();
    h.insert("connection", "x-private".parse().unwrap());
    h.insert("x-private", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("x-api-key", "caller".parse().unwrap());
    h.insert("x-trace", "kept".parse().unwrap());
    h.insert("accept-encoding", "gzip, br".parse().unwrap());
    call(&service(&mock), req).await.unwrap().into_body().collect().await.unwrap();
    let seen = &mock.requests()[0];
    for gone in ["x-private", "keep-alive", "x-api-key"] {
        assert_eq!(seen.header(gone), None, "{gone} must not be forwarded");
    }
    assert_eq!(seen.header("x-trace"), Some("kept"));
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
    assert_eq!(seen.header("authorization"), Some("Bearer sk-mock"));
}

#[tokio::test(start_paused = true)]
async fn provider_rate_limit_headers_pass_through() {
    let mock =
        mock(MockConfig { limits: Some(MockLimits { rpm: 2, tpm: 1_000_000 }), ..Default::default() }).await;
    let svc = service(&mock);
    for _ in 0..2 {
        let res = call(&svc, post("/v1/chat/completions", CHAT)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().contains_key("x-ratelimit-remaining-requests"));
        res.into_body().collect().await.unwrap();
    }
    let res = call(&svc, post("/v1/chat/completions", CHAT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "0");
    assert_eq!(res.headers()["retry-after"], "30");
    let Classified::Ready(c) = LlmClassifier::default().classify_response(&res) else { panic!() };
    assert_eq!(c.retry_after(), Some(Duration::from_secs(30)), "retry-after-ms wins: exactly 30 s");
}

#[tokio::test]
async fn pool_reuses_connections_and_counts_per_host() {
    let mock = mock(MockConfig::default()).await;
    let svc = service(&mock);
    for _ in 0..3 {
        let res = call(&svc, post("/v1/chat/completions", CHAT)).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let stats = svc.client().stats();
    assert_eq!(stats.len(), 1);
    let h = &stats[0];
    assert_eq!(h.host, mock.addr().to_string());
    assert_eq!(
        (h.requests, h.connects, h.open_connections, h.idle_connections, h.in_flight),
        (3, 1, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn per_host_connection_limit_is_never_exceeded() {
    let latency = Latency { headers: Duration::ZERO, per_token: Duration::from_millis(100) };
    let mock = mock(MockConfig { latency, ..Default::default() }).await;
    let client = HttpClient::new(ClientConfig { max_connections_per_host: Some(2), ..Default::default() });
    let p = Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap();
    let svc = LlmHttpService::with_client(p, client.clone());
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    let mut max_open = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        max_open = max_open.max(client.stats().first().map_or(0, |h| h.open_connections));
    }
    for t in tasks {
        assert!(t.await.unwrap().ends_with(b"[DONE]\n\n"));
    }
    assert_eq!(max_open, 2);
    assert_eq!(client.stats()[0].connects, 2);
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let mock = mock(MockConfig::default()).await;
    let client = HttpClient::new(ClientConfig { http2_only: true, ..Default::default() });
    let p = Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap();
    let res = call(&LlmHttpService::with_client(p, client), post("/v1/chat/completions", CHAT_STREAM))
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let (bytes, report) = read_with_usage(res.into_body(), BodyKind::Sse).await;
    assert!(bytes.is_ok());
    assert_eq!(report.usage.unwrap().output, 16);
}

#[tokio::test]
async fn hostnames_resolve_through_the_dns_cache() {
    let mock = mock(MockConfig::default()).await;
    let client = HttpClient::new(ClientConfig::default());
    let p =
        Provider::openai_compatible("mock", &format!("http://localhost:{}/v1", mock.addr().port())).unwrap();
    let svc = LlmHttpService::with_client(p, client.clone());
    for _ in 0..2 {
        let res = call(&svc, post("/v1/chat/completions", CHAT)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(client.resolver().lookups(), 1);
}

#[tokio::test(start_paused = true)]
async fn dns_cache_expires_after_its_ttl() {
    let r = llm_tower_http::CachingResolver::new(Duration::from_secs(30));
    r.resolve("localhost").await.unwrap();
    tokio::time::advance(Duration::from_secs(29)).await;
    r.resolve("localhost").await.unwrap();
    assert_eq!(r.lookups(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    r.resolve("localhost").await.unwrap();
    assert_eq!(r.lookups(), 2);
}

#[tokio::test]
async fn embeddings_and_models() {
    let mock = mock(MockConfig::default()).await;
    let svc = service(&mock);
    let res = call(&svc, post("/v1/embeddings", r#"{"model":"text-embedding-3-small","input":["a","b"]}"#))
        .await
        .unwrap();
    let (bytes, report) = read_with_usage(res.into_body(), BodyKind::Json).await;
    let v: serde_json::Value = serde_json::from_slice(&bytes.unwrap()).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(report.usage.unwrap().input > 0);
    let res = call(&svc, Request::get("/v1/models").body(LlmBody::empty()).unwrap()).await.unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["data"][0]["id"], "gpt-4o-mini");
}

#[tokio::test]
async fn keys_never_show_in_debug_output() {
    let mock = mock(MockConfig::default()).await;
    let p = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))
        .unwrap()
        .with_key(Secret::new("sk-very-secret"));
    let svc = LlmHttpService::new(p.clone());
    let mut outgoing = http::HeaderMap::new();
    let res = call(&svc, post("/v1/chat/completions", CHAT)).await.unwrap();
    outgoing.insert("authorization", format!("Bearer {}", "sk-very-secret").parse().unwrap());
    outgoing.get_mut("authorization").unwrap().set_sensitive(true);
    let dumps = format!("{p:?} {svc:?} {:?} {res:?} {outgoing:?}", svc.client());
    assert!(!dumps.contains("sk-very-secret"), "{dumps}");
}

#[tokio::test]
async fn an_event_that_never_ends_is_cut_at_the_limit_with_a_typed_error() {
    let faults = FaultPlan::Always { fault: Fault::EndlessEvent { bytes: 64 << 20 } };
    let mock = mock(MockConfig { faults, ..Default::default() }).await;
    let svc = service(&mock).max_event_bytes(1 << 20);
    let res = call(&svc, post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    let mut body = std::pin::pin!(res.into_body());
    let mut received = 0usize;
    let err = loop {
        match body.frame().await.expect("ends with an error, never hangs") {
            Ok(f) => received += f.into_data().map_or(0, |d| d.len()),
            Err(e) => break e,
        }
    };
    assert_eq!(
        err.downcast_ref::<llm_tower_core::EventTooLarge>(),
        Some(&llm_tower_core::EventTooLarge { limit: 1 << 20 })
    );
    assert!(received <= (1 << 20) + (64 << 10), "stopped at the limit: {received}");
    assert!(body.frame().await.is_none(), "ended");
    let host = &svc.client().stats()[0];
    assert_eq!((host.errors, host.in_flight), (1, 0));
}

#[tokio::test]
async fn with_a_connection_limit_readiness_waits_for_a_slot_until_the_body_ends() {
    let mock = mock(MockConfig::default()).await;
    let client = HttpClient::new(ClientConfig { max_connections_per_host: Some(1), ..Default::default() });
    let p = Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap();
    let mut first = LlmHttpService::with_client(p.clone(), client.clone());
    // Another service of the same client for the same host shares its slots.
    let mut second = LlmHttpService::with_client(p, client);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(tower::Service::poll_ready(&mut first, &mut cx).is_ready());
    assert!(tower::Service::poll_ready(&mut second, &mut cx).is_pending(), "the only slot is held");
    // A stream holds its connection, and so its slot, until its body ends.
    let res = tower::Service::call(&mut first, post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    assert!(tower::Service::poll_ready(&mut second, &mut cx).is_pending(), "held until the body ends");
    res.into_body().collect().await.unwrap();
    // The slot came back with the body: `ready` completes, and so does the call.
    let svc = second.ready().await.unwrap();
    let res = tower::Service::call(svc, post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    assert_eq!(res.status(), 200);
    // A clone does not share a slot its original holds.
    let mut clone = second.clone();
    assert!(tower::Service::poll_ready(&mut clone, &mut cx).is_pending());
    drop(res);
    assert!(tower::Service::poll_ready(&mut clone, &mut cx).is_ready(), "a dropped body gives its slot back");
    // A non-streamed answer is read whole before its head is returned: its
    // slot is back by then.
    let res = tower::Service::call(&mut clone, post("/v1/chat/completions", CHAT)).await.unwrap();
    assert!(tower::Service::poll_ready(&mut first, &mut cx).is_ready());
    drop(res);
}

#[tokio::test]
async fn without_a_connection_limit_the_service_is_always_ready() {
    let mock = mock(MockConfig::default()).await;
    let mut svc = service(&mock);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut held = Vec::new();
    for _ in 0..100 {
        assert!(tower::Service::poll_ready(&mut svc, &mut cx).is_ready());
        held.push(tower::Service::call(&mut svc, post("/v1/chat/completions", CHAT)));
    }
    for f in held {
        assert_eq!(f.await.unwrap().status(), 200);
    }
}

/// Reads a streamed body frame by frame: the frames' sizes and the bytes.
async fn frames(mut body: llm_tower_core::LlmResponseBody) -> (Vec<usize>, Vec<u8>) {
    let (mut sizes, mut bytes) = (Vec::new(), Vec::new());
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        sizes.push(data.len());
        bytes.extend_from_slice(&data);
    }
    (sizes, bytes)
}

#[tokio::test]
async fn stream_events_read_together_are_handed_on_as_one_frame() {
    let mock = mock(MockConfig::default()).await;
    let res = call(&service(&mock), post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    // Let the mock write the whole stream before the body is read: the
    // connection then holds every event when the first is taken.
    // (Bounded: a mock that never sends fails the assertions below, not hangs.)
    let mut sent = 0;
    for _ in 0..1000 {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        let now = mock.stats().chunks_sent;
        if now > 0 && now == sent {
            break;
        }
        sent = now;
    }
    let (sizes, bytes) = frames(res.into_body()).await;
    let events = bytes.windows(6).filter(|w| w == b"data: ").count();
    assert!(events >= 10, "{events} events");
    assert_eq!(sizes.len(), 1, "{events} events came in frames of {sizes:?}");
    assert!(bytes.ends_with(b"data: [DONE]\n\n"));
}

#[tokio::test(start_paused = true)]
async fn stream_events_apart_are_each_handed_on_as_they_come() {
    let latency = Latency { headers: Duration::ZERO, per_token: Duration::from_millis(50) };
    let mock = mock(MockConfig { latency, ..Default::default() }).await;
    let res = call(&service(&mock), post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    let (sizes, bytes) = frames(res.into_body()).await;
    let events = bytes.windows(6).filter(|w| w == b"data: ").count();
    // One frame per token at least: nothing waits for the next token.
    assert!(sizes.len() >= 16, "{events} events came in frames of {sizes:?}");
}

#[tokio::test]
async fn a_burst_larger_than_the_join_bound_is_handed_on_in_bounded_frames() {
    // 2,000 tokens: about 480 KB of events, most of it read before the body is.
    let mock = mock(MockConfig { reply_tokens: 2000, ..Default::default() }).await;
    let res = call(&service(&mock), post("/v1/chat/completions", CHAT_STREAM)).await.unwrap();
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    let (sizes, bytes) = frames(res.into_body()).await;
    assert!(bytes.ends_with(b"data: [DONE]\n\n"));
    // The bound is 64 KiB (`MAX_JOINED_BYTES`): a frame stops at the first
    // chunk that reaches it, so it is over by less than one event.
    let largest = *sizes.iter().max().unwrap();
    assert!(largest <= 64 * 1024 + 1024, "a frame of {largest} bytes");
    assert!(largest >= 64 * 1024, "nothing was joined up to the bound: {sizes:?}");
}
