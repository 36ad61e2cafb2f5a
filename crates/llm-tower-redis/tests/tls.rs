//! `rediss://` against a real TLS `redis-server` with a throwaway
//! certificate (feature `tls`; skipped, saying so, where redis-server,
//! redis-cli or openssl is missing).
#![cfg(feature = "tls")]

use llm_tower_core::Key;
use llm_tower_ratelimit::{Decision, Demand, Limits, RateLimitStore};
use llm_tower_redis::{Redis, RedisConfig, RedisServer};

#[tokio::test]
async fn a_tls_redis_is_used_with_its_ca_and_refused_without_it() {
    let Some(server) = RedisServer::start_tls_or_skip() else { return };
    let url = server.url();
    assert!(url.starts_with("rediss://127.0.0.1:"));
    let ca = server.ca_pem().unwrap().to_vec();
    let cfg = RedisConfig { tls_ca_pem: Some(ca), ..Default::default() };
    let redis = Redis::connect(&url, cfg).await.expect("connects over TLS trusting the server's CA");
    redis.ping().await.unwrap();
    let store = redis.limits("tls");
    let demand = Demand {
        requests: 1,
        tokens: 0,
        rates: Limits::default().requests_per_minute(1).rates(),
        max_wait: None,
        max_queue: 0,
    };
    let k = Key::from_static("k");
    assert!(matches!(store.reserve(&k, &demand).await.unwrap(), Decision::Granted(_)));
    assert!(
        matches!(store.reserve(&k, &demand).await.unwrap(), Decision::Denied { .. }),
        "state kept over TLS"
    );

    // Without the CA the self-signed certificate is not trusted.
    assert!(
        Redis::connect(&url, RedisConfig::default()).await.is_err(),
        "an untrusted certificate is refused"
    );
    // A plain client cannot speak to it at all.
    let plain = url.replacen("rediss://", "redis://", 1);
    assert!(Redis::connect(&plain, RedisConfig::default()).await.is_err());
}
