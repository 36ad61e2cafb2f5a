//! RetryLayer around LlmHttpService against the real mock, on paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use llm_tower_core::{Attempt, BoxError, LlmBody, RetriesExhausted, Timeout, TimeoutPhase, Transport};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Fault, FaultPlan, Latency, MockConfig, MockServer};
use llm_tower_retry::{
    AttemptTimeout, Backoff, BudgetConfig, Jitter, RandomSource, RetryLayer, RetryPolicy, SeededRandom,
};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

async fn mock_with(faults: Vec<Fault>) -> MockServer {
    MockServer::start(MockConfig { faults: FaultPlan::Script { faults }, ..Default::default() })
        .await
        .unwrap()
}

async fn always(fault: Fault) -> MockServer {
    MockServer::start(MockConfig { faults: FaultPlan::Always { fault }, ..Default::default() }).await.unwrap()
}

fn http(mock: &MockServer) -> LlmHttpService {
    LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap())
}

fn req(body: &'static str) -> Request<LlmBody> {
    Request::post("/v1/chat/completions").body(LlmBody::from(body)).unwrap()
}

/// Fixed 1 s delays, no jitter, no budget: the simplest predictable policy.
fn plain() -> RetryPolicy {
    RetryPolicy::default().backoff(Backoff::Fixed(secs(1))).jitter(Jitter::None).budget(None)
}

async fn send(
    layer: &RetryLayer,
    mock: &MockServer,
    body: &'static str,
) -> Result<http::Response<llm_tower_core::LlmResponseBody>, BoxError> {
    layer.layer(http(mock)).oneshot(req(body)).await
}

#[tokio::test(start_paused = true)]
async fn delays_follow_the_seeded_schedule_exactly() {
    let mock = mock_with(vec![Fault::status(503), Fault::status(500), Fault::status(529)]).await;
    let policy = RetryPolicy::default()
        .max_attempts(4)
        .backoff(Backoff::Exponential { base: secs(1), factor: 2.0, cap: secs(30) })
        .jitter(Jitter::Full)
        .budget(None);
    let layer = RetryLayer::new(policy).with_random(SeededRandom::new(99));
    // The same policy and seed predict the three delays.
    let rng = SeededRandom::new(99);
    let mut prev = Duration::ZERO;
    let mut expected = Duration::ZERO;
    for retry in 1..=3 {
        let d = policy.delay(retry, prev, &rng as &dyn RandomSource);
        assert!(d <= policy.backoff.raw(retry));
        expected += d;
        prev = d;
    }
    let start = Instant::now();
    let res = send(&layer, &mock, CHAT).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), expected);
    assert_eq!(mock.stats().llm_requests, 4);
    let s = layer.stats();
    assert_eq!((s.retries, s.recovered, s.give_ups), (3, 1, 0));
    assert_eq!(s.by_reason.get("status_503"), Some(&1));
    assert_eq!(s.by_reason.get("status_529"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn retry_after_429_waits_exactly_the_hint_then_succeeds() {
    let mock = mock_with(vec![Fault::status_retry_after(429, 2)]).await;
    let layer = RetryLayer::new(plain());
    let start = Instant::now();
    let res = send(&layer, &mock, CHAT).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), secs(2), "the server's retry-after, not the 1 s schedule");
    assert_eq!(mock.stats().llm_requests, 2);
}

#[tokio::test(start_paused = true)]
async fn every_hint_header_sets_the_delay() {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + secs(120));
    let cases: Vec<(Vec<(String, String)>, Duration)> = vec![
        (vec![("retry-after-ms".into(), "1500".into())], Duration::from_millis(1500)),
        (vec![("retry-after".into(), "3".into())], secs(3)),
        (
            vec![
                ("x-ratelimit-remaining-requests".into(), "0".into()),
                ("x-ratelimit-reset-requests".into(), "2.5s".into()),
            ],
            Duration::from_millis(2500),
        ),
        (
            vec![
                ("x-ratelimit-remaining-tokens".into(), "0".into()),
                ("x-ratelimit-reset-tokens".into(), "750ms".into()),
            ],
            Duration::from_millis(750),
        ),
    ];
    for (headers, want) in cases {
        let fault = Fault::Status { status: 429, retry_after: None, code: None, headers: headers.clone() };
        let mock = mock_with(vec![fault]).await;
        let start = Instant::now();
        let res = send(&RetryLayer::new(plain()), &mock, CHAT).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{headers:?}");
        assert_eq!(start.elapsed(), want, "{headers:?}");
    }
    // An HTTP-date two minutes ahead is over the 60 s cap: returned at once.
    let fault = Fault::Status {
        status: 503,
        retry_after: None,
        code: None,
        headers: vec![("retry-after".into(), date)],
    };
    let mock = mock_with(vec![fault]).await;
    let layer = RetryLayer::new(plain());
    let res = send(&layer, &mock, CHAT).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(layer.stats().hint_refusals, 1);
}

#[tokio::test(start_paused = true)]
async fn over_cap_hint_returns_the_response_at_once() {
    let mock = mock_with(vec![Fault::status_retry_after(429, 120)]).await;
    let layer = RetryLayer::new(plain());
    let start = Instant::now();
    let res = send(&layer, &mock, CHAT).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "120", "the caller sees the hint");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(mock.stats().llm_requests, 1);
    assert_eq!(layer.stats().hint_refusals, 1);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_should_retry_false_are_not_retried() {
    for fault in [
        Fault::status(400),
        Fault::status(401),
        Fault::status(404),
        Fault::status(422),
        Fault::Status {
            status: 503,
            retry_after: None,
            code: None,
            headers: vec![("x-should-retry".into(), "false".into())],
        },
    ] {
        let mock = always(fault.clone()).await;
        let layer = RetryLayer::new(plain());
        let res = send(&layer, &mock, CHAT).await.unwrap();
        assert!(!res.status().is_success());
        assert_eq!(mock.stats().llm_requests, 1, "{fault:?}");
        assert_eq!(layer.stats().retries, 0);
    }
    // ... and x-should-retry: true makes even a 400 retryable.
    let forced = Fault::Status {
        status: 400,
        retry_after: None,
        code: None,
        headers: vec![("x-should-retry".into(), "true".into())],
    };
    let mock = mock_with(vec![forced]).await;
    assert_eq!(send(&RetryLayer::new(plain()), &mock, CHAT).await.unwrap().status(), StatusCode::OK);
    assert_eq!(mock.stats().llm_requests, 2);
}

#[tokio::test(start_paused = true)]
async fn insufficient_quota_is_never_retried_and_its_body_is_kept() {
    let fault = Fault::Status {
        status: 429,
        retry_after: Some(1),
        code: Some("insufficient_quota".into()),
        headers: vec![],
    };
    let mock = always(fault).await;
    let layer = RetryLayer::new(plain());
    let res = send(&layer, &mock, CHAT).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert_eq!(mock.stats().llm_requests, 1);
    assert_eq!(layer.stats().quota_refusals, 1);
    // A plain 429 is retried.
    let mock = mock_with(vec![Fault::status_retry_after(429, 1)]).await;
    assert_eq!(send(&RetryLayer::new(plain()), &mock, CHAT).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn budget_bounds_upstream_amplification() {
    let mock = always(Fault::status(503)).await;
    let budget = BudgetConfig { ratio: 0.2, min_per_sec: 1, window: secs(10) };
    let policy = RetryPolicy::default()
        .max_attempts(3)
        .backoff(Backoff::Fixed(Duration::from_millis(1)))
        .jitter(Jitter::None)
        .budget(Some(budget));
    let layer = RetryLayer::new(policy);
    let svc = layer.layer(http(&mock));
    for _ in 0..1000 {
        let res = svc.clone().oneshot(req(CHAT)).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let upstream = mock.stats().llm_requests;
    // At most 20 % of 1,000 requests plus the floor of 1/s over the 10 s window.
    assert!(upstream <= 1000 + 200 + 10, "{upstream} upstream calls");
    assert!(upstream > 1000, "some retries were allowed: {upstream}");
    let s = layer.stats();
    assert!(s.budget_refusals > 0);
    assert_eq!(s.requests, 1000);
    assert_eq!(upstream, 1000 + s.retries);
    assert!(upstream < 3000 / 2, "without a budget this would be 3,000");
}

#[tokio::test(start_paused = true)]
async fn deadline_covers_attempts_and_sleeps() {
    let mock = always(Fault::status(503)).await;
    let layer = RetryLayer::new(plain().max_attempts(10).backoff(Backoff::Fixed(secs(4))).deadline(secs(10)));
    let start = Instant::now();
    let res = send(&layer, &mock, CHAT).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Attempts at 0, 4 and 8 s; a fourth at 12 s would pass the deadline.
    assert_eq!(start.elapsed(), secs(8));
    assert_eq!(mock.stats().llm_requests, 3);
    assert_eq!(layer.stats().deadline_refusals, 1);

    // A hanging attempt is cut at the deadline.
    let mock = always(Fault::Hang).await;
    let layer = RetryLayer::new(plain().deadline(secs(5)));
    let start = Instant::now();
    let err = send(&layer, &mock, CHAT).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Timeout>().map(|t| t.phase), Some(TimeoutPhase::Total), "{err:?}");
    assert_eq!(start.elapsed(), secs(5));
    assert_eq!(mock.stats().llm_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn per_attempt_timeout_then_success() {
    let mock = mock_with(vec![Fault::Hang]).await;
    let layer = RetryLayer::new(plain().attempt_timeout(AttemptTimeout::Fixed(secs(2))));
    let start = Instant::now();
    let res = send(&layer, &mock, CHAT).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), secs(2) + secs(1), "2 s attempt limit + 1 s backoff");
    assert_eq!(layer.stats().by_reason.get("timeout"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn adaptive_timeout_learns_from_successes() {
    let latency = Latency { headers: Duration::from_millis(100), per_token: Duration::ZERO };
    let mock = MockServer::start(MockConfig { latency, ..Default::default() }).await.unwrap();
    let adaptive = AttemptTimeout::Adaptive {
        quantile: 0.99,
        factor: 3.0,
        floor: Duration::from_millis(50),
        ceiling: secs(30),
        min_samples: 20,
    };
    let layer = RetryLayer::new(plain().attempt_timeout(adaptive));
    let svc = layer.layer(http(&mock));
    for _ in 0..20 {
        let res = svc.clone().oneshot(req(CHAT)).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    mock.set_faults(FaultPlan::Script { faults: vec![Fault::Hang] });
    let start = Instant::now();
    let res = svc.clone().oneshot(req(CHAT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The hung attempt was cut at 3 × p99 (100 ms) = 300 ms, not the 30 s ceiling;
    // then 1 s backoff and a 100 ms answer.
    assert_eq!(start.elapsed(), Duration::from_millis(300 + 1000 + 100));
}

#[tokio::test(start_paused = true)]
async fn exhausted_errors_are_typed() {
    let mock = always(Fault::Reset).await;
    let layer = RetryLayer::new(plain());
    let err = send(&layer, &mock, CHAT).await.unwrap_err();
    let ex = err.downcast_ref::<RetriesExhausted>().expect("typed");
    assert_eq!(ex.attempts, 3);
    assert!(ex.last().is::<Transport>());
    assert_eq!(mock.stats().llm_requests, 3);
    assert_eq!(layer.stats().give_ups, 1);
}

#[tokio::test(start_paused = true)]
async fn started_streams_are_never_retried() {
    let mock = always(Fault::StreamCut { after_tokens: 2 }).await;
    let layer = RetryLayer::new(plain());
    let res = send(&layer, &mock, STREAM).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.into_body().collect().await.is_err(), "the stream broke");
    assert_eq!(mock.stats().llm_requests, 1);
    assert_eq!(layer.stats().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn inner_layers_see_the_attempt_number() {
    let mock = mock_with(vec![Fault::status(502), Fault::status(502)]).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let observe = tower::ServiceBuilder::new()
        .map_request(move |r: Request<LlmBody>| {
            record.lock().unwrap().push(Attempt::of(&r));
            r
        })
        .service(http(&mock));
    let svc = RetryLayer::new(plain()).layer(observe);
    assert_eq!(svc.oneshot(req(CHAT)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_large_429_body_is_read_for_its_quota_code_and_passed_on_whole() {
    // Over the 16 KiB the layer reads: the body must reach the caller whole.
    let fault = Fault::LargeError { status: 429, code: Some("insufficient_quota".into()), bytes: 100_000 };
    let mock = always(fault).await;
    let layer = RetryLayer::new(plain());
    let res = send(&layer, &mock, CHAT).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("whole JSON");
    assert_eq!(json["error"]["message"].as_str().unwrap().len(), 100_000);
    assert_eq!(mock.stats().llm_requests, 1, "insufficient_quota is never retried");
    assert_eq!(layer.stats().quota_refusals, 1);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_carries_its_deadline_to_the_inner_service() {
    // The HTTP service's own headers timeout is 300 s; the attempt limit of
    // 2 s reaches it through the request's `Deadline`, so the inner call ends
    // at 2 s by itself (a breaker between them sees the timeout).
    let mock = mock_with(vec![Fault::Hang, Fault::Hang]).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let svc = http(&mock);
    let inner = tower::service_fn(move |r: Request<LlmBody>| {
        s.lock().unwrap().push(llm_tower_core::Deadline::of(&r));
        svc.clone().oneshot(r)
    });
    let layer = RetryLayer::new(plain().attempt_timeout(AttemptTimeout::Fixed(secs(2))).deadline(secs(30)));
    let start = Instant::now();
    let res = layer.layer(inner).oneshot(req(CHAT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Attempts at 0 s and 3 s (2 s limit + 1 s backoff), each limited to 2 s; the third answers.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![Some(start + secs(2)), Some(start + secs(5)), Some(start + secs(8))]);
    assert_eq!(start.elapsed(), secs(6));
}

#[tokio::test(start_paused = true)]
async fn a_callers_deadline_bounds_every_attempt_and_no_call_starts_past_it() {
    let mock = always(Fault::Hang).await;
    let layer = RetryLayer::new(plain().max_attempts(5));
    let start = Instant::now();
    let mut r = req(CHAT);
    r.extensions_mut().insert(llm_tower_core::Deadline(start + secs(4)));
    let err = layer.layer(http(&mock)).oneshot(r).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Timeout>().map(|t| t.phase), Some(TimeoutPhase::Total), "{err:?}");
    assert_eq!(start.elapsed(), secs(4));
    assert_eq!(mock.stats().llm_requests, 1);
    // Already past: no call at all.
    let mut r = req(CHAT);
    r.extensions_mut().insert(llm_tower_core::Deadline(Instant::now()));
    let err = layer.layer(http(&mock)).oneshot(r).await.unwrap_err();
    assert!(err.is::<Timeout>());
    assert_eq!(mock.stats().llm_requests, 1);
}
