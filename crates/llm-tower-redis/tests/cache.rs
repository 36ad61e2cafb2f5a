//! The cache's Redis tier against a real `redis-server` this harness starts
//! on a loopback port (skipped, saying so, where the binary is missing).

use std::time::Duration;

use bytes::Bytes;
use llm_tower_cache::{CacheKey, L2};
use llm_tower_redis::{Redis, RedisConfig, RedisServer};

async fn connect(server: &RedisServer, prefix: &str) -> Redis {
    // 1 s, not the default 50 ms: a loaded test machine must not look like an outage.
    let cfg =
        RedisConfig { prefix: prefix.into(), command_timeout: Duration::from_secs(1), ..Default::default() };
    Redis::connect(&server.url(), cfg).await.expect("connects")
}

async fn pttl(server: &RedisServer, key: &str) -> i64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL").arg(key).query_async(&mut c).await.unwrap()
}

#[tokio::test]
async fn entries_are_shared_expire_and_are_invalidated_by_key_scope_and_all() {
    let Some(server) = RedisServer::start_or_skip() else { return };
    // Two gateways' tiers on one Redis and prefix; a third deployment apart.
    let (a, b) = (connect(&server, "c:").await.cache(), connect(&server, "c:").await.cache());
    let other = connect(&server, "elsewhere:").await.cache();
    let (k1, k2, k3) = (CacheKey(1), CacheKey(2), CacheKey(3));
    let hour = Duration::from_secs(3600);
    a.put(k1, "acme", Bytes::from_static(b"one"), hour).await.unwrap();
    a.put(k2, "acme", Bytes::from_static(b"two"), Duration::from_secs(60)).await.unwrap();
    a.put(k3, "globex", Bytes::from_static(b"three"), hour).await.unwrap();
    assert_eq!(b.get(k1).await.unwrap().as_deref(), Some(&b"one"[..]), "stored by A, read by B");
    assert_eq!(other.get(k1).await.unwrap(), None, "another prefix sees nothing");

    // Each entry lives for its TTL; the scope's set as long as its longest.
    let ttl = pttl(&server, &format!("c:cache:e:{k2}")).await;
    assert!((59_000..=60_000).contains(&ttl), "{ttl}");
    let ttl = pttl(&server, "c:cache:s:acme").await;
    assert!((3_599_000..=3_600_000).contains(&ttl), "{ttl}");

    b.invalidate(k1).await.unwrap();
    assert_eq!(a.get(k1).await.unwrap(), None, "invalidated on B, gone for A");
    a.put(k1, "acme", Bytes::from_static(b"one"), hour).await.unwrap();
    b.invalidate_scope("acme").await.unwrap();
    assert_eq!((a.get(k1).await.unwrap(), a.get(k2).await.unwrap()), (None, None), "acme's entries");
    assert!(a.get(k3).await.unwrap().is_some(), "another scope stays");
    b.clear().await.unwrap();
    assert_eq!(a.get(k3).await.unwrap(), None);
}

#[tokio::test]
async fn a_value_over_the_cap_stays_out_and_a_dead_redis_is_an_error_not_a_hang() {
    let Some(mut server) = RedisServer::start_or_skip() else { return };
    let redis = connect(&server, "cap:").await;
    let cache = redis.cache().max_value_bytes(1024);
    cache.put(CacheKey(7), "s", Bytes::from(vec![b'x'; 1025]), Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get(CacheKey(7)).await.unwrap(), None, "too large for the shared tier");
    cache.put(CacheKey(8), "s", Bytes::from(vec![b'x'; 1024]), Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get(CacheKey(8)).await.unwrap().map(|b| b.len()), Some(1024));

    server.kill();
    // The cache layer counts an error as a miss; here: it comes back within
    // the command timeout (the guard only catches a call that never returns).
    let got = tokio::time::timeout(Duration::from_secs(10), cache.get(CacheKey(8))).await.expect("no hang");
    assert!(got.is_err());
}
