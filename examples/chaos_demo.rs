//! Two faulty mock providers behind one logical model; prints a live table of
//! outcomes per backend as traffic flows, through an outage of the first.
//!
//! `cargo run --example chaos_demo` (offline: in-process mocks, a few seconds).

use std::time::Duration;

use http_body_util::BodyExt;
use llm_tower::circuit::CircuitConfig;
use llm_tower::failover::HealthConfig;
use llm_tower::mock::{Fault, FaultPlan, Latency, MockConfig, MockServer};
use llm_tower::retry::{Backoff, RetryPolicy};
use llm_tower::{LlmBody, LlmStack, Provider, ProviderSpec};
use tower::ServiceExt;

/// 5xx and dropped connections (429s are a provider's limits: the limiter
/// honours their `retry-after` for the whole provider, see `tokens_per_minute`).
fn flaky(p500: f64) -> FaultPlan {
    FaultPlan::Random { faults: vec![Fault::status(500), Fault::Reset], weights: vec![p500, 0.01] }
}

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    let a = MockServer::start(MockConfig { faults: flaky(0.15), seed: 1, ..Default::default() }).await?;
    let slow = Latency { headers: Duration::from_millis(15), per_token: Duration::ZERO };
    let b =
        MockServer::start(MockConfig { faults: flaky(0.05), seed: 2, latency: slow, ..Default::default() })
            .await?;
    let spec = |name: &str, m: &MockServer| -> Result<ProviderSpec, tower::BoxError> {
        let retry = RetryPolicy::default().backoff(Backoff::Fixed(Duration::from_millis(20)));
        // A short open period that does not grow on a failed probe, so that
        // recovery shows within the demo. 20 failures in a row, not fewer: an
        // error comes back at once while an answer takes the provider's
        // latency, so in a burst of 100 concurrent requests the ~10 failures of
        // a provider failing 10 % are all recorded before its first success.
        let breaker = CircuitConfig::default()
            .consecutive_failures(Some(20))
            .open_duration(Duration::from_secs(1))
            .open_backoff(1.0);
        let p = Provider::openai_compatible(name, &format!("{}/v1", m.url()))?;
        Ok(ProviderSpec::new(p).models(["gpt-4o-mini"]).retry(retry).breaker(breaker))
    };
    let llm = LlmStack::new()
        .provider(spec("a", &a)?)
        .provider(spec("b", &b)?)
        .health(HealthConfig::default().down_for(Duration::from_secs(1)).slow_start(Duration::from_secs(1)))
        .build()?;
    let svc = llm.service();
    let (mut ok, mut failed) = (0u32, 0u32);
    println!("Each row: 100 more requests. Upstream calls, errors and states are measured, not scripted:");
    println!("calls and errors come from each mock's own counters, states from each provider's breaker.");
    println!(
        "{:>5} {:>5} {:>6} | {:>24} | {:>24}",
        "sent", "ok", "failed", "a: calls/errors breaker", "b: calls/errors breaker"
    );
    // Upstream calls and error answers per mock, per round.
    let counts = |m: &MockServer| {
        let st = m.stats();
        let errors: u64 = st.by_status.iter().filter(|(s, _)| **s >= 400).map(|(_, n)| n).sum::<u64>()
            + st.faults.get("reset").copied().unwrap_or(0);
        (st.llm_requests, errors)
    };
    let mut before = [counts(&a), counts(&b)];
    for round in 1..=8 {
        // The fault script: an outage of `a` from the third round to the fifth.
        match round {
            3 => a.set_faults(FaultPlan::Always { fault: Fault::status(503) }),
            6 => a.set_faults(flaky(0.15)),
            _ => {}
        }
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let req = http::Request::post("/v1/chat/completions")
                        .body(LlmBody::from(
                            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
                        ))
                        .unwrap();
                    match svc.oneshot(req).await {
                        Ok(res) if res.status().is_success() => res.into_body().collect().await.is_ok(),
                        _ => false,
                    }
                })
            })
            .collect();
        let (mut round_ok, mut round_failed) = (0u32, 0u32);
        for c in calls {
            if c.await? { round_ok += 1 } else { round_failed += 1 }
        }
        assert_eq!(round_ok + round_failed, 100, "every request is counted once");
        ok += round_ok;
        failed += round_failed;
        let now = [counts(&a), counts(&b)];
        let cell = |i: usize| {
            let (calls, errors) = (now[i].0 - before[i].0, now[i].1 - before[i].1);
            let state = llm.providers()[i].breaker.state("*");
            format!("{calls:>4}/{errors:<4} {state:?}")
        };
        // The note says what the counters show: a provider whose answers were
        // mostly errors this round.
        let note: String = [("a", 0), ("b", 1)]
            .iter()
            .filter(|(_, i)| {
                let (calls, errors) = (now[*i].0 - before[*i].0, now[*i].1 - before[*i].1);
                calls > 0 && errors * 2 > calls
            })
            .map(|(n, _)| format!(" <- {n}: most answers were errors"))
            .collect();
        println!("{:>5} {ok:>5} {failed:>6} | {:>24} | {:>24}{note}", round * 100, cell(0), cell(1));
        before = now;
        if round >= 5 {
            // `a` is back from round 6: give its breaker the open period to
            // let probes through again (a failed probe reopens it for 1 s).
            tokio::time::sleep(Duration::from_millis(1_100)).await;
        }
    }
    assert_eq!(ok + failed, 800);
    assert!(ok >= 790, "{ok} of 800 succeeded");
    Ok(())
}
