//! The store contract, written against `RateLimitStore` (run here on the
//! in-memory store; a shared store must pass the same suite). Paused time.

use std::time::Duration;

use llm_tower_core::Key;
use llm_tower_ratelimit::{Decision, Demand, Limits, MemoryStore, RateLimitStore, Rates};
use proptest::prelude::*;

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

#[tokio::test(start_paused = true)]
async fn memory_store_meets_the_contract() {
    llm_tower_ratelimit::contract::rate_limit_store(MemoryStore::default).await;
}

#[tokio::test(start_paused = true)]
async fn memory_store_is_bounded() {
    let s = MemoryStore::new(100, secs(60));
    let rpm = Limits::default().requests_per_minute(10).rates();
    for i in 0..1000 {
        decide(&s, &format!("k{i}"), &demand(rpm, 0)).await;
    }
    assert!(s.len() <= 101, "{}", s.len());
}

#[tokio::test(start_paused = true)]
async fn eviction_never_frees_a_key_still_limited() {
    let s = MemoryStore::new(100, secs(60));
    let slow = Limits::default().requests_per_minute(1).rates();
    assert!(granted(&decide(&s, "hot", &demand(slow, 0)).await));
    // A flood of keys that each recover within 6 s: they go first, the key
    // still limited for a minute stays, and keeps refusing.
    let fast = Limits::default().requests_per_minute(10).rates();
    for i in 0..1000 {
        decide(&s, &format!("k{i}"), &demand(fast, 0)).await;
    }
    assert!(s.len() <= 101, "{}", s.len());
    assert_eq!(retry_after(&decide(&s, "hot", &demand(slow, 0)).await), Some(secs(60)));
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_new_keys_shares_one_overflow_quota_instead_of_escaping() {
    // 100 keys, each limited to 1 request a minute. 10,000 more distinct keys
    // arrive while those are still limited: they share one overflow key (one
    // request a minute for all of them), and the held keys keep their state.
    let s = MemoryStore::new(100, Duration::ZERO);
    let one = Limits::default().requests_per_minute(1).rates();
    for i in 0..100 {
        assert!(granted(&decide(&s, &format!("held{i}"), &demand(one, 0)).await));
    }
    let mut granted_new = 0;
    for i in 0..10_000 {
        if granted(&decide(&s, &format!("new{i}"), &demand(one, 0)).await) {
            granted_new += 1;
        }
    }
    assert_eq!(granted_new, 1, "the flood shares one quota");
    assert_eq!(s.len(), 100);
    assert_eq!(s.overflow_hits(), 10_000);
    assert!(!granted(&decide(&s, "held7", &demand(one, 0)).await), "held keys are still limited");
    // A minute later the held keys have recovered: new keys get room of their own.
    tokio::time::advance(secs(61)).await;
    assert!(granted(&decide(&s, "late", &demand(one, 0)).await));
    assert_eq!(s.overflow_hits(), 10_000, "late got its own key");
}

/// An independent model: a token bucket in floating point.
struct Bucket {
    level: f64,
    capacity: f64,
    per_sec: f64,
    at: f64,
}

impl Bucket {
    fn take(&mut self, now: f64, cost: f64) -> bool {
        self.level = (self.level + (now - self.at) * self.per_sec).min(self.capacity);
        self.at = now;
        if self.level + 1e-9 >= cost {
            self.level -= cost;
            true
        } else {
            false
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random demands at random times: the store and a token bucket agree on
    /// every decision (away from exact boundaries, where rounding may differ).
    #[test]
    fn matches_a_token_bucket(steps in prop::collection::vec((0u64..3000, 1u64..400), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let s = MemoryStore::default();
            let rates = Limits::default().tokens_per_minute(1200).rates();
            let mut model = Bucket { level: 1200.0, capacity: 1200.0, per_sec: 20.0, at: 0.0 };
            let mut t_ms = 0u64;
            for (gap, cost) in steps {
                t_ms += gap;
                tokio::time::advance(Duration::from_millis(gap)).await;
                let now = t_ms as f64 / 1000.0;
                // Skip decisions within a hair of the boundary.
                let level = (model.level + (now - model.at) * model.per_sec).min(model.capacity);
                if (level - cost as f64).abs() < 0.01 {
                    continue;
                }
                let expect = model.take(now, cost as f64);
                let got = granted(&decide(&s, "k", &demand(rates, cost)).await);
                prop_assert_eq!(got, expect, "at {} ms, cost {}", t_ms, cost);
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The same random demands through our store and through `governor` (the
    /// ecosystem's GCRA), both on virtual clocks: every decision is the same.
    #[test]
    fn agrees_with_governor(steps in prop::collection::vec((0u64..400, 1u32..=20), 1..200)) {
        use std::num::NonZeroU32;
        use governor::clock::FakeRelativeClock;
        use governor::{Quota, RateLimiter};

        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let clock = FakeRelativeClock::default();
            let quota = Quota::per_minute(NonZeroU32::new(1200).unwrap()).allow_burst(NonZeroU32::new(100).unwrap());
            let reference = RateLimiter::direct_with_clock(quota, clock.clone());
            let s = MemoryStore::default();
            // 1200 units a minute, 100 at once: as tokens, with a burst-sized limit.
            let rates = Rates {
                tpm: Some(llm_tower_ratelimit::Rate::new(60_000_000_000, 1200, 100)),
                ..Rates::default()
            };
            for (gap, cost) in steps {
                clock.advance(Duration::from_millis(gap));
                tokio::time::advance(Duration::from_millis(gap)).await;
                let theirs = matches!(reference.check_n(NonZeroU32::new(cost).unwrap()), Ok(Ok(())));
                let ours = granted(&decide(&s, "k", &demand(rates, u64::from(cost))).await);
                prop_assert_eq!(ours, theirs, "cost {} after {} ms", cost, gap);
            }
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn peeking_tells_the_wait_and_takes_nothing() {
    let s = MemoryStore::default();
    let rpm = Limits::default().requests_per_minute(2).rates();
    let d = demand(rpm, 0);
    let k = Key::from("k");
    assert_eq!(s.peek(&Key::from("never-used"), &d), Some(Duration::ZERO), "an unknown key has room");
    assert_eq!(s.len(), 0, "peeking inserts nothing");
    assert_eq!(s.peek(&k, &d), Some(Duration::ZERO));
    assert!(granted(&decide(&s, "k", &d).await));
    assert_eq!(s.peek(&k, &d), Some(Duration::ZERO));
    assert_eq!(s.peek(&k, &d), Some(Duration::ZERO), "peeking twice took nothing");
    assert!(granted(&decide(&s, "k", &d).await));
    assert_eq!(s.peek(&k, &d), Some(secs(30)), "full: the next slot frees in 30 s");
    let too_big = demand(Limits::default().tokens_per_minute(10).rates(), 11);
    assert_eq!(s.peek(&k, &too_big), Some(Duration::MAX), "never fits");
}
