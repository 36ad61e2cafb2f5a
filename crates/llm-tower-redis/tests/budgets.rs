//! The Redis budget store against a real `redis-server` this harness starts
//! on a loopback port (skipped, saying so, where the binary is missing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use llm_tower_core::{ErrorInfo, Key};
use llm_tower_redis::{Clock, OnRedisError, Redis, RedisConfig, RedisServer};
use llm_tower_tokens::{Budget, BudgetStore, Period};

async fn connect(server: &RedisServer, prefix: &str, clock: Clock) -> Redis {
    // 1 s, not the default 50 ms: a loaded test machine must not look like
    // an outage (the outage tests kill the server: refused at once).
    let cfg = RedisConfig {
        prefix: prefix.into(),
        clock,
        command_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    Redis::connect(&server.url(), cfg).await.expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_racing_a_thousand_reservations_hold_one_budget() {
    let Some(server) = RedisServer::start_or_skip() else { return };
    // Two gateways: two connections, two stores, one account. A thousand
    // calls queued at one instant on a debug build take longer than the
    // default 50 ms: this test is about atomicity, not the timeout.
    let cfg = || RedisConfig {
        prefix: "race:".into(),
        command_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let a = Redis::connect(&server.url(), cfg()).await.unwrap().budgets("tenants");
    let b = Redis::connect(&server.url(), cfg()).await.unwrap().budgets("tenants");
    let budget = Budget { limit_micros: 100_000, period: Period::Day };
    let key = Key::from_static("acme");
    let spent = Arc::new(AtomicU64::new(0));
    let (mut tasks, mut max_estimate) = (Vec::new(), 0);
    for i in 0u64..1_000 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        // 500..1,499 micro-dollars, a fixed spread.
        let estimate = 500 + (i * 7919) % 1_000;
        max_estimate = max_estimate.max(estimate);
        let (spent, key) = (spent.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            match store.reserve(&key, &budget, estimate).await {
                Ok(r) => {
                    assert_eq!(r.estimate(), estimate);
                    assert!(r.id().is_some(), "held in Redis, not locally");
                    store.settle(&key, &budget, r, estimate);
                    spent.fetch_add(estimate, Ordering::Relaxed);
                }
                Err(e) => {
                    let info = ErrorInfo::from_error(&*e);
                    assert_eq!((info.status.as_u16(), info.code), (429, Some("insufficient_quota")), "{e}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let spent = spent.load(Ordering::Relaxed);
    assert!(spent <= budget.limit_micros, "never more than the budget: {spent}");
    // Each refusal saw spend plus reservations over the limit, and every
    // reservation settled at its estimate: the budget was filled to within
    // one estimate.
    assert!(spent > budget.limit_micros - max_estimate, "filled up: {spent}");
    // Settlements are sent in order before later commands: a read sees them all.
    let (redis_spent, reserved) = a.fetch_balance(&key, &budget).await.unwrap();
    assert_eq!((redis_spent, reserved), (spent, 0), "Redis holds what the callers were granted");
    assert_eq!(b.fetch_balance(&key, &budget).await.unwrap(), (spent, 0), "the other gateway sees it too");
}

#[tokio::test(start_paused = true)]
async fn a_reservation_never_settled_comes_back_when_its_lease_ends() {
    let Some(server) = RedisServer::start_or_skip() else { return };
    let redis = connect(&server, "lease:", Clock::Tokio).await;
    let store = redis.budgets("tenants").lease(Duration::from_secs(30));
    let budget = Budget { limit_micros: 1_000, period: Period::Total };
    let key = Key::from_static("t");
    // A gateway reserves, then dies: nothing settles it.
    let lost = store.reserve(&key, &budget, 800).await.unwrap();
    assert!(store.reserve(&key, &budget, 800).await.is_err(), "800 held");
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(store.reserve(&key, &budget, 800).await.is_err(), "still held within its lease");
    tokio::time::advance(Duration::from_secs(1)).await;
    let r = store.reserve(&key, &budget, 800).await.expect("the lease ended: its amount is back");
    assert_eq!(store.fetch_balance(&key, &budget).await.unwrap(), (0, 800));
    // The late settlement of the lost one counts its cost, but gives back
    // nothing twice.
    store.settle(&key, &budget, lost, 100);
    store.settle(&key, &budget, r, 700);
    assert_eq!(store.fetch_balance(&key, &budget).await.unwrap(), (800, 0));
    assert_eq!(store.balance(&key), Some((800, 0)), "as last seen here");
}

#[tokio::test(start_paused = true)]
async fn periods_roll_on_the_stores_clock_and_total_budgets_never_roll() {
    let Some(server) = RedisServer::start_or_skip() else { return };
    let redis = connect(&server, "roll:", Clock::Tokio).await;
    let store = redis.budgets("tenants");
    let day = Budget { limit_micros: 1_000, period: Period::Day };
    let total = Budget { limit_micros: 1_000, period: Period::Total };
    let (d, t) = (Key::from_static("daily"), Key::from_static("forever"));
    for (k, b) in [(&d, &day), (&t, &total)] {
        let r = store.reserve(k, b, 1_000).await.unwrap();
        store.settle(k, b, r, 1_000);
        assert!(store.reserve(k, b, 1).await.is_err(), "spent");
    }
    tokio::time::advance(Duration::from_secs(86_399)).await;
    assert!(store.reserve(&d, &day, 1).await.is_err(), "the day is not over");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(store.reserve(&d, &day, 1_000).await.is_ok(), "a new day, a new budget");
    assert!(store.reserve(&t, &total, 1).await.is_err(), "a total budget stays spent");
}

#[tokio::test]
async fn a_dead_redis_reserves_locally_or_refuses_and_a_restarted_one_is_used_again() {
    let Some(mut server) = RedisServer::start_or_skip() else { return };
    let redis = connect(&server, "fault:", Clock::Redis).await;
    let local = redis.budgets("local");
    let closed = redis.budgets("closed").on_error(OnRedisError::Closed);
    let budget = Budget { limit_micros: 1_000, period: Period::Day };
    let key = Key::from_static("k");
    for store in [&local, &closed] {
        let r = store.reserve(&key, &budget, 1_000).await.unwrap();
        store.settle(&key, &budget, r, 1_000);
        assert!(store.reserve(&key, &budget, 1).await.is_err(), "spent, in Redis");
    }

    server.kill();
    let guard = Duration::from_secs(10);
    let refused = tokio::time::timeout(guard, closed.reserve(&key, &budget, 1)).await.expect("no hang");
    let info = ErrorInfo::from_error(&*refused.unwrap_err());
    assert_eq!((info.status.as_u16(), info.code), (503, Some("state_store_unavailable")));
    assert!(closed.is_down());
    // Local: this process's own budget, from nothing.
    let r = tokio::time::timeout(guard, local.reserve(&key, &budget, 600)).await.expect("no hang").unwrap();
    assert_eq!(r.id(), None, "held locally");
    assert!(local.reserve(&key, &budget, 600).await.is_err(), "the local budget holds too");
    local.settle(&key, &budget, r, 500);

    // Back, and empty: accounts start over, the script reloads.
    server.restart().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if redis.ping().await.is_ok() {
            up = true;
            break;
        }
    }
    assert!(up, "the connection manager reconnects without a restart of ours");
    for store in [&local, &closed] {
        let r = store.reserve(&key, &budget, 1_000).await.expect("a fresh account in the new Redis");
        assert!(r.id().is_some(), "shared again");
        assert!(!store.is_down());
    }
}
