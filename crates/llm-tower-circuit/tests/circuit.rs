//! The breaker around LlmHttpService against the real mock, on paused time
//! (the concurrency test runs on a multi-threaded runtime).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use llm_tower_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState, RateRule, SlowRule, Window};
use llm_tower_core::{CircuitOpen, GrpcClassifier, KeyFn, LlmBody, RequestInfo};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Fault, FaultPlan, Latency, MockConfig, MockServer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

async fn mock(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg).await.unwrap()
}

fn http(mock: &MockServer) -> LlmHttpService {
    LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap())
}

fn req_for(model: &str) -> Request<LlmBody> {
    let body = CHAT.replace("gpt-4o-mini", model);
    let mut r = Request::post("/v1/chat/completions").body(LlmBody::from(body)).unwrap();
    RequestInfo::ensure(&mut r).unwrap();
    r
}

fn req() -> Request<LlmBody> {
    req_for("gpt-4o-mini")
}

/// No jitter, so open periods are exact.
fn cfg() -> CircuitConfig {
    CircuitConfig::default().open_jitter(0.0).open_duration(secs(30))
}

/// Sends one request; `Ok(status)` or `Err(())` when the breaker refused.
async fn call<S>(svc: &S) -> Result<u16, String>
where
    S: tower::Service<
            Request<LlmBody>,
            Response = http::Response<llm_tower_core::LlmResponseBody>,
            Error = tower::BoxError,
        > + Clone,
{
    match svc.clone().oneshot(req()).await {
        Ok(res) => {
            let status = res.status().as_u16();
            let _ = res.into_body().collect().await;
            Ok(status)
        }
        Err(e) if e.is::<CircuitOpen>() => Err("open".into()),
        Err(e) => Ok(llm_tower_core::ErrorInfo::from_error(&*e).status.as_u16()),
    }
}

#[tokio::test(start_paused = true)]
async fn outcome_sequences_to_states() {
    use Fault::*;
    let rate = CircuitConfig::default()
        .open_jitter(0.0)
        .consecutive_failures(None)
        .failure_rate(Some(RateRule { threshold: 0.5, min_calls: 10 }))
        .window(Window::Count(10));
    let table: Vec<(&str, CircuitConfig, Vec<Fault>, CircuitState)> = vec![
        ("5 consecutive 503s", cfg(), vec![Fault::status(503); 5], CircuitState::Open),
        (
            "4 failures, a success, 4 failures",
            cfg(),
            [vec![Fault::status(503); 4], vec![Ok], vec![Fault::status(500); 4]].concat(),
            CircuitState::Closed,
        ),
        (
            "client errors never trip",
            cfg(),
            vec![Fault::status(400); 10].into_iter().chain(vec![Fault::status(404); 10]).collect(),
            CircuitState::Closed,
        ),
        (
            "client errors break a failure run",
            cfg(),
            [vec![Fault::status(503); 4], vec![Fault::status(422)], vec![Fault::status(503); 4]].concat(),
            CircuitState::Closed,
        ),
        ("connection resets count", cfg(), vec![Reset; 5], CircuitState::Open),
        ("529 overloaded counts", cfg(), vec![Fault::status(529); 5], CircuitState::Open),
        (
            "rate: 5 of 10 fail",
            rate,
            (0..5).flat_map(|_| [Fault::status(503), Ok]).collect(),
            CircuitState::Open,
        ),
        (
            "rate: 4 of 10 fail",
            rate,
            [vec![Fault::status(503); 4], vec![Ok; 6]].concat(),
            CircuitState::Closed,
        ),
        ("rate: under min calls", rate, vec![Fault::status(503); 9], CircuitState::Closed),
    ];
    for (name, config, faults, want) in table {
        let n = faults.len() as u64;
        let m = mock(MockConfig { faults: FaultPlan::Script { faults }, ..Default::default() }).await;
        let layer = CircuitBreakerLayer::new(config);
        let svc = layer.layer(http(&m));
        for _ in 0..n {
            let _ = call(&svc).await;
        }
        assert_eq!(layer.handle().state("*"), want, "{name}");
        assert_eq!(m.stats().llm_requests, n, "{name}: every call reached upstream");
    }
}

#[tokio::test(start_paused = true)]
async fn outage_lifecycle_open_no_traffic_probe_closes() {
    let m =
        mock(MockConfig { faults: FaultPlan::Always { fault: Fault::status(503) }, ..Default::default() })
            .await;
    let layer = CircuitBreakerLayer::new(
        cfg().consecutive_failures(Some(3)).half_open_probes(1).half_open_successes(1),
    );
    let handle = layer.handle();
    let mut transitions = handle.subscribe();
    let svc = layer.layer(http(&m));
    for _ in 0..3 {
        assert_eq!(call(&svc).await, Ok(503));
    }
    assert_eq!(handle.state("*"), CircuitState::Open);
    assert!(transitions.has_changed().unwrap());
    assert_eq!(transitions.borrow_and_update().as_ref().unwrap().to, CircuitState::Open);
    // While open: refused at once, with retry-after, and the mock sees nothing.
    for _ in 0..10 {
        let err = svc.clone().oneshot(req()).await.unwrap_err();
        let open = err.downcast_ref::<CircuitOpen>().unwrap();
        assert_eq!(open.retry_after, Some(secs(30)));
    }
    assert_eq!(m.stats().llm_requests, 3);
    assert!(!handle.is_available("*"));
    // The outage ends; after the open period one probe closes the circuit.
    m.set_faults(FaultPlan::None);
    tokio::time::advance(secs(30)).await;
    assert_eq!(handle.state("*"), CircuitState::HalfOpen);
    assert!(handle.is_available("*"));
    assert_eq!(call(&svc).await, Ok(200));
    assert_eq!(handle.state("*"), CircuitState::Closed);
    assert_eq!(transitions.borrow().as_ref().unwrap().to, CircuitState::Closed);
    let s = handle.stats();
    assert_eq!((s.calls, s.failures, s.rejections, s.transitions), (4, 3, 10, 3));
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_for_longer() {
    let m =
        mock(MockConfig { faults: FaultPlan::Always { fault: Fault::status(502) }, ..Default::default() })
            .await;
    let layer = CircuitBreakerLayer::new(cfg().consecutive_failures(Some(2)).open_backoff(2.0));
    let svc = layer.layer(http(&m));
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    tokio::time::advance(secs(30)).await;
    assert_eq!(call(&svc).await, Ok(502), "the probe went through and failed");
    assert_eq!(layer.handle().state("*"), CircuitState::Open);
    assert_eq!(layer.handle().stats().keys[0].open_for_ms, Some(60_000), "second trip: 2 × 30 s");
}

#[tokio::test(start_paused = true)]
async fn retry_after_holds_the_circuit_open() {
    let m = mock(MockConfig {
        faults: FaultPlan::Always { fault: Fault::status_retry_after(429, 120) },
        ..Default::default()
    })
    .await;
    let layer = CircuitBreakerLayer::new(cfg().consecutive_failures(Some(2)));
    let svc = layer.layer(http(&m));
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    let h = layer.handle();
    assert_eq!(h.stats().keys[0].open_for_ms, Some(120_000), "120 s retry-after beats the 30 s open period");
    tokio::time::advance(secs(60)).await;
    assert_eq!(h.state("*"), CircuitState::Open);
    tokio::time::advance(secs(61)).await;
    assert_eq!(h.state("*"), CircuitState::HalfOpen);
    // Not honoured when configured off.
    let layer = CircuitBreakerLayer::new(cfg().consecutive_failures(Some(2)).honor_retry_after(false));
    let svc = layer.layer(http(&m));
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().stats().keys[0].open_for_ms, Some(30_000));
}

#[tokio::test(start_paused = true)]
async fn count_window_reflects_only_recent_outcomes() {
    let faults = [vec![Fault::status(503); 4], vec![Fault::Ok; 16]].concat();
    let m = mock(MockConfig { faults: FaultPlan::Script { faults }, ..Default::default() }).await;
    let rate = cfg()
        .consecutive_failures(None)
        .failure_rate(Some(RateRule { threshold: 0.5, min_calls: 10 }))
        .window(Window::Count(10));
    let layer = CircuitBreakerLayer::new(rate);
    let svc = layer.layer(http(&m));
    for _ in 0..10 {
        call(&svc).await.unwrap();
    }
    assert!((layer.handle().stats().keys[0].failure_rate - 0.4).abs() < 1e-9);
    for _ in 0..10 {
        call(&svc).await.unwrap();
    }
    let s = layer.handle().stats();
    assert_eq!(s.keys[0].failure_rate, 0.0, "the burst left the window");
    assert_eq!((s.calls, s.failures), (20, 4), "lifetime counters keep counting");
}

#[tokio::test(start_paused = true)]
async fn time_window_and_slow_calls() {
    let latency = Latency { headers: secs(2), per_token: Duration::ZERO };
    let m = mock(MockConfig { latency, ..Default::default() }).await;
    let slow = SlowRule { slower_than: secs(1), threshold: 1.0, min_calls: 3 };
    let layer = CircuitBreakerLayer::new(
        cfg()
            .consecutive_failures(None)
            .failure_rate(None)
            .slow_calls(Some(slow))
            .window(Window::Time { buckets: 10, bucket: secs(1) }),
    );
    let svc = layer.layer(http(&m));
    for _ in 0..3 {
        assert_eq!(call(&svc).await, Ok(200));
    }
    assert_eq!(layer.handle().state("*"), CircuitState::Open, "three slow successes");
    assert_eq!(layer.handle().stats().slow_calls, 3);
}

#[tokio::test(start_paused = true)]
async fn keys_are_isolated_and_bounded() {
    let m = mock(MockConfig {
        models: vec![],
        faults: FaultPlan::Always { fault: Fault::status(503) },
        ..Default::default()
    })
    .await;
    let layer = CircuitBreakerLayer::new(cfg().consecutive_failures(Some(2)).max_keys(10).idle_ttl(secs(60)))
        .keyed(KeyFn::model());
    let svc = layer.layer(http(&m));
    for _ in 0..2 {
        svc.clone().oneshot(req_for("a")).await.unwrap();
    }
    let h = layer.handle();
    assert_eq!(h.state("a"), CircuitState::Open);
    assert_eq!(h.state("b"), CircuitState::Closed);
    assert!(svc.clone().oneshot(req_for("a")).await.unwrap_err().is::<CircuitOpen>());
    assert_eq!(svc.clone().oneshot(req_for("b")).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    // A flood of new keys: idle ones are pruned; the open one is kept.
    tokio::time::advance(secs(61)).await;
    for i in 0..100 {
        let _ = svc.clone().oneshot(req_for(&format!("model-{i}"))).await;
    }
    let keys = h.stats().keys;
    assert!(keys.len() <= 11, "bounded: {}", keys.len());
    assert!(keys.iter().any(|k| k.key == "a"), "open circuits are never pruned");
}

#[tokio::test(start_paused = true)]
async fn forced_states_and_health_probe() {
    let m =
        mock(MockConfig { faults: FaultPlan::Always { fault: Fault::status(503) }, ..Default::default() })
            .await;
    let layer = CircuitBreakerLayer::new(cfg());
    let h = layer.handle();
    let svc = layer.layer(http(&m));
    h.force_open("*");
    assert!(svc.clone().oneshot(req()).await.unwrap_err().is::<CircuitOpen>());
    h.force_closed("*");
    for _ in 0..10 {
        assert_eq!(call(&svc).await, Ok(503));
    }
    assert_eq!(h.state("*"), CircuitState::ForcedClosed, "forced closed never trips");
    h.reset("*");
    assert_eq!(h.state("*"), CircuitState::Closed);

    // The health probe closes the circuit before its 30 s are up.
    let probes = Arc::new(AtomicUsize::new(0));
    let p = probes.clone();
    let layer =
        CircuitBreakerLayer::new(cfg().consecutive_failures(Some(1))).with_health_probe(secs(5), move |_| {
            let n = p.fetch_add(1, Ordering::SeqCst) + 1;
            async move { n >= 2 }
        });
    let svc = layer.layer(http(&m));
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state("*"), CircuitState::Open);
    tokio::time::sleep(secs(11)).await;
    assert_eq!(probes.load(Ordering::SeqCst), 2);
    assert_eq!(layer.handle().state("*"), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_handle_taken_before_the_builder_methods_stays_the_layers() {
    let m =
        mock(MockConfig { faults: FaultPlan::Always { fault: Fault::status(503) }, ..Default::default() })
            .await;
    let probes = Arc::new(AtomicUsize::new(0));
    let p = probes.clone();
    let layer = CircuitBreakerLayer::new(cfg().consecutive_failures(Some(1)));
    let early = layer.handle();
    // Keyed and probed after the handle was taken: in any order, one registry.
    let layer = layer.with_health_probe(secs(5), move |_| {
        p.fetch_add(1, Ordering::SeqCst);
        async { false }
    });
    let layer = layer.keyed(KeyFn::model());
    let svc = layer.layer(http(&m));
    assert_eq!(call(&svc).await, Ok(503));
    assert_eq!(early.state("gpt-4o-mini"), CircuitState::Open, "the early handle sees the keyed circuit");
    assert_eq!(early.stats().keys.len(), 1);
    tokio::time::sleep(secs(6)).await;
    assert_eq!(probes.load(Ordering::SeqCst), 1, "the probe set after the handle runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_admits_exactly_k_probes_under_contention() {
    let m = mock(MockConfig {
        faults: FaultPlan::Script { faults: vec![Fault::status(503)] },
        ..Default::default()
    })
    .await;
    let k = 3;
    let layer = CircuitBreakerLayer::new(
        cfg()
            .consecutive_failures(Some(1))
            .open_duration(Duration::ZERO)
            .half_open_probes(k)
            .half_open_successes(k),
    );
    let svc = layer.layer(http(&m));
    assert_eq!(call(&svc).await, Ok(503));
    assert_eq!(layer.handle().state("*"), CircuitState::HalfOpen, "zero open period: half-open at once");
    m.set_faults(FaultPlan::Always { fault: Fault::Hang });
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (svc, refused) = (svc.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = svc.oneshot(req()).await {
                assert!(e.is::<CircuitOpen>());
                refused.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let settled = async {
        while refused.load(Ordering::SeqCst) < 1000 - k as usize || m.stats().llm_requests < 1 + u64::from(k)
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(secs(30), settled).await.expect("all calls settle");
    assert_eq!(refused.load(Ordering::SeqCst), 1000 - k as usize);
    assert_eq!(m.stats().llm_requests, 1 + u64::from(k), "exactly K probes reached upstream");
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn grpc_breaker_and_retry_classify_by_grpc_status() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    // A real HTTP/2 gRPC exchange with the mock's gRPC endpoint.
    let m = mock(MockConfig::default()).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let url = format!("{}/echo.Echo/Say", m.url());
    let grpc_req = move || {
        Request::post(url.as_str())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
            .unwrap()
    };
    let client = tower::service_fn(move |r: Request<Full<Bytes>>| {
        let c = client.clone();
        async move { c.request(r).await }
    });

    // Retry: a trailers-only UNAVAILABLE is retried, then the echo succeeds.
    m.set_faults(FaultPlan::Script { faults: vec![Fault::status(503)] });
    let retry = llm_tower_retry::RetryLayer::new(
        llm_tower_retry::RetryPolicy::default()
            .backoff(llm_tower_retry::Backoff::Fixed(Duration::from_millis(1))),
    )
    .with_classifier(GrpcClassifier);
    let res = retry.layer(client.clone()).oneshot(grpc_req()).await.unwrap();
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x02hi"));
    assert_eq!(retry.stats().retries, 1);

    // Breaker: INTERNAL in the trailers (a 200 head) is recorded at the end of
    // the body, and trips the circuit.
    m.set_faults(FaultPlan::Always { fault: Fault::status(500) });
    let layer = CircuitBreakerLayer::new(cfg().consecutive_failures(Some(2))).with_classifier(GrpcClassifier);
    let svc = layer.layer(client);
    for _ in 0..2 {
        let res = svc.clone().oneshot(grpc_req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "gRPC errors travel in trailers");
        assert_eq!(layer.handle().state("*"), CircuitState::Closed, "not known before the trailers");
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "13");
    }
    assert_eq!(layer.handle().state("*"), CircuitState::Open);
    assert!(svc.oneshot(grpc_req()).await.unwrap_err().is::<CircuitOpen>());
    let _ = Instant::now();
}

#[tokio::test(start_paused = true)]
async fn hung_calls_cut_by_a_retry_attempt_timeout_trip_the_breaker() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use llm_tower_retry::{AttemptTimeout, Backoff, Jitter, RetryLayer, RetryPolicy};
    // The README order: Retry (attempt timeout) -> CircuitBreaker -> upstream
    // that accepts and never answers. The most common real outage shape.
    let m = mock(MockConfig { faults: FaultPlan::Always { fault: Fault::Hang }, ..Default::default() }).await;
    let retry = RetryLayer::new(
        RetryPolicy::default()
            .max_attempts(3)
            .backoff(Backoff::Fixed(Duration::from_millis(100)))
            .jitter(Jitter::None)
            .budget(None)
            .attempt_timeout(AttemptTimeout::Fixed(secs(2))),
    );

    // Over LlmHttpService: the attempt's deadline reaches it, it ends the call
    // with a typed Timeout, and the breaker records it.
    let breaker = CircuitBreakerLayer::new(cfg().consecutive_failures(Some(3)));
    let svc = retry.layer(breaker.layer(http(&m)));
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
    assert_eq!(breaker.handle().state("*"), CircuitState::Open, "3 hung attempts are 3 failures");

    // Over a plain hyper client that knows nothing of deadlines: the retry
    // layer drops the call at its deadline, and the breaker counts the drop.
    let client: Client<_, LlmBody> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}/v1/chat/completions", m.url());
    let plain = tower::service_fn(move |mut r: Request<LlmBody>| {
        *r.uri_mut() = url.parse().unwrap();
        let c = client.clone();
        async move { c.request(r).await }
    });
    let breaker = CircuitBreakerLayer::new(cfg().consecutive_failures(Some(3)));
    let svc = retry.layer(breaker.layer(plain));
    let start = Instant::now();
    assert!(svc.clone().oneshot(req()).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(6_200), "three 2 s attempts, two 100 ms backoffs");
    assert_eq!(breaker.handle().state("*"), CircuitState::Open);

    // A call dropped before its deadline (a hedge that lost, a caller that
    // left) says nothing about the upstream.
    let breaker = CircuitBreakerLayer::new(cfg().consecutive_failures(Some(1)));
    let svc = breaker.layer(http(&m));
    for _ in 0..3 {
        let mut r = req();
        r.extensions_mut().insert(llm_tower_core::Deadline(Instant::now() + secs(10)));
        assert!(tokio::time::timeout(secs(1), svc.clone().oneshot(r)).await.is_err());
    }
    assert_eq!(breaker.handle().state("*"), CircuitState::Closed);
}
