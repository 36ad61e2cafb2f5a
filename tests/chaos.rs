//! The full default stack under chaos: 10,000 requests through `LlmStack`
//! against two mock providers — one failing often and going fully down for a
//! while, one healthy but slower — on paused tokio time (every wait, backoff
//! and open period is virtual; the test runs in seconds).

use std::time::Duration;

use http_body_util::BodyExt;
use llm_tower::failover::{Health, HealthConfig};
use llm_tower::mock::{Fault, FaultPlan, Latency, MockConfig, MockServer};
use llm_tower::{LlmBody, LlmStack, Provider, ProviderSpec};
use tokio::time::Instant;
use tower::ServiceExt;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"chaos"}]}"#;
const TOTAL: usize = 10_000;
const BATCH: usize = 50;

/// 20 % 500s, 10 % 429 with `retry-after: 1`, 1 % connection resets.
fn flaky() -> FaultPlan {
    FaultPlan::Random {
        faults: vec![Fault::status(500), Fault::status_retry_after(429, 1), Fault::Reset],
        weights: vec![0.20, 0.10, 0.01],
    }
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    typed_errors: usize,
    by_a: usize,
    by_b: usize,
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_survive_a_flaky_provider_and_its_outage() {
    let a = MockServer::start(MockConfig { faults: flaky(), seed: 7, ..Default::default() }).await.unwrap();
    let slower = Latency { headers: Duration::from_millis(80), per_token: Duration::ZERO };
    let b = MockServer::start(MockConfig { latency: slower, ..Default::default() }).await.unwrap();
    let spec = |name: &str, m: &MockServer| {
        ProviderSpec::new(Provider::openai_compatible(name, &format!("{}/v1", m.url())).unwrap())
            .models(["gpt-4o-mini"])
    };
    // The defaults everywhere, but a shorter slow start so that recovery fits the run.
    let llm = LlmStack::new()
        .provider(spec("a", &a))
        .provider(spec("b", &b))
        .health(HealthConfig::default().slow_start(Duration::from_secs(5)))
        .build()
        .unwrap();
    let svc = llm.service();
    let started = Instant::now();

    let mut tally = Tally::default();
    let mut during_outage = (0, 0);
    let mut last_phase = (0, 0);
    let mut outage_began = None;
    let mut failed_over_after = None;
    let mut slow_start_seen = false;
    for batch in 0..TOTAL / BATCH {
        let sent = batch * BATCH;
        if sent == 3_000 {
            a.set_faults(FaultPlan::Always { fault: Fault::status(503) });
            outage_began = Some(Instant::now());
        }
        if sent == 5_000 {
            // Back, and mostly well: a provider failing 31 % of calls is an
            // outlier that the route now keeps out (each failure moves on to
            // `b` at once and counts against `a`), so recovery is shown on
            // one failing 5 %.
            a.set_faults(FaultPlan::Random { faults: vec![Fault::status(500)], weights: vec![0.05] });
            // Wait until a is usable again (its down mark run out, its
            // breaker, if it opened, no longer open), a second at a time, so
            // that the next requests meet its 5 s slow start. Time is paused
            // (`start_paused`): each virtual sleep returns at once, and unlike
            // `advance` it lets the breaker's probe task run.
            let usable = || llm.failover().readiness().iter().all(|r| r.usable.iter().any(|b| b == "a"));
            for _ in 0..300 {
                if usable() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            assert!(usable(), "a usable again within 300 s of its recovery");
        }
        let calls: Vec<_> = (0..BATCH)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let req = http::Request::post("/v1/chat/completions").body(LlmBody::from(CHAT)).unwrap();
                    match svc.oneshot(req).await {
                        Ok(res) => {
                            let ok = res.status().is_success();
                            let by =
                                res.headers().get("x-llm-backend").map(|v| v.to_str().unwrap().to_owned());
                            let body = res.into_body().collect().await;
                            (ok && body.is_ok(), by, false)
                        }
                        // Typed: a stack error maps to an OpenAI error with a status.
                        Err(e) => {
                            (false, None, llm_tower::core::error_response(&*e).status().as_u16() >= 400)
                        }
                    }
                })
            })
            .collect();
        for c in calls {
            // Never lost, never hung: every call finishes within a bounded (virtual) time.
            let (ok, by, typed) =
                tokio::time::timeout(Duration::from_secs(600), c).await.expect("a request hung").unwrap();
            tally.ok += usize::from(ok);
            tally.typed_errors += usize::from(typed);
            let to_a = by.as_deref() == Some("a");
            tally.by_a += usize::from(ok && to_a);
            tally.by_b += usize::from(ok && by.as_deref() == Some("b"));
            if (3_000..5_000).contains(&sent) {
                during_outage.0 += usize::from(to_a);
                during_outage.1 += 1;
            }
            if sent >= 5_000 {
                last_phase.0 += usize::from(to_a);
                last_phase.1 += 1;
            }
        }
        if sent >= 5_000 && llm.failover().stats()[0].state == Health::SlowStart {
            slow_start_seen = true;
        }
        // Time to fail over: from the outage's start until a is kept out (its
        // breaker open, or marked down by passive health): from then on
        // requests go straight to b, without trying a.
        if let (Some(t0), None) = (outage_began, failed_over_after) {
            let open = !llm.providers()[0].breaker.is_available("*");
            if open || llm.failover().stats()[0].state == Health::Down {
                failed_over_after = Some(Instant::now() - t0);
            }
        }
    }
    let upstream = a.stats().llm_requests + b.stats().llm_requests;
    let retries: u64 = llm.providers().iter().map(|p| p.retry.stats().retries).sum();
    let elapsed = started.elapsed();
    let transitions = llm.providers()[0].breaker.stats().transitions;
    let report = format!(
        "{tally:?}; upstream calls {upstream} ({:.3} per request), retries {retries}, \
         breaker transitions on a {transitions}, outage answered by a {}/{}, after it by a {}/{} (slow start seen: {slow_start_seen}), \
         virtual time {elapsed:?}, outage began at {:?}, a kept out {failed_over_after:?} after it",
        upstream as f64 / TOTAL as f64,
        during_outage.0,
        during_outage.1,
        last_phase.0,
        last_phase.1,
        outage_began.map(|t| t - started),
    );
    println!("{report}");
    assert!(tally.ok * 1_000 >= TOTAL * 999, "at least 99.9 % succeed: {report}");
    assert_eq!(
        tally.ok + tally.typed_errors,
        TOTAL,
        "every request got an answer or a typed error: {report}"
    );
    // Retries stay inside each provider's budget: 20 % of its requests plus
    // 10 per second of (virtual) time.
    let budget: f64 = llm
        .providers()
        .iter()
        .map(|p| 0.2 * p.retry.stats().requests as f64 + 10.0 * elapsed.as_secs_f64())
        .sum();
    assert!((retries as f64) <= budget, "retries {retries} within the budget {budget:.0}: {report}");
    assert!(during_outage.0 * 100 <= during_outage.1, "traffic moved to b during the outage: {report}");
    // a fails 5 % of calls after the outage: it comes back through slow start
    // and carries a real share again.
    assert!(slow_start_seen, "a came back through slow start: {report}");
    assert!(last_phase.0 * 10 >= last_phase.1, "a took traffic back after the outage: {report}");
    assert!(
        failed_over_after.is_some_and(|d| d <= Duration::from_secs(30)),
        "failed over within 30 s: {report}"
    );
}
