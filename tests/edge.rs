//! The edge layer and layers composed by hand: mounted on axum with
//! `route_service` (no glue), every layer under `option_layer`, and every pair
//! of layers in both orders, over the mock on loopback.

use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use llm_tower::cache::{CacheConfig, CacheLayer};
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig};
use llm_tower::core::edge::LlmEdgeLayer;
use llm_tower::core::tenant::TenantLayer;
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::retry::{Backoff, Jitter, RetryLayer, RetryPolicy};
use llm_tower::tokens::{AccountingConfig, TokenAccountingLayer};
use llm_tower::{LlmHttpService, LlmResponseBody, LlmService, Provider};
use tower::{Layer, ServiceBuilder, ServiceExt};

const CHAT: &str = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;

async fn mock(faults: FaultPlan) -> (MockServer, LlmHttpService) {
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap();
    (mock, LlmHttpService::new(provider))
}

fn script(faults: Vec<Fault>) -> FaultPlan {
    FaultPlan::Script { faults }
}

fn post(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

async fn text(res: http::Response<LlmResponseBody>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn a_hand_composed_stack_mounts_on_an_axum_route_with_no_glue() {
    let (mock, http) = mock(FaultPlan::None).await;
    let accounting = TokenAccountingLayer::new(AccountingConfig::default());
    let stack = ServiceBuilder::new()
        .layer(LlmEdgeLayer::new().max_body_bytes(1024))
        .layer(TenantLayer::header(http::HeaderName::from_static("x-team")))
        .layer(accounting.clone())
        .layer(CacheLayer::new(CacheConfig::default()))
        .layer(RetryLayer::new(RetryPolicy::default()))
        .layer(CircuitBreakerLayer::new(CircuitConfig::default()))
        .layer(RateLimitLayer::new(Limits::default().tokens_per_minute(100_000)))
        .service(http);
    let app = Router::new().route_service("/v1/chat/completions", stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let send = |body: &str| {
        let req = Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("x-team", "search")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let client = client.clone();
        async move {
            let res = client.request(req).await.unwrap();
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<serde_json::Value>(&body).expect("JSON, whatever the status"))
        }
    };
    let (status, json) = send(CHAT).await;
    assert_eq!(status, StatusCode::OK);
    assert!(json["choices"][0]["message"]["content"].is_string());
    let (status, json) = send("{not json").await;
    assert_eq!(
        (status, json["error"]["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request_error"))
    );
    let (status, _) =
        send(&format!(r#"{{"model":"gpt-4o-mini","messages":[],"pad":"{}"}}"#, "x".repeat(2000))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(mock.stats().llm_requests, 1, "refused at the edge, never sent");
    let ledger = accounting.ledger().entries();
    assert_eq!(
        (ledger.len(), ledger[0].tenant.as_str()),
        (1, "search"),
        "the tenant layer named the spender"
    );
}

#[tokio::test(start_paused = true)]
async fn the_edge_answers_504_at_its_deadline_when_the_upstream_hangs() {
    let (_mock, http) = mock(FaultPlan::Always { fault: Fault::Hang }).await;
    let svc = LlmEdgeLayer::new().deadline(Duration::from_secs(5)).layer(http);
    let start = tokio::time::Instant::now();
    let res = svc.oneshot(post(CHAT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_secs(5), "at the deadline, not at the HTTP service's 120 s");
    let json: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert!(json["error"]["message"].is_string());
}

#[tokio::test]
async fn an_upstream_error_page_becomes_an_openai_error_with_its_status() {
    let (_mock, http) = mock(script(vec![Fault::HtmlError { status: 502 }])).await;
    let res = LlmEdgeLayer::new().layer(http).oneshot(post(CHAT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(res.headers()["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert!(json["error"]["message"].is_string(), "{json}");
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_sse_error_event_at_the_edge() {
    let (_mock, http) = mock(script(vec![Fault::StreamCut { after_tokens: 3 }])).await;
    let res = LlmEdgeLayer::new().layer(http).oneshot(post(STREAM)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = text(res).await;
    assert!(!body.contains("[DONE]"), "a cut stream never looks complete: {body}");
    let last = body.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{last}");
    let v: serde_json::Value = serde_json::from_str(last.split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "upstream_stream_aborted");
}

#[tokio::test]
async fn a_stack_error_is_answered_in_openai_format_with_retry_after() {
    let (_mock, http) = mock(FaultPlan::None).await;
    let limiter = RateLimitLayer::new(Limits::default().requests_per_minute(1));
    let svc = ServiceBuilder::new().layer(LlmEdgeLayer::new()).layer(limiter).service(http);
    assert_eq!(svc.clone().oneshot(post(CHAT)).await.unwrap().status(), StatusCode::OK);
    let res = svc.oneshot(post(CHAT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let json: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(json["error"]["type"], "rate_limit_error", "{json}");
}

/// Every layer can be switched on or off with `option_layer`: the two
/// branches of `Either` have one response type because every layer answers
/// with an `LlmResponseBody`, and the result is a named `LlmService`.
#[tokio::test]
async fn option_layer_compiles_and_runs_for_every_layer_on_and_off() {
    for on in [true, false] {
        let (mock, http) = mock(FaultPlan::None).await;
        let accounting = TokenAccountingLayer::new(AccountingConfig::default());
        let stack: LlmService = LlmService::new(
            ServiceBuilder::new()
                .option_layer(on.then(|| TenantLayer::header(http::HeaderName::from_static("x-team"))))
                .option_layer(on.then(|| accounting.clone()))
                .option_layer(on.then(|| CacheLayer::new(CacheConfig::default())))
                .option_layer(on.then(|| RetryLayer::new(RetryPolicy::default())))
                .option_layer(on.then(|| CircuitBreakerLayer::new(CircuitConfig::default())))
                .option_layer(on.then(|| RateLimitLayer::new(Limits::default().tokens_per_minute(100_000))))
                .service(http),
        );
        let edge = LlmEdgeLayer::new().layer(stack);
        let res = edge.oneshot(post(CHAT)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers().contains_key("x-llm-cache"), on, "the cache layer is there only when on");
        text(res).await;
        assert_eq!(accounting.ledger().entries().len(), usize::from(on));
        assert_eq!(mock.stats().llm_requests, 1);
    }
}

type Wrap = fn(LlmService) -> LlmService;

fn retry(s: LlmService) -> LlmService {
    let policy =
        RetryPolicy::default().backoff(Backoff::Fixed(Duration::from_millis(5))).jitter(Jitter::None);
    LlmService::new(RetryLayer::new(policy).layer(s))
}
fn breaker(s: LlmService) -> LlmService {
    LlmService::new(CircuitBreakerLayer::new(CircuitConfig::default()).layer(s))
}
fn limiter(s: LlmService) -> LlmService {
    let limits = Limits::default().requests_per_minute(10_000).tokens_per_minute(1_000_000);
    LlmService::new(RateLimitLayer::new(limits).layer(s))
}
fn accounting(s: LlmService) -> LlmService {
    LlmService::new(TokenAccountingLayer::new(AccountingConfig::default()).layer(s))
}
fn cache(s: LlmService) -> LlmService {
    LlmService::new(CacheLayer::new(CacheConfig::default()).layer(s))
}
fn tenant(s: LlmService) -> LlmService {
    LlmService::new(TenantLayer::header(http::HeaderName::from_static("x-team")).layer(s))
}

/// Every ordered pair of layers over the HTTP service: one upstream 503 is
/// retried (when retry is one of the two) or passed through, a JSON answer
/// and a stream arrive whole, and no layer calls the upstream more than the
/// pair calls for, whatever the order.
#[tokio::test]
async fn every_pair_of_layers_in_either_order_serves_json_streams_and_failures() {
    let layers: [(&str, Wrap); 6] = [
        ("retry", retry),
        ("breaker", breaker),
        ("limiter", limiter),
        ("accounting", accounting),
        ("cache", cache),
        ("tenant", tenant),
    ];
    for (a_name, a) in layers {
        for (b_name, b) in layers {
            if a_name == b_name {
                continue;
            }
            let (mock, http) = mock(script(vec![Fault::status(503)])).await;
            let svc = a(b(LlmService::new(http)));
            let edge = LlmEdgeLayer::new().layer(svc);
            let order = format!("{a_name} over {b_name}");
            let first = edge.clone().oneshot(post(CHAT)).await.unwrap();
            let retried = a_name == "retry" || b_name == "retry";
            let expect = if retried { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            assert_eq!(first.status(), expect, "{order}");
            let body = text(first).await;
            serde_json::from_str::<serde_json::Value>(&body)
                .unwrap_or_else(|e| panic!("{order}: {e}: {body}"));
            let res = edge.clone().oneshot(post(STREAM)).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{order}");
            let body = text(res).await;
            assert!(body.ends_with("data: [DONE]\n\n"), "{order}: {body}");
            assert!(!body.contains("event: error"), "{order}: {body}");
            // A cached JSON answer serves the same request streamed (the cache converts it).
            let from_cache = retried && (a_name == "cache" || b_name == "cache");
            assert_eq!(mock.stats().llm_requests, 2 + u64::from(retried) - u64::from(from_cache), "{order}");
        }
    }
}
