//! The route's retry budget and outlier handling, over real mock providers
//! on loopback, on paused time.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use llm_tower_core::LlmBody;
use llm_tower_failover::{Backend, BudgetConfig, Failover, HealthConfig, Route, Target};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower_retry::{RetryLayer, RetryPolicy};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

type Svc =
    BoxCloneSyncService<Request<LlmBody>, http::Response<llm_tower_core::LlmResponseBody>, tower::BoxError>;

async fn mock(faults: FaultPlan) -> MockServer {
    MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap()
}

fn http(name: &str, m: &MockServer) -> LlmHttpService {
    LlmHttpService::new(Provider::openai_compatible(name, &format!("{}/v1", m.url())).unwrap())
}

/// A provider's stack as the gateway builds it: its own retry layer (3
/// attempts, its own 20 % budget) over its HTTP service.
fn retried(name: &str, m: &MockServer) -> Svc {
    BoxCloneSyncService::new(RetryLayer::new(RetryPolicy::default()).layer(http(name, m)))
}

fn failover(a: Svc, b: Svc, route: Route, health: HealthConfig) -> Failover<Svc> {
    Failover::builder()
        .backend(Backend::new("a", a))
        .backend(Backend::new("b", b))
        .route("gpt-4o-mini", route)
        .health(health)
        .build()
        .unwrap()
}

/// Sends `n` requests one after another; returns how many succeeded.
async fn drive(f: &Failover<Svc>, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let req = Request::post("/v1/chat/completions").body(LlmBody::from(CHAT)).unwrap();
        if let Ok(res) = f.clone().oneshot(req).await {
            ok += usize::from(res.status().is_success() && res.into_body().collect().await.is_ok());
        }
        // Spread over virtual time, as real traffic is (paused: returns at once).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ok
}

fn calls(ms: &[&MockServer]) -> u64 {
    ms.iter().map(|m| m.stats().llm_requests).sum()
}

#[tokio::test(start_paused = true)]
async fn a_route_wide_outage_adds_at_most_the_route_budget() {
    const N: u64 = 200;
    let never_down = HealthConfig::default().failures_to_down(0);
    let route = || Route::new([Target::new("a"), Target::new("b")]).without_hedge();

    // Without a route budget: each request calls a once (it moves on at
    // once) and b up to three times (b's own budget lets some retries by).
    let (a, b) = (
        mock(FaultPlan::Always { fault: Fault::status(503) }).await,
        mock(FaultPlan::Always { fault: Fault::status(503) }).await,
    );
    let f = failover(retried("a", &a), retried("b", &b), route().budget(None), never_down.clone());
    assert_eq!(drive(&f, N as usize).await, 0);
    let unbounded = calls(&[&a, &b]);
    assert!(unbounded >= 2 * N + N / 5, "{unbounded} calls for {N} requests");

    // One budget for the route (20 %, no floor): failover moves and b's
    // retries draw on it together.
    let (a, b) = (
        mock(FaultPlan::Always { fault: Fault::status(503) }).await,
        mock(FaultPlan::Always { fault: Fault::status(503) }).await,
    );
    let budget = BudgetConfig { ratio: 0.2, min_per_sec: 0, ..Default::default() };
    let f = failover(retried("a", &a), retried("b", &b), route().budget(Some(budget)), never_down);
    assert_eq!(drive(&f, N as usize).await, 0);
    let bounded = calls(&[&a, &b]);
    println!(
        "{N} requests, both providers failing: {unbounded} calls without a route budget, {bounded} with one"
    );
    assert!(bounded <= N + N / 5 + 1, "{bounded} calls for {N} requests: over the route's 20 %");
    assert!(bounded > N, "the budget still allows some extra calls: {bounded}");
}

#[tokio::test(start_paused = true)]
async fn the_budget_leaves_a_partial_failure_alone() {
    // a fails one call in five; b is healthy: every failure moves to b and
    // every request succeeds, well within the route's budget.
    let faults = FaultPlan::Random { faults: vec![Fault::status(500)], weights: vec![0.2] };
    let a = MockServer::start(MockConfig { faults, seed: 3, ..Default::default() }).await.unwrap();
    let b = mock(FaultPlan::None).await;
    let route = Route::new([Target::new("a"), Target::new("b")]).without_hedge();
    let f = failover(retried("a", &a), retried("b", &b), route, HealthConfig::default());
    assert_eq!(drive(&f, 500).await, 500);
    let per_request = calls(&[&a, &b]) as f64 / 500.0;
    assert!(per_request < 1.2, "{per_request} calls per request");
}

#[tokio::test(start_paused = true)]
async fn a_backend_failing_a_few_calls_in_a_row_gets_less_traffic_then_comes_back() {
    // a fails its first three calls, then is healthy again.
    let script = FaultPlan::Script { faults: vec![Fault::status(500); 3] };
    let (a, b) = (mock(script).await, mock(FaultPlan::None).await);
    let route = Route::new([Target::new("a"), Target::new("b")]).without_hedge();
    // Health's consecutive failures alone would not react (5 to mark it down).
    let f = failover(retried("a", &a), retried("b", &b), route, HealthConfig::default());
    assert_eq!(drive(&f, 3).await, 3);
    assert_eq!((a.stats().llm_requests, b.stats().llm_requests), (3, 3), "each failure moved to b");
    // Three failures in a row: a keeps about a quarter of its place.
    assert_eq!(drive(&f, 20).await, 20);
    let to_b = b.stats().llm_requests - 3;
    // (Without outlier handling b would take none: a answers them all.)
    assert!(to_b >= 5, "b took only {to_b} of 20 while a stood out");
    // A minute later what a did is forgotten: it is first again.
    tokio::time::advance(Duration::from_secs(60)).await;
    let before = a.stats().llm_requests;
    assert_eq!(drive(&f, 10).await, 10);
    assert_eq!(a.stats().llm_requests - before, 10, "a has its place back");
}

#[tokio::test(start_paused = true)]
async fn when_the_rest_of_the_plan_fails_the_request_goes_back_with_retries() {
    // a fails once then answers; b fails every call.
    let a = mock(FaultPlan::Script { faults: vec![Fault::status(500)] }).await;
    let b = mock(FaultPlan::Always { fault: Fault::status(503) }).await;
    let route = Route::new([Target::new("a"), Target::new("b")]).without_hedge();
    let f = failover(retried("a", &a), retried("b", &b), route, HealthConfig::default());
    let req = Request::post("/v1/chat/completions").body(LlmBody::from(CHAT)).unwrap();
    let res = f.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-llm-backend"], "a", "back to a, which answered its second call");
    // a: its first call (moved on from at once) and the go-back; b: its three attempts.
    assert_eq!((a.stats().llm_requests, b.stats().llm_requests), (2, 3));
}
