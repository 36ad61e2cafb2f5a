//! Tail latency under partial failure, on paused time: a route over a
//! misbehaving provider `a` (5 ms when it answers) and a healthy `b` (20 ms),
//! the default stack, in three variants:
//!
//! - `a` fails 30 % (20 % 500s, 10 % 429 with `retry-after: 1`): a request
//!   that fails on `a` goes to `b` at once (`RetryElsewhere`), no backoff and
//!   no one-second hint waited out on `a`; `a` stands out and gets less traffic.
//! - `a` resets 20 % of connections: the same, for transport failures.
//! - `a` hangs 10 % of requests: the default hedge (after the route's p95, at
//!   least 100 ms) sends them to `b`; `a`'s cancelled calls make it stand out.

use std::time::Duration;

use http_body_util::BodyExt;
use llm_tower::mock::{Fault, FaultPlan, Latency, MockConfig, MockServer};
use llm_tower::{LlmBody, LlmStack, Provider, ProviderSpec};
use tokio::time::Instant;
use tower::ServiceExt;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"tail"}]}"#;
const TOTAL: usize = 2_000;
const CLIENTS: usize = 16;

fn latency(ms: u64) -> Latency {
    Latency { headers: Duration::from_millis(ms), per_token: Duration::ZERO }
}

fn spec(name: &str, m: &MockServer) -> ProviderSpec {
    ProviderSpec::new(Provider::openai_compatible(name, &format!("{}/v1", m.url())).unwrap())
        .models(["gpt-4o-mini"])
}

/// Sends TOTAL requests, CLIENTS at a time; returns the successes and each
/// request's (virtual) latency, sorted.
async fn drive(llm: &llm_tower::Llm) -> (usize, Vec<Duration>) {
    let svc = llm.service();
    let (mut ok, mut lat) = (0, Vec::with_capacity(TOTAL));
    for _ in 0..TOTAL / CLIENTS {
        let calls: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let req = http::Request::post("/v1/chat/completions").body(LlmBody::from(CHAT)).unwrap();
                    let ok = match svc.oneshot(req).await {
                        Ok(res) => res.status().is_success() && res.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    (ok, t0.elapsed())
                })
            })
            .collect();
        for c in calls {
            let (o, d) =
                tokio::time::timeout(Duration::from_secs(600), c).await.expect("a request hung").unwrap();
            ok += usize::from(o);
            lat.push(d);
        }
        // Spread the run over a minute of virtual time (paused: this returns
        // at once), so `a` comes back from each open period and keeps
        // getting traffic, as it does in a real run.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    lat.sort();
    (ok, lat)
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// What one run of the route came to, next to the healthy provider alone.
struct Run {
    ok: usize,
    per_request: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    healthy_p99: Duration,
    report: String,
}

/// Drives `b` alone (the reference), then the route over `a` (with `faults`)
/// and `b`.
async fn run(faults: FaultPlan, seed: u64) -> (Run, llm_tower::Llm, MockServer) {
    let a = MockServer::start(MockConfig { faults, latency: latency(5), seed, ..Default::default() })
        .await
        .unwrap();
    let b = MockServer::start(MockConfig { latency: latency(20), ..Default::default() }).await.unwrap();

    // The healthy provider alone: the reference tail.
    let alone = LlmStack::new().provider(spec("b", &b)).build().unwrap();
    let (alone_ok, alone_lat) = drive(&alone).await;
    assert_eq!(alone_ok, TOTAL);
    let healthy_p99 = pct(&alone_lat, 0.99);
    let b_alone = b.stats().llm_requests;

    let llm = LlmStack::new().provider(spec("a", &a)).provider(spec("b", &b)).build().unwrap();
    let (ok, lat) = drive(&llm).await;
    let upstream = a.stats().llm_requests + b.stats().llm_requests - b_alone;
    let per_request = upstream as f64 / TOTAL as f64;
    let (p50, p99, p999) = (pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 0.999));
    let elsewhere: u64 = llm.providers().iter().map(|p| p.retry.stats().elsewhere_refusals).sum();
    let f = llm.failover().stats();
    let report = format!(
        "ok {ok}/{TOTAL}, upstream calls {upstream} ({per_request:.3} per request), p50 {p50:?}, p99 {p99:?}, \
         p99.9 {p999:?}; healthy alone p99 {healthy_p99:?}; failures moved elsewhere without a retry {elsewhere}; \
         hedges {} (cancelled on a {}), a answered {} of its {} calls",
        f[1].hedges + f[0].hedges,
        f[0].hedges_cancelled,
        f[0].successes,
        f[0].requests,
    );
    println!("{report}");
    (Run { ok, per_request, p50, p99, p999, healthy_p99, report }, llm, a)
}

/// The issue's targets, shared by every variant: at least 99.9 % succeed, at
/// most 1.4 upstream calls per request.
fn common(r: &Run) {
    assert!(r.ok * 1_000 >= TOTAL * 999, "at least 99.9 % succeed: {}", r.report);
    assert!(r.per_request <= 1.4, "at most 1.4 upstream calls per request: {}", r.report);
    assert!(r.p50 <= r.healthy_p99, "{}", r.report);
}

#[tokio::test(start_paused = true)]
async fn a_failure_moves_to_the_healthy_provider_at_once() {
    let faults = FaultPlan::Random {
        faults: vec![Fault::status(500), Fault::status_retry_after(429, 1)],
        weights: vec![0.20, 0.10],
    };
    let (r, llm, a) = run(faults, 11).await;
    common(&r);
    assert!(r.p99 <= r.healthy_p99 * 2, "p99 within 2x the healthy provider's: {}", r.report);
    // On paused time a failed attempt costs only `a`'s 5 ms: no request waits
    // out backoff or the 429's one second on `a`.
    assert!(r.p999 <= r.healthy_p99 * 2, "p99.9 within 2x the healthy p99: {}", r.report);
    // The failures on `a` did happen, and moved on instead of being retried there.
    let elsewhere: u64 = llm.providers().iter().map(|p| p.retry.stats().elsewhere_refusals).sum();
    assert!(a.stats().llm_requests > 0 && elsewhere > 0, "{}", r.report);
    assert_eq!(llm.providers()[0].retry.stats().retries, 0, "{}", r.report);
}

#[tokio::test(start_paused = true)]
async fn reset_connections_move_to_the_healthy_provider_at_once() {
    let faults = FaultPlan::Random { faults: vec![Fault::Reset], weights: vec![0.20] };
    let (r, llm, a) = run(faults, 12).await;
    common(&r);
    assert!(r.p99 <= r.healthy_p99 * 2, "p99 within 2x the healthy provider's: {}", r.report);
    assert!(r.p999 <= r.healthy_p99 * 2, "p99.9 within 2x the healthy p99: {}", r.report);
    let f = llm.failover().stats();
    assert!(f[0].failures > 0 && a.stats().llm_requests > 0, "a's resets happened: {}", r.report);
}

#[tokio::test(start_paused = true)]
async fn hung_requests_are_hedged_to_the_healthy_provider() {
    let faults = FaultPlan::Random { faults: vec![Fault::Hang], weights: vec![0.10] };
    let (r, llm, _a) = run(faults, 13).await;
    common(&r);
    // The default hedge delay: the route's p95 time to head (a's 5 ms and
    // b's 20 ms) is under the 100 ms floor.
    let hedge_delay = Duration::from_millis(100);
    let bound = hedge_delay + r.healthy_p99 + r.healthy_p99 / 5;
    assert!(r.p99 <= bound, "p99 within the hedge delay + the healthy p99 + 20 % ({bound:?}): {}", r.report);
    let f = llm.failover().stats();
    assert!(f[0].hedges_cancelled > 0, "hung calls on a were hedged and cancelled: {}", r.report);
    assert_eq!(f.iter().map(|s| s.in_flight).sum::<u64>(), 0, "no call left in flight: {}", r.report);
}
