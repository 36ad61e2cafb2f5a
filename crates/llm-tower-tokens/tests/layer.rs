//! TokenCountLayer in front of LlmHttpService (and a TPM limiter) against the mock.

use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use llm_tower_core::{ErrorInfo, InvalidRequest, LlmBody, RequestInfo};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{MockConfig, MockServer};
use llm_tower_ratelimit::{Limits, RateLimitLayer};
use llm_tower_tokens::{Family, Preflight, Tiktoken, TokenCountLayer, TokenCounter};
use tower::{Layer, ServiceBuilder, ServiceExt};

async fn mock() -> MockServer {
    MockServer::start(MockConfig { models: vec![], ..Default::default() }).await.unwrap()
}

fn http(mock: &MockServer) -> LlmHttpService {
    LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap())
}

fn chat(model: &str, text: &str, max_tokens: u32) -> Request<LlmBody> {
    let body = serde_json::json!({"model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}]});
    Request::post("/v1/chat/completions").body(LlmBody::from(body.to_string())).unwrap()
}

/// The estimate the inner service saw.
type Seen = Arc<Mutex<Option<u32>>>;

/// TokenCountLayer over the mock, recording the estimate the inner service sees.
fn counted(
    m: &MockServer,
) -> (
    impl tower::Service<
        Request<LlmBody>,
        Response = http::Response<llm_tower_core::LlmResponseBody>,
        Error = tower::BoxError,
    > + Clone,
    Seen,
) {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let svc = ServiceBuilder::new()
        .layer(TokenCountLayer::new(Preflight::Enforce))
        .map_request(move |r: Request<LlmBody>| {
            *record.lock().unwrap() = RequestInfo::get(&r).and_then(|i| i.estimated_input_tokens);
            r
        })
        .service(http(m));
    (svc, seen)
}

#[tokio::test]
async fn over_the_context_window_is_refused_before_sending() {
    let m = mock().await;
    let svc = TokenCountLayer::new(Preflight::Enforce).layer(http(&m));
    // gpt-4 has an 8,192-token window: ~9,000 tokens of input cannot fit.
    let long = "token ".repeat(9_000);
    let err = svc.clone().oneshot(chat("gpt-4", &long, 100)).await.unwrap_err();
    let invalid = err.downcast_ref::<InvalidRequest>().expect("typed");
    assert_eq!(invalid.code(), Some("context_length_exceeded"));
    assert!(invalid.to_string().contains("maximum context length is 8192 tokens"), "{invalid}");
    let info = ErrorInfo::from_error(&*err);
    assert_eq!((info.status, info.code), (StatusCode::BAD_REQUEST, Some("context_length_exceeded")));
    // Input alone fits, but not with the requested output.
    let mid = "token ".repeat(7_000);
    assert!(svc.clone().oneshot(chat("gpt-4", &mid, 2_000)).await.is_err());
    assert_eq!(svc.clone().oneshot(chat("gpt-4", &mid, 100)).await.unwrap().status(), StatusCode::OK);
    // A model not in the table is not guessed at.
    assert_eq!(svc.clone().oneshot(chat("my-finetune", &long, 100)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(m.stats().llm_requests, 2, "the refused requests never left");

    let warn = TokenCountLayer::new(Preflight::WarnOnly).layer(http(&m));
    assert_eq!(warn.oneshot(chat("gpt-4", &long, 100)).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_exact_count_reaches_inner_layers() {
    let m = mock().await;
    let (svc, seen) = counted(&m);
    let text = "Count me exactly, please: the quick brown fox jumps over the lazy dog.";
    svc.oneshot(chat("gpt-4o-mini", text, 10)).await.unwrap();
    let o200k = Tiktoken::new(Family::O200k).unwrap();
    let expected = 3 + 3 + o200k.count_text("user") + o200k.count_text(text);
    assert_eq!(*seen.lock().unwrap(), Some(expected));
}

#[tokio::test(start_paused = true)]
async fn the_tpm_limiter_reserves_the_counted_tokens() {
    let m = mock().await;
    let limiter = RateLimitLayer::new(Limits::default().tokens_per_minute(100_000));
    let svc = ServiceBuilder::new()
        .layer(TokenCountLayer::new(Preflight::Enforce))
        .layer(limiter.clone())
        .service(http(&m));
    let text = "word ".repeat(2_000);
    let res = svc.oneshot(chat("gpt-4o", &text, 500)).await.unwrap();
    let reserved = 100_000 - limiter.stats().keys[0].tokens.unwrap().remaining;
    let o200k = Tiktoken::new(Family::O200k).unwrap();
    let counted = u64::from(3 + 3 + o200k.count_text("user") + o200k.count_text(&text));
    assert_eq!(reserved, counted + 500, "input counted exactly, plus max_tokens");
    res.into_body().collect().await.unwrap();
}

#[tokio::test]
async fn embeddings_count_their_inputs() {
    let m = mock().await;
    let (svc, seen) = counted(&m);
    let body = r#"{"model":"text-embedding-3-small","input":["hello world","tiktoken is great!"]}"#;
    let req = Request::post("/v1/embeddings").body(LlmBody::from(body)).unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(*seen.lock().unwrap(), Some(2 + 6));
}

#[tokio::test]
async fn a_huge_max_tokens_times_n_cannot_wrap_past_the_preflight() {
    // 2^31 x 2 is 2^32: in u32 arithmetic it wrapped to 0 and passed.
    let m = mock().await;
    let svc = TokenCountLayer::new(Preflight::Enforce).layer(http(&m));
    let body = r#"{"model":"gpt-4o-mini","max_tokens":2147483648,"n":2,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = Request::post("/v1/chat/completions").body(LlmBody::from(body)).unwrap();
    let err = svc.oneshot(r).await.unwrap_err();
    let invalid = err.downcast_ref::<InvalidRequest>().expect("typed");
    assert_eq!(invalid.code(), Some("context_length_exceeded"));
    assert!(invalid.to_string().contains("4294967296 in the completion"), "{invalid}");
    assert_eq!(m.stats().llm_requests, 0);
}
