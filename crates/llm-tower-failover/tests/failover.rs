//! Failover over real mock providers on loopback.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use llm_tower_core::LlmResponseBody;
use llm_tower_core::{AllBackendsFailed, LlmBody, error_response};
use llm_tower_failover::{
    Backend, Failover, Health, HealthConfig, Hedge, HedgeDelay, Route, RouteStrategyKind, Target,
};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Fault, FaultPlan, Latency, MockConfig, MockServer};
use tower::ServiceExt;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn http(name: &str, m: &MockServer) -> LlmHttpService {
    LlmHttpService::new(Provider::openai_compatible(name, &format!("{}/v1", m.url())).unwrap())
}

async fn mock(faults: FaultPlan) -> MockServer {
    MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap()
}

fn always(status: u16) -> FaultPlan {
    FaultPlan::Always { fault: Fault::status(status) }
}

fn two(a: &MockServer, b: &MockServer, route: Route) -> Failover<LlmHttpService> {
    Failover::builder()
        .backend(Backend::new("a", http("a", a)))
        .backend(Backend::new("b", http("b", b)))
        .route("gpt-4o-mini", route)
        .build()
        .unwrap()
}

/// `gpt-4o-mini` on `small`, falling back to the `big` route (`gpt-4o` on
/// `large`) when the request is too long for it.
fn with_context_fallback(small: &MockServer, large: &MockServer) -> Failover<LlmHttpService> {
    Failover::builder()
        .backend(Backend::new("small", http("small", small)))
        .backend(Backend::new("large", http("large", large)))
        .route("gpt-4o-mini", Route::new([Target::new("small")]).context_fallback("big"))
        .route("big", Route::new([Target::to("large", "gpt-4o")]))
        .build()
        .unwrap()
}

fn ab() -> Route {
    Route::new([Target::new("a"), Target::new("b")])
}

fn req(body: &str) -> Request<LlmBody> {
    Request::post("/v1/chat/completions").body(LlmBody::from(body.to_owned())).unwrap()
}

type Res = http::Response<LlmResponseBody>;

async fn send(f: &Failover<LlmHttpService>, body: &str) -> Result<Res, tower::BoxError> {
    f.clone().oneshot(req(body)).await
}

fn backend(res: &Res) -> &str {
    res.headers()["x-llm-backend"].to_str().unwrap()
}

fn llm(m: &MockServer) -> u64 {
    m.stats().llm_requests
}

#[tokio::test]
async fn retryable_failures_fail_over_and_client_errors_do_not() {
    let (a, b) = (mock(always(503)).await, mock(FaultPlan::None).await);
    let f = two(&a, &b, ab());
    let res = send(&f, CHAT).await.unwrap();
    assert_eq!((res.status(), backend(&res)), (StatusCode::OK, "b"));
    assert_eq!((llm(&a), llm(&b)), (1, 1));

    // A 400 is the caller's: returned from the first backend, never failed over.
    let (a, b) = (mock(always(400)).await, mock(FaultPlan::None).await);
    let f = two(&a, &b, ab());
    let res = send(&f, CHAT).await.unwrap();
    assert_eq!((res.status(), backend(&res)), (StatusCode::BAD_REQUEST, "a"));
    assert_eq!(llm(&b), 0);

    // A backend that cannot be reached fails over too.
    let a = mock(FaultPlan::None).await;
    let url = a.url();
    a.shutdown().await;
    let f = Failover::builder()
        .backend(Backend::new(
            "gone",
            LlmHttpService::new(Provider::openai_compatible("gone", &format!("{url}/v1")).unwrap()),
        ))
        .backend(Backend::new("b", http("b", &b)))
        .route("gpt-4o-mini", Route::new([Target::new("gone"), Target::new("b")]))
        .build()
        .unwrap();
    assert_eq!(backend(&send(&f, CHAT).await.unwrap()), "b");
}

#[tokio::test]
async fn when_every_backend_fails_the_error_lists_each_and_why() {
    let (a, b) = (mock(always(503)).await, mock(always(500)).await);
    let err = send(&two(&a, &b, ab()), CHAT).await.unwrap_err();
    let all = err.downcast_ref::<AllBackendsFailed>().expect("typed");
    let why: Vec<(&str, Option<u16>)> = all.attempts.iter().map(|a| (a.backend.as_str(), a.status)).collect();
    // a moved on to b at once (retry elsewhere first), b failed too, then back
    // to a, the one left without its retries.
    assert_eq!(why, [("a", Some(503)), ("b", Some(500)), ("a", Some(503))]);
    assert_eq!(error_response(&*err).status(), StatusCode::BAD_GATEWAY);

    // Every backend rate limited: a 429 with the soonest retry-after.
    let limited = |secs| FaultPlan::Always { fault: Fault::status_retry_after(429, secs) };
    let (a, b) = (mock(limited(7)).await, mock(limited(3)).await);
    let err = send(&two(&a, &b, ab()), CHAT).await.unwrap_err();
    let res = error_response(&*err);
    assert_eq!(
        (res.status(), res.headers()["retry-after"].to_str().unwrap()),
        (StatusCode::TOO_MANY_REQUESTS, "3")
    );

    // An unknown model is a 404.
    let err = send(&two(&a, &b, ab()), &CHAT.replace("gpt-4o-mini", "nope")).await.unwrap_err();
    assert_eq!(error_response(&*err).status(), StatusCode::NOT_FOUND);
}

type Boxed = tower::util::BoxCloneSyncService<
    Request<LlmBody>,
    http::Response<http_body_util::combinators::UnsyncBoxBody<Bytes, tower::BoxError>>,
    tower::BoxError,
>;

/// Any stack as one backend type (a failover's backends share a type).
fn boxed<S, B>(svc: S) -> Boxed
where
    S: tower::Service<Request<LlmBody>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    Boxed::new(svc.map_err(Into::into).map_response(|r| r.map(|b| b.map_err(Into::into).boxed_unsync())))
}

#[tokio::test]
async fn an_open_breaker_or_a_busy_limiter_is_skipped_without_a_call() {
    use llm_tower_circuit::{CircuitBreakerLayer, CircuitConfig};
    use llm_tower_ratelimit::{Limits, Mode, RateLimitLayer};
    use tower::Layer;
    let (a, b) = (mock(FaultPlan::None).await, mock(FaultPlan::None).await);
    let breaker = CircuitBreakerLayer::new(CircuitConfig::default());
    let limits = Limits::default()
        .requests_per_minute(1)
        .mode(Mode::Wait { max_wait: Duration::from_secs(60), max_queue: 10 });
    let limiter = RateLimitLayer::new(limits);
    let (handle, l) = (breaker.handle(), limiter.clone());
    let f = Failover::builder()
        .backend(
            Backend::new("a", boxed(breaker.layer(limiter.layer(http("a", &a)))))
                .available_when(move |_| handle.is_available("*"))
                .wait_estimate(move |r| l.wait_for(r)),
        )
        .backend(Backend::new("b", boxed(http("b", &b))))
        .route("gpt-4o-mini", ab())
        .build()
        .unwrap();
    let to =
        |res: Result<http::Response<_>, tower::BoxError>| res.unwrap().headers()["x-llm-backend"].clone();
    assert_eq!(to(f.clone().oneshot(req(CHAT)).await), "a");
    // a's limiter is spent for a minute: a request would wait there, not at b.
    assert_eq!(to(f.clone().oneshot(req(CHAT)).await), "b");
    breaker.handle().force_open("*");
    assert_eq!(to(f.clone().oneshot(req(CHAT)).await), "b", "an open breaker is skipped");
    assert_eq!((llm(&a), llm(&b)), (1, 2), "skipped backends were never called");
}

#[tokio::test(start_paused = true)]
async fn a_slow_request_is_hedged_and_the_first_head_wins() {
    let slow = Latency { headers: Duration::from_secs(5), per_token: Duration::ZERO };
    let a = MockServer::start(MockConfig { latency: slow, ..Default::default() }).await.unwrap();
    let b = mock(FaultPlan::None).await;
    let hedged = ab().hedge(Hedge::new(HedgeDelay::Fixed(Duration::from_millis(200))).max_ratio(1.0));
    let f = two(&a, &b, hedged);
    let start = tokio::time::Instant::now();
    let res = send(&f, CHAT).await.unwrap();
    assert_eq!(backend(&res), "b");
    assert!(start.elapsed() < Duration::from_secs(1), "did not wait for the slow one: {:?}", start.elapsed());
    res.into_body().collect().await.unwrap();
    let stats = f.stats();
    assert_eq!(
        (stats[1].hedges, stats[0].in_flight, stats[1].in_flight),
        (1, 0, 0),
        "the loser was cancelled: {stats:?}"
    );

    assert_eq!(stats[0].hedges_cancelled, 1, "the cancelled call is counted against a: {stats:?}");
    assert!(stats[0].latency_ewma_ms >= 200.0, "a's wait until it was cancelled is a sample: {stats:?}");

    // No budget, no hedge: the request waits for the first backend.
    let f = two(&a, &b, ab().hedge(Hedge::new(HedgeDelay::Fixed(Duration::from_millis(200))).max_ratio(0.0)));
    let start = tokio::time::Instant::now();
    let res = send(&f, CHAT).await.unwrap();
    assert_eq!(backend(&res), "a");
    assert!(start.elapsed() >= Duration::from_secs(5));
    res.into_body().collect().await.unwrap();
    for _ in 0..11 {
        send(&f, CHAT).await.unwrap().into_body().collect().await.unwrap();
    }
    let stats = f.stats();
    assert_eq!((stats[0].hedges, stats[1].hedges), (0, 0), "a zero budget never hedges");
    // b was never measured (never called): a slow a has nothing to stand out
    // against, and keeps its place (no demotion on a guessed latency).
    assert_eq!(stats[1].requests, 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn failures_mark_a_backend_down_and_it_comes_back_slowly() {
    let a = mock(FaultPlan::Script { faults: vec![Fault::status(503), Fault::status(503)] }).await;
    let b = mock(FaultPlan::None).await;
    let health = HealthConfig::default()
        .failures_to_down(2)
        .down_for(Duration::from_secs(30))
        .slow_start(Duration::from_secs(100));
    let f = Failover::builder()
        .backend(Backend::new("a", http("a", &a)))
        .backend(Backend::new("b", http("b", &b)))
        .route("gpt-4o-mini", ab())
        .health(health)
        .build()
        .unwrap();
    for _ in 0..2 {
        assert_eq!(backend(&send(&f, CHAT).await.unwrap()), "b");
    }
    assert_eq!(f.stats()[0].state, Health::Down);
    for _ in 0..5 {
        assert_eq!(backend(&send(&f, CHAT).await.unwrap()), "b", "a down backend goes last");
    }
    assert_eq!(llm(&a), 2, "and is not called while another answers");
    // 30 s later it is back in slow start: 10 s into a 100 s ramp, about a 10–20 % share.
    tokio::time::advance(Duration::from_secs(40)).await;
    assert_eq!(f.stats()[0].state, Health::SlowStart);
    let mut to_a = 0;
    for _ in 0..200 {
        let res = send(&f, CHAT).await.unwrap();
        to_a += u32::from(backend(&res) == "a");
    }
    assert!((10..=50).contains(&to_a), "a got {to_a} of 200 in slow start");
    tokio::time::advance(Duration::from_secs(100)).await;
    assert_eq!(f.stats()[0].state, Health::Up);
    assert_eq!(backend(&send(&f, CHAT).await.unwrap()), "a", "full share again: first in priority");
}

#[tokio::test(start_paused = true)]
async fn an_active_probe_marks_a_dead_backend_down_without_user_traffic() {
    let (a, b) = (mock(FaultPlan::None).await, mock(FaultPlan::None).await);
    let f = Failover::builder()
        .backend(Backend::new("a", http("a", &a)))
        .backend(Backend::new("b", http("b", &b)))
        .route("gpt-4o-mini", ab())
        .health(HealthConfig::default().probe_every(Duration::from_secs(5)))
        .build()
        .unwrap();
    // Paused time (`start_paused`): this sleep is virtual and returns at once. A
    // sleep rather than `advance`, so that the probe task runs its loopback call
    // to the mock while time stands at each tick (advance only fires the timers).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(f.stats()[0].state, Health::Up, "the first probe found it healthy");
    a.shutdown().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(f.stats()[0].state, Health::Down);
    assert_eq!(backend(&send(&f, CHAT).await.unwrap()), "b");
}

#[tokio::test]
async fn too_long_for_the_model_tries_the_larger_context_route() {
    let too_long = Fault::Status {
        status: 400,
        retry_after: None,
        code: Some("context_length_exceeded".into()),
        headers: vec![],
    };
    let small = mock(FaultPlan::Always { fault: too_long }).await;
    let large = mock(FaultPlan::None).await;
    let f = with_context_fallback(&small, &large);
    let res = send(&f, CHAT).await.unwrap();
    assert_eq!((res.status(), backend(&res)), (StatusCode::OK, "large"));
    assert_eq!(large.requests()[0].json()["model"], "gpt-4o", "the target's model name went upstream");
    // Without a fallback the 400 is returned as it is.
    let f = two(&small, &large, Route::new([Target::new("a"), Target::new("b")]));
    let res = send(&f, CHAT).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn round_robin_and_weighted_spread_the_load() {
    let (a, b) = (mock(FaultPlan::None).await, mock(FaultPlan::None).await);
    let f = two(&a, &b, ab().strategy(RouteStrategyKind::RoundRobin.build()));
    for _ in 0..10 {
        send(&f, CHAT).await.unwrap().into_body().collect().await.unwrap();
    }
    assert_eq!((llm(&a), llm(&b)), (5, 5));
    let f = Failover::builder()
        .backend(Backend::new("a", http("a", &a)).weight(1))
        .backend(Backend::new("b", http("b", &b)).weight(3))
        .route("gpt-4o-mini", ab().strategy(RouteStrategyKind::WeightedRandom.build()))
        .seed(11)
        .build()
        .unwrap();
    for _ in 0..200 {
        send(&f, CHAT).await.unwrap().into_body().collect().await.unwrap();
    }
    let to_b = llm(&b) - 5;
    assert!((125..=175).contains(&to_b), "b took {to_b} of 200 at weight 3:1");
    let s = f.stats();
    assert_eq!(s[0].requests + s[1].requests, 200);
    assert_eq!(s[0].successes + s[1].successes, 200);
    assert!(s.iter().all(|s| s.in_flight == 0 && s.latency_ewma_ms > 0.0));
}

#[tokio::test]
async fn a_stream_that_breaks_after_it_started_ends_with_an_error_event() {
    let a = mock(FaultPlan::Always { fault: Fault::StreamCut { after_tokens: 3 } }).await;
    let b = mock(FaultPlan::None).await;
    let f = two(&a, &b, ab());
    let stream = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let res = send(&f, stream).await.unwrap();
    assert_eq!((res.status(), backend(&res)), (StatusCode::OK, "a"), "no failover after the head");
    let text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.ends_with("\n\n") && text.contains("event: error\ndata: {\"error\":"), "{text}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(f.stats()[0].failures, 1, "the break counts against the backend");
    assert_eq!(llm(&b), 0);
}

#[test]
fn routes_must_name_known_backends() {
    let svc = tower::service_fn(|_r: Request<LlmBody>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
    });
    let errs = Failover::builder()
        .backend(Backend::new("a", svc))
        .backend(Backend::new("a", svc))
        .route("m", Route::new([Target::new("a"), Target::new("x")]).context_fallback("nope"))
        .route("empty", Route::new([]))
        .build()
        .unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    for f in ["backends[1]", "routes.m.targets[1]", "routes.m.context_fallback", "routes.empty.targets"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_hedging_delay_follows_the_recent_latency_percentile() {
    // a answers in 50 ms; its p95 becomes the hedging delay.
    let quick = Latency { headers: Duration::from_millis(50), per_token: Duration::ZERO };
    let a = MockServer::start(MockConfig { latency: quick, ..Default::default() }).await.unwrap();
    let b = mock(FaultPlan::None).await;
    let delay = HedgeDelay::Percentile { p: 0.95, min: Duration::from_millis(10) };
    let f = two(&a, &b, ab().hedge(Hedge::new(delay).max_ratio(1.0)));
    for _ in 0..20 {
        let res = send(&f, CHAT).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    // (A 50 ms answer ties with a 50 ms delay: some of these may have been hedged.)
    let warm_hedges = f.stats()[1].hedges;
    // a stops answering: the request is hedged once the p95 (50 ms) has passed,
    // not after the 1 s used before there are enough samples, nor the 10 ms floor.
    a.set_faults(FaultPlan::Always { fault: Fault::Hang });
    let start = tokio::time::Instant::now();
    let res = send(&f, CHAT).await.unwrap();
    let took = start.elapsed();
    assert_eq!(backend(&res), "b");
    assert!(
        took >= Duration::from_millis(40) && took < Duration::from_millis(200),
        "hedged after the p95: {took:?}"
    );
    assert_eq!(f.stats()[1].hedges, warm_hedges + 1);
}

#[tokio::test]
async fn a_large_400_is_read_for_context_length_and_passed_on_whole() {
    // The route has a context fallback, so the 400 is peeked; over the peek
    // limit it must stay a 400 with its whole body (not a 500, not empty).
    let big = mock(FaultPlan::Always {
        fault: Fault::LargeError { status: 400, code: Some("invalid_value".into()), bytes: 100_000 },
    })
    .await;
    let large = mock(FaultPlan::None).await;
    let f = with_context_fallback(&big, &large);
    let res = send(&f, CHAT).await.unwrap();
    assert_eq!((res.status(), backend(&res)), (StatusCode::BAD_REQUEST, "small"));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("whole JSON");
    assert_eq!(json["error"]["code"], "invalid_value");
    assert_eq!(json["error"]["message"].as_str().unwrap().len(), 100_000);
    assert_eq!(llm(&large), 0, "a client error never fails over");
}

/// A backend whose HTTP service allows one request at a time.
fn one_at_a_time(name: &str, m: &MockServer) -> LlmHttpService {
    let client = llm_tower_http::HttpClient::new(llm_tower_http::ClientConfig {
        max_connections_per_host: Some(1),
        ..Default::default()
    });
    LlmHttpService::with_client(
        Provider::openai_compatible(name, &format!("{}/v1", m.url())).unwrap(),
        client,
    )
}

const STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn readiness_is_pending_only_when_every_backend_is() {
    let (a, b) = (mock(FaultPlan::None).await, mock(FaultPlan::None).await);
    let f = Failover::builder()
        .backend(Backend::new("a", one_at_a_time("a", &a)))
        .backend(Backend::new("b", one_at_a_time("b", &b)))
        .route("gpt-4o-mini", ab())
        .build()
        .unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // A stream on each backend holds its only slot.
    let on_a = f.clone().oneshot(req(STREAM)).await.unwrap();
    assert_eq!(on_a.headers()["x-llm-backend"], "a");
    let mut probe = f.clone();
    assert!(tower::Service::poll_ready(&mut probe, &mut cx).is_ready(), "b is still free");
    let on_b = tower::Service::call(&mut probe, req(STREAM)).await.unwrap();
    assert_eq!(on_b.headers()["x-llm-backend"], "b", "a is busy: the ready backend serves");
    let mut waiting = f.clone();
    assert!(tower::Service::poll_ready(&mut waiting, &mut cx).is_pending(), "no backend has room");
    // A body that ends gives its slot back, and the failover is ready again.
    on_b.into_body().collect().await.unwrap();
    let svc = waiting.ready().await.unwrap();
    let res = tower::Service::call(svc, req(CHAT)).await.unwrap();
    assert_eq!(res.headers()["x-llm-backend"], "b");
    drop(on_a);
    assert_eq!(a.stats().llm_requests + b.stats().llm_requests, 3);
}
