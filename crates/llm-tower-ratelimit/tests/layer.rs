//! RateLimitLayer around LlmHttpService against the real mock, on paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use llm_tower_core::{KeyFn, LlmBody, RateLimited, RequestInfo};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Latency, MockConfig, MockLimits, MockServer};
use llm_tower_ratelimit::{Limits, MemoryStore, Mode, RateLimitLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","max_tokens":1000,"messages":[{"role":"user","content":"hello"}]}"#;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn http(mock: &MockServer) -> LlmHttpService {
    LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap())
}

fn req() -> Request<LlmBody> {
    let mut r = Request::post("/v1/chat/completions").body(LlmBody::from(CHAT)).unwrap();
    RequestInfo::ensure(&mut r).unwrap();
    r
}

fn req_for(tenant: &str) -> Request<LlmBody> {
    let mut r = req();
    r.headers_mut().insert("x-tenant", tenant.parse().unwrap());
    r
}

#[tokio::test(start_paused = true)]
async fn sixty_rpm_then_refuse_with_retry_after_and_headers() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let svc = RateLimitLayer::new(Limits::default().requests_per_minute(60)).layer(http(&mock));
    for i in 0..60u64 {
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-ratelimit-limit-requests"], "60");
        assert_eq!(res.headers()["x-ratelimit-remaining-requests"], (59 - i).to_string().as_str());
        res.into_body().collect().await.unwrap();
    }
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert_eq!((limited.limit, limited.retry_after), ("requests_per_minute", Some(secs(1))));
    let res = llm_tower_core::error_response(&*err);
    assert_eq!(
        (res.status(), res.headers()["retry-after"].to_str().unwrap()),
        (StatusCode::TOO_MANY_REQUESTS, "1")
    );
    assert_eq!(mock.stats().llm_requests, 60);
}

#[tokio::test(start_paused = true)]
async fn waiters_go_in_fifo_order_and_a_cancelled_one_frees_its_turn() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let limits = Limits::default()
        .requests_per_minute(60)
        .burst(1)
        .mode(Mode::Wait { max_wait: secs(30), max_queue: 100 });
    let layer = RateLimitLayer::new(limits);
    let svc = layer.layer(http(&mock));
    let start = Instant::now();
    let done = Arc::new(Mutex::new(Vec::new()));
    let spawn = |i: u32| {
        let (svc, done) = (svc.clone(), done.clone());
        tokio::spawn(async move {
            let res = svc.oneshot(req()).await.unwrap();
            res.into_body().collect().await.unwrap();
            done.lock().unwrap().push((i, start.elapsed().as_millis() as u64));
        })
    };
    let mut tasks = Vec::new();
    for i in 0..5 {
        tasks.push(spawn(i));
        tokio::task::yield_now().await;
    }
    // Waiter 2 (due at 2 s) gives up: its reservation goes back to the key.
    tasks[2].abort();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A newcomer at 1.5 s gets the freed capacity: sent at 4 s, not 5 s.
    tasks.push(spawn(5));
    for t in tasks {
        let _ = t.await;
    }
    let done = done.lock().unwrap().clone();
    assert_eq!(done, vec![(0, 0), (1, 1000), (3, 3000), (4, 4000), (5, 4000)]);
    let s = layer.stats();
    assert_eq!((s.allowed, s.waited), (5, 5));
    assert_eq!(s.keys[0].queued, 0, "nobody left in the queue");
    assert_eq!(mock.stats().llm_requests, 5);
}

#[tokio::test(start_paused = true)]
async fn concurrency_cap_holds_under_a_thousand_tasks() {
    let latency = Latency { headers: Duration::from_millis(100), per_token: Duration::ZERO };
    let mock = MockServer::start(MockConfig { latency, ..Default::default() }).await.unwrap();
    let http = http(&mock);
    let client = http.client().clone();
    let limits =
        Limits::default().max_concurrent(8).mode(Mode::Wait { max_wait: secs(3600), max_queue: 10_000 });
    let svc = RateLimitLayer::new(limits).layer(http);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(req()).await.unwrap();
            res.into_body().collect().await.unwrap();
        }));
    }
    let mut max_in_flight = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        max_in_flight = max_in_flight.max(client.stats().first().map_or(0, |h| h.in_flight));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(max_in_flight, 8);
    assert_eq!(mock.stats().llm_requests, 1000);
}

#[tokio::test(start_paused = true)]
async fn concurrency_in_reject_mode_refuses_at_once() {
    let latency = Latency { headers: secs(1), per_token: Duration::ZERO };
    let mock = MockServer::start(MockConfig { latency, ..Default::default() }).await.unwrap();
    let svc = RateLimitLayer::new(Limits::default().max_concurrent(1)).layer(http(&mock));
    let first = tokio::spawn(svc.clone().oneshot(req()));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert_eq!(err.downcast_ref::<RateLimited>().unwrap().limit, "concurrency");
    let res = first.await.unwrap().unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(
        svc.oneshot(req()).await.unwrap().status(),
        StatusCode::OK,
        "the permit came back with the body"
    );
}

#[tokio::test(start_paused = true)]
async fn token_reservations_are_reconciled_with_real_usage() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let layer = RateLimitLayer::new(Limits::default().tokens_per_minute(10_000));
    let svc = layer.layer(http(&mock));
    let res = svc.clone().oneshot(req()).await.unwrap();
    // Reserved: ~1,000 output tokens plus the input estimate.
    let during = layer.stats().keys[0].tokens.unwrap().remaining;
    assert!(during < 9_000, "{during}");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let used = v["usage"]["total_tokens"].as_u64().unwrap();
    let after = layer.stats().keys[0].tokens.unwrap().remaining;
    assert_eq!(after, 10_000 - used, "charged what the response reported ({used}), not the estimate");
}

#[tokio::test(start_paused = true)]
async fn keys_are_isolated() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let layer =
        RateLimitLayer::new(Limits::default().requests_per_minute(1)).keyed(KeyFn::header("x-tenant"));
    let svc = layer.layer(http(&mock));
    assert!(svc.clone().oneshot(req_for("a")).await.is_ok());
    assert!(svc.clone().oneshot(req_for("a")).await.unwrap_err().is::<RateLimited>());
    assert!(svc.clone().oneshot(req_for("b")).await.is_ok(), "tenant b has its own minute");
    let keys: Vec<String> = layer.stats().keys.into_iter().map(|k| k.key).collect();
    assert_eq!(keys, ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn adapts_to_the_providers_headers_before_it_refuses() {
    // The provider allows 3 requests a minute and says so in its headers.
    let limits = Some(MockLimits { rpm: 3, tpm: 1_000_000 });
    let mock = MockServer::start(MockConfig { limits, ..Default::default() }).await.unwrap();
    let layer = RateLimitLayer::new(Limits::default().emit_headers(false));
    let svc = layer.layer(http(&mock));
    for _ in 0..3 {
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.into_body().collect().await.unwrap();
    }
    // The third answer said remaining 0: we hold instead of sending a request to be refused.
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(limited.limit, "provider_limit");
    assert!(limited.retry_after.unwrap() > secs(10));
    assert_eq!(mock.stats().llm_requests, 3);
    assert_eq!(mock.stats().rate_limited, 0, "the provider never had to refuse");
}

#[tokio::test(start_paused = true)]
async fn our_refusals_are_classified_as_ours_never_as_upstream_failures() {
    use llm_tower_core::{Classify, LlmClassifier, OutcomeClass};
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let svc = RateLimitLayer::new(Limits::default().requests_per_minute(1)).layer(http(&mock));
    svc.clone().oneshot(req()).await.unwrap();
    for _ in 0..10 {
        let err = svc.clone().oneshot(req()).await.unwrap_err();
        let c = LlmClassifier::default().classify_error(&*err);
        assert_eq!(c.class, OutcomeClass::Rejected, "a breaker never counts these");
        assert!(!c.retryable && !c.is_upstream_failure());
    }
    assert_eq!(mock.stats().llm_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn absurd_upstream_limit_headers_never_panic_or_block_forever() {
    use llm_tower_mock::{Fault, FaultPlan};
    // remaining >= 2^32 divided the reset by 0 (a panic); a retry-after of
    // u64::MAX seconds overflowed the hold.
    let headers = vec![
        ("x-ratelimit-limit-requests".into(), "100000000000000".into()),
        ("x-ratelimit-remaining-requests".into(), "4294967296".into()),
        ("x-ratelimit-reset-requests".into(), "1s".into()),
    ];
    let faults = vec![
        Fault::Status { status: 503, retry_after: None, code: None, headers },
        Fault::Status {
            status: 429,
            retry_after: None,
            code: None,
            headers: vec![("retry-after".into(), "18446744073709551615".into())],
        },
    ];
    let mock = MockServer::start(MockConfig { faults: FaultPlan::Script { faults }, ..Default::default() })
        .await
        .unwrap();
    let layer = RateLimitLayer::new(Limits::default().requests_per_minute(600).mode(Mode::Reject));
    let svc = layer.layer(http(&mock));
    assert_eq!(svc.clone().oneshot(req()).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(svc.clone().oneshot(req()).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    // Held (the hint is huge), refused with a retry-after, no panic.
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert!(err.is::<RateLimited>(), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_bare_limiter_reserves_by_max_tokens_without_a_parsing_layer_above() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let bare = |max_tokens: u32| {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        // No RequestInfo in the extensions: the limiter parses it itself.
        Request::post("/v1/chat/completions").body(LlmBody::from(body)).unwrap()
    };
    let passed = |max_tokens: u32| {
        let mock = &mock;
        async move {
            let layer = RateLimitLayer::new(Limits::default().tokens_per_minute(10_000).mode(Mode::Reject));
            let svc = layer.layer(http(mock));
            let mut n = 0;
            // Never reading the bodies: nothing is reconciled, only reserved.
            while svc.clone().oneshot(bare(max_tokens)).await.is_ok() {
                n += 1;
                assert!(n < 1000);
            }
            n
        }
    };
    // About 20 input tokens each: 4,000 of output fits twice, 200 about 45 times.
    assert_eq!(passed(4_000).await, 2);
    assert!((40..=48).contains(&passed(200).await));
}

#[tokio::test(start_paused = true)]
async fn keyed_after_a_clone_is_safe_and_shares_the_store() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let base = RateLimitLayer::new(Limits::default().requests_per_minute(1).mode(Mode::Reject));
    let _clone = base.clone(); // `keyed` used to panic here
    let keyed = base.clone().keyed(KeyFn::header("x-tenant"));
    let svc = keyed.layer(http(&mock));
    assert!(svc.clone().oneshot(req_for("a")).await.is_ok());
    assert!(svc.clone().oneshot(req_for("b")).await.is_ok(), "b has its own quota");
    assert!(svc.clone().oneshot(req_for("a")).await.unwrap_err().is::<RateLimited>());
    // The unkeyed layer it came from keeps one quota for all, in the same store.
    let plain = base.layer(http(&mock));
    assert!(plain.clone().oneshot(req_for("c")).await.is_ok());
    assert!(plain.oneshot(req_for("d")).await.unwrap_err().is::<RateLimited>());
    assert_eq!(base.stats().allowed, 3, "stats are shared");
}

#[tokio::test(start_paused = true)]
async fn a_key_with_limits_of_its_own_gets_them_and_its_own_stats() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let layer = RateLimitLayer::with_key_limits(
        Limits::default().requests_per_minute(2).adaptive(false),
        [("vip", Limits::default().requests_per_minute(5).max_concurrent(1).adaptive(false))],
        MemoryStore::default(),
    )
    .keyed(KeyFn::header("x-tenant"));
    let svc = layer.layer(http(&mock));
    for (tenant, allowed) in [("acme", 2), ("vip", 5), ("globex", 2)] {
        for _ in 0..allowed {
            let res = svc.clone().oneshot(req_for(tenant)).await.unwrap();
            let limit = if tenant == "vip" { "5" } else { "2" };
            assert_eq!(res.headers()["x-ratelimit-limit-requests"], limit, "{tenant}");
            res.into_body().collect().await.unwrap();
        }
        let err = svc.clone().oneshot(req_for(tenant)).await.unwrap_err();
        assert!(err.downcast_ref::<RateLimited>().is_some(), "{tenant}: {err}");
    }
    let own = layer.stats_for("vip").unwrap();
    assert_eq!((own.allowed, own.rejected), (5, 1));
    assert_eq!(own.keys.len(), 1);
    assert_eq!(own.keys[0].requests.unwrap().limit, 5, "the key's quota is reported with its own rates");
    let rest = layer.stats();
    assert_eq!((rest.allowed, rest.rejected), (4, 2));
    let keys: Vec<&str> = rest.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["acme", "globex"], "a key with its own limits is counted under them only");
    assert_eq!(rest.keys[0].requests.unwrap().limit, 2);
    assert!(layer.stats_for("acme").is_none());
    assert_eq!(mock.stats().llm_requests, 9);
}

#[tokio::test(start_paused = true)]
async fn keys_under_no_limit_pass_without_touching_the_store() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let layer = RateLimitLayer::with_key_limits(
        Limits::default().adaptive(false),
        [("vip", Limits::default().requests_per_minute(1).adaptive(false))],
        MemoryStore::default(),
    )
    .keyed(KeyFn::header("x-tenant"));
    let svc = layer.layer(http(&mock));
    for i in 0..50 {
        let res = svc.clone().oneshot(req_for(&format!("t{i}"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit-requests").is_none());
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(layer.store().len(), 0, "no state kept for keys nothing limits");
    svc.clone().oneshot(req_for("vip")).await.unwrap().into_body().collect().await.unwrap();
    assert!(svc.clone().oneshot(req_for("vip")).await.is_err(), "the named key is still limited");
    assert_eq!(layer.store().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn stacked_limiters_answer_with_the_outer_quota_and_the_inner_quotas_it_lacks() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // A tenant's limiter (requests only) above a provider's (requests and tokens).
    let inner = RateLimitLayer::new(Limits::default().requests_per_minute(3).tokens_per_minute(100_000));
    let outer = RateLimitLayer::new(Limits::default().requests_per_minute(50));
    let svc = outer.layer(inner.layer(http(&mock)));
    for i in 0..3u64 {
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        // The requests quota is the outer one's, the tokens quota the inner one's.
        assert_eq!(h["x-ratelimit-limit-requests"], "50");
        assert_eq!(h["x-ratelimit-remaining-requests"], (49 - i).to_string().as_str());
        assert_eq!(h["x-ratelimit-limit-tokens"], "100000");
        let left: u64 = h["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap();
        assert!(left < 100_000, "the inner limiter's reservation shows: {left}");
        assert_eq!(h.get_all("x-ratelimit-limit-requests").iter().count(), 1, "written once");
        res.into_body().collect().await.unwrap();
    }
    // The inner limit still holds although its requests headers were left to the outer.
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert_eq!(err.downcast_ref::<RateLimited>().unwrap().limit, "requests_per_minute");
    assert_eq!(mock.stats().llm_requests, 3);
    // The inner limiter alone still writes its own.
    let alone = inner.layer(http(&mock));
    tokio::time::advance(secs(60)).await;
    let res = alone.oneshot(req()).await.unwrap();
    assert_eq!(res.headers()["x-ratelimit-limit-requests"], "3");
}
