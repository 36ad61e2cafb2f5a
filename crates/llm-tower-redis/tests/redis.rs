//! The Redis stores against a real `redis-server` this harness starts on a
//! loopback port (skipped, saying so, where the binary is not installed).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use llm_tower_core::Key;
use llm_tower_ratelimit::{Decision, Demand, Limits, RateLimitStore};
use llm_tower_redis::{Clock, OnRedisError, Redis, RedisConfig, RedisServer};

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

#[tokio::test(start_paused = true)]
async fn the_redis_store_keeps_the_rate_limit_store_contract() {
    let Some(server) = RedisServer::start_or_skip() else { return };
    let redis = connect(&server, "contract:", Clock::Tokio).await;
    let n = AtomicUsize::new(0);
    // The same suite the in-memory store passes, each store in a fresh namespace.
    llm_tower_ratelimit::contract::rate_limit_store(|| {
        redis.limits(&format!("s{}", n.fetch_add(1, Ordering::Relaxed)))
    })
    .await;
}

#[tokio::test]
async fn the_redis_key_store_keeps_the_key_store_contract() {
    let Some(server) = RedisServer::start_or_skip() else { return };
    let redis = connect(&server, "keys:", Clock::Redis).await;
    llm_tower_auth::contract::key_store(&redis.keys()).await;
    // Another deployment's prefix sees none of it.
    let other = connect(&server, "other:", Clock::Redis).await;
    use llm_tower_auth::KeyStore;
    assert!(other.keys().load().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_redis_share_one_limit_exactly() {
    let Some(server) = RedisServer::start_or_skip() else { return };
    // A long timeout: on a loaded machine a 50 ms one falls back to local
    // limits (its own test covers that), and this one is about exactness.
    let cfg = || RedisConfig {
        prefix: "shared:".into(),
        command_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let a = Redis::connect(&server.url(), cfg()).await.unwrap().limits("openai");
    let b = Redis::connect(&server.url(), cfg()).await.unwrap().limits("openai");
    let rates = Limits::default().requests_per_minute(100).rates();
    let demand = Demand { requests: 1, tokens: 0, rates, max_wait: None, max_queue: 0 };
    let granted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..300 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let granted = granted.clone();
        tasks.push(tokio::spawn(async move {
            match store.reserve(&Key::from_static("acct"), &demand).await.expect("redis answers") {
                Decision::Granted(_) => {
                    granted.fetch_add(1, Ordering::Relaxed);
                }
                Decision::Denied { retry_after, .. } => assert!(retry_after.is_some()),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(granted.load(Ordering::Relaxed), 100, "300 racing requests, 100 RPM between two gateways");
}

#[tokio::test]
async fn a_dead_redis_falls_back_or_refuses_and_a_restarted_one_is_used_again() {
    let Some(mut server) = RedisServer::start_or_skip() else { return };
    let redis = connect(&server, "fault:", Clock::Redis).await;
    let local = redis.limits("local");
    let closed = redis.limits("closed").on_error(OnRedisError::Closed);
    let rates = Limits::default().requests_per_minute(1).rates();
    let demand = Demand { requests: 1, tokens: 0, rates, max_wait: None, max_queue: 0 };
    let key = Key::from_static("k");
    let granted = |d: Decision| matches!(d, Decision::Granted(_));
    for store in [&local, &closed] {
        assert!(granted(store.reserve(&key, &demand).await.unwrap()));
        assert!(!granted(store.reserve(&key, &demand).await.unwrap()), "1 RPM, shared in Redis");
    }

    server.kill();
    // Neither hangs (the command timeout is 50 ms; the guard only catches a
    // call that never returns).
    let guard = Duration::from_secs(10);
    let refused = tokio::time::timeout(guard, closed.reserve(&key, &demand)).await.expect("no hang");
    let err = refused.unwrap_err();
    let info = llm_tower_core::ErrorInfo::from_error(&*err);
    assert_eq!((info.status.as_u16(), info.code), (503, Some("state_store_unavailable")));
    assert_eq!(info.retry_after, Some(Duration::from_secs(1)));
    assert!(closed.is_down());
    // Local: this process's own quota, fresh.
    let d = tokio::time::timeout(guard, local.reserve(&key, &demand)).await.expect("no hang").unwrap();
    assert!(granted(d), "decided locally while Redis is down");
    assert!(!granted(local.reserve(&key, &demand).await.unwrap()), "the local store limits too");
    assert!(redis.ping().await.is_err());

    // Back, and empty (its script cache too): limits start over, the script reloads.
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
        assert!(granted(store.reserve(&key, &demand).await.unwrap()), "a fresh quota in the new Redis");
        assert!(!store.is_down());
        assert!(!granted(store.reserve(&key, &demand).await.unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_slots_are_shared_and_given_back() {
    let Some(server) = RedisServer::start_or_skip() else { return };
    let a = connect(&server, "slots:", Clock::Redis).await.limits("p");
    let b = connect(&server, "slots:", Clock::Redis).await.limits("p");
    let key = Key::from_static("acct");
    let take =
        |s: &llm_tower_redis::RedisLimits| s.acquire_slot(&key, 3).expect("a shared store keeps slots");
    let s1 = take(&a).await.unwrap().expect("1 of 3");
    let _s2 = take(&b).await.unwrap().expect("2 of 3");
    let _s3 = take(&a).await.unwrap().expect("3 of 3");
    assert!(take(&b).await.unwrap().is_none(), "three in flight across two gateways: full");
    drop(s1);
    // The give-back is sent before any later command of A; B may ask before
    // it lands, so ask through A.
    assert!(take(&a).await.unwrap().is_some(), "a slot given back is free again");
}

#[tokio::test(start_paused = true)]
async fn a_slot_whose_holder_died_ends_with_its_lease() {
    let Some(server) = RedisServer::start_or_skip() else { return };
    let redis = connect(&server, "lease:", Clock::Tokio).await;
    let store = redis.limits("p").slot_lease(Duration::from_secs(60));
    let key = Key::from_static("acct");
    let held = store.acquire_slot(&key, 1).unwrap().await.unwrap().expect("the only slot");
    // Its holder dies: the slot is never given back.
    std::mem::forget(held);
    assert!(store.acquire_slot(&key, 1).unwrap().await.unwrap().is_none());
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(store.acquire_slot(&key, 1).unwrap().await.unwrap().is_none(), "within its lease");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(store.acquire_slot(&key, 1).unwrap().await.unwrap().is_some(), "its lease ended");
}
