//! The behaviour every [`RateLimitStore`] keeps (the `contract` feature):
//! run [`rate_limit_store`] on a paused tokio runtime against a factory of
//! new, empty stores. The in-memory store passes it in this crate's tests;
//! a shared store (Redis) runs the same code.

use std::time::Duration;

use llm_tower_core::Key;

use crate::{Adjustment, Decision, Demand, Limits, RateLimitStore, Rates};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn demand(rates: Rates, tokens: u64) -> Demand {
    Demand { requests: 1, tokens, rates, max_wait: None, max_queue: 0 }
}

async fn decide<St: RateLimitStore>(store: &St, key: &str, d: &Demand) -> Decision {
    store.reserve(&Key::from(key), d).await.unwrap()
}

fn granted(d: &Decision) -> bool {
    matches!(d, Decision::Granted(_))
}

fn retry_after(d: &Decision) -> Option<Duration> {
    match d {
        Decision::Denied { retry_after, .. } => *retry_after,
        Decision::Granted(_) => panic!("expected a refusal"),
    }
}

/// Checks the stores `make` returns (each new and empty) keep the
/// [`RateLimitStore`] contract; panics naming the broken rule. Needs paused
/// tokio time (`#[tokio::test(start_paused = true)]`): it advances the clock.
/// Adjustments must apply in order with the same process's later decisions.
pub async fn rate_limit_store<St: RateLimitStore>(make: impl Fn() -> St) {
    // 60 RPM: 60 pass, the 61st is refused with retry-after 1 s.
    let s = make();
    let rpm = Limits::default().requests_per_minute(60).rates();
    for i in 0..60 {
        assert!(granted(&decide(&s, "k", &demand(rpm, 0)).await), "request {i}");
    }
    let d = decide(&s, "k", &demand(rpm, 0)).await;
    assert_eq!(retry_after(&d), Some(secs(1)));
    tokio::time::advance(secs(1)).await;
    assert!(granted(&decide(&s, "k", &demand(rpm, 0)).await), "one more after a second");

    // TPM with reservation and refund.
    let s = make();
    let tpm = Limits::default().tokens_per_minute(1000).rates();
    assert!(granted(&decide(&s, "k", &demand(tpm, 600)).await));
    let d = decide(&s, "k", &demand(tpm, 600)).await;
    assert_eq!(retry_after(&d), Some(secs(12)), "200 tokens short at 1000/min");
    s.adjust(&Key::from("k"), Adjustment::Tokens { delta: -300, rates: tpm });
    assert!(granted(&decide(&s, "k", &demand(tpm, 600)).await), "the refund made room");
    s.adjust(&Key::from("k"), Adjustment::Tokens { delta: 400, rates: tpm });
    assert!(!granted(&decide(&s, "k", &demand(tpm, 1)).await), "a charge over the estimate is debt");

    // All or nothing: TPM refuses, so no RPM quota is spent.
    let s = make();
    let both = Limits::default().requests_per_minute(2).tokens_per_minute(100).rates();
    assert!(granted(&decide(&s, "k", &demand(both, 60)).await));
    assert!(!granted(&decide(&s, "k", &demand(both, 60)).await), "tpm refuses");
    assert!(!granted(&decide(&s, "k", &demand(both, 60)).await), "tpm refuses again");
    tokio::time::advance(secs(60)).await;
    assert!(granted(&decide(&s, "k", &demand(both, 60)).await));
    assert!(granted(&decide(&s, "k", &demand(both, 10)).await), "rpm still had its second request");

    // A demand larger than the burst never fits.
    let s = make();
    let d = decide(&s, "k", &demand(tpm, 5000)).await;
    assert_eq!(retry_after(&d), None);

    // Wait mode: reservations of future capacity in FIFO order, bounded queue.
    let s = make();
    let paced = Limits::default().requests_per_minute(60).burst(1).rates();
    let wait = Demand { requests: 1, tokens: 0, rates: paced, max_wait: Some(secs(10)), max_queue: 2 };
    let mut waits = Vec::new();
    for _ in 0..3 {
        match decide(&s, "k", &wait).await {
            Decision::Granted(g) => waits.push(g.wait),
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(waits, vec![Duration::ZERO, secs(1), secs(2)]);
    assert!(!granted(&decide(&s, "k", &wait).await), "two already waiting: queue full");
    // A waiter gives up: its place is free again.
    s.adjust(&Key::from("k"), Adjustment::Cancel { demand: wait, queued: true });
    match decide(&s, "k", &wait).await {
        Decision::Granted(g) => assert_eq!(g.wait, secs(2)),
        d => panic!("{d:?}"),
    }
    let too_long = Demand { max_wait: Some(Duration::from_millis(500)), ..wait };
    assert!(granted(&decide(&s, "other", &too_long).await), "no wait needed");
    let d = decide(&s, "other", &too_long).await;
    assert_eq!(retry_after(&d), Some(secs(1)), "a 1 s wait is over max_wait: refused");

    // Provider holds and paces.
    let s = make();
    let none = Limits::default().rates();
    s.adjust(&Key::from("k"), Adjustment::Hold(secs(5)));
    assert_eq!(retry_after(&decide(&s, "k", &demand(none, 0)).await), Some(secs(5)));
    assert!(granted(&decide(&s, "other", &demand(none, 0)).await), "keys are isolated");
    tokio::time::advance(secs(5)).await;
    assert!(granted(&decide(&s, "k", &demand(none, 0)).await));
    s.adjust(&Key::from("k"), Adjustment::Pace { interval: secs(2), period: secs(10) });
    assert!(granted(&decide(&s, "k", &demand(none, 0)).await));
    assert_eq!(retry_after(&decide(&s, "k", &demand(none, 0)).await), Some(secs(2)));

    // Per day and minimum interval.
    let s = make();
    let day = Limits::default().requests_per_day(2).rates();
    assert!(granted(&decide(&s, "k", &demand(day, 0)).await));
    assert!(granted(&decide(&s, "k", &demand(day, 0)).await));
    assert_eq!(retry_after(&decide(&s, "k", &demand(day, 0)).await), Some(secs(43_200)));
    let gap = Limits::default().min_interval(Duration::from_millis(250)).rates();
    assert!(granted(&decide(&s, "g", &demand(gap, 0)).await));
    assert_eq!(retry_after(&decide(&s, "g", &demand(gap, 0)).await), Some(Duration::from_millis(250)));
}
