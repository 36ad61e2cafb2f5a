//! Gateways sharing one real `redis-server` (started here on a loopback
//! port; skipped, saying so, where it is not installed): one provider quota
//! across two gateways, keys created on one used on the other, and both
//! outage modes with recovery.

mod common;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use llm_tower::mock::{MockConfig, MockServer};
use llm_tower::redis::RedisServer;

use common::*;

const ADMIN: &str = "adm-redis-3";

/// A gateway whose provider allows `rpm` requests a minute, the limit kept in `redis`.
fn config(
    mock: &MockServer,
    redis: &RedisServer,
    prefix: &str,
    rpm: u32,
    on_error: &str,
    extra: &str,
) -> String {
    config_with(
        mock,
        &format!(
            "[providers.retry]\nenabled = false\n[providers.circuit_breaker]\nenabled = false\n\
             [providers.rate_limit]\nadaptive = false\nrequests_per_minute = {rpm}\n"
        ),
        &format!(
            "[state]\nredis_url = '{}'\nredis_prefix = '{prefix}'\non_redis_error = '{on_error}'\n\
             redis_timeout_ms = 1000\n{extra}",
            redis.url()
        ),
    )
    .replace("stats_public = true\n", &format!("admin_token = '{ADMIN}'\n"))
}

async fn status_of(h: &Harness, headers: &[(&str, &str)]) -> StatusCode {
    let res = h.send(Method::POST, "/v1/chat/completions", CHAT, headers).await;
    let status = res.status();
    res.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_hold_one_provider_limit() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // A slow answer must not fall back to local limits here (the machine is
    // shared with other tests): a long timeout; the outage test has a short one.
    let cfg = config(&mock, &redis, "two:", 100, "local", "")
        .replace("redis_timeout_ms = 1000", "redis_timeout_ms = 5000");
    let (a, b) = (std::sync::Arc::new(start(&cfg).await), std::sync::Arc::new(start(&cfg).await));
    let mut calls = Vec::new();
    for i in 0..300 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.push(tokio::spawn(async move { status_of(&h, &[]).await }));
    }
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    eprintln!("two gateways, one Redis: {ok} of 300 requests passed a shared 100 RPM");
    // The target is within 5 % of the shared 100; the Lua script makes it exact.
    assert!((95..=105).contains(&ok), "{ok} of 300 passed a shared 100 RPM");
    assert_eq!(
        mock.stats().llm_requests,
        ok as u64,
        "the provider saw only what the shared limit let through"
    );
    let (_, _, stats) = a.call(Method::GET, "/stats", "").await;
    assert_eq!(json(&stats)["error"]["code"], "invalid_api_key", "stats need the admin token");
    let res = a.send(Method::GET, "/stats", "", &[("authorization", &format!("Bearer {ADMIN}"))]).await;
    let stats = json(&res.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(
        (stats["redis"]["up"].as_bool(), stats["redis"]["prefix"].as_str()),
        (Some(true), Some("two:"))
    );
}

#[tokio::test]
async fn a_key_made_on_one_gateway_works_on_the_other_and_a_revoked_one_on_neither() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let hash = llm_tower::auth::KeyHash::of("llmt-cfg-key");
    let keys = format!("[auth]\nmode = 'keys'\n[[keys]]\nname = 'cfg'\nhash = '{hash}'\n");
    let cfg = config(&mock, &redis, "keys:", 1000, "local", &keys);
    let (a, b) = (start(&cfg).await, start(&cfg).await);
    let admin = format!("Bearer {ADMIN}");
    let res = a.send(Method::POST, "/admin/keys", r#"{"name":"svc"}"#, &[("authorization", &admin)]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created = json(&res.into_body().collect().await.unwrap().to_bytes());
    let bearer = format!("Bearer {}", created["key"].as_str().unwrap());
    assert_eq!(status_of(&a, &[("authorization", &bearer)]).await, StatusCode::OK);
    // B reads the shared store (it does every second; now, for the test).
    let res = b.send(Method::POST, "/admin/keys/reload", "", &[("authorization", &admin)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(status_of(&b, &[("authorization", &bearer)]).await, StatusCode::OK, "made on A, used on B");

    let res = a.send(Method::DELETE, "/admin/keys/svc", "", &[("authorization", &admin)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    b.send(Method::POST, "/admin/keys/reload", "", &[("authorization", &admin)]).await;
    assert_eq!(status_of(&a, &[("authorization", &bearer)]).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(&b, &[("authorization", &bearer)]).await, StatusCode::UNAUTHORIZED, "revoked on A");
    assert_eq!(
        status_of(&b, &[("authorization", "Bearer llmt-cfg-key")]).await,
        StatusCode::OK,
        "config keys stay"
    );
}

#[tokio::test]
async fn a_redis_outage_falls_back_or_refuses_as_configured_and_ends_without_a_restart() {
    let Some(mut redis) = RedisServer::start_or_skip() else { return };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let local = start(&config(&mock, &redis, "out-l:", 1000, "local", "")).await;
    let closed = start(&config(&mock, &redis, "out-c:", 1000, "closed", "")).await;
    for h in [&local, &closed] {
        assert_eq!(status_of(h, &[]).await, StatusCode::OK);
        assert_eq!(h.call(Method::GET, "/health/ready", "").await.0, StatusCode::OK);
    }

    redis.kill();
    assert_eq!(status_of(&local, &[]).await, StatusCode::OK, "local: each gateway limits on its own");
    let res = closed.send(Method::POST, "/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "closed: refused");
    assert_eq!(res.headers()["retry-after"], "1");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(error_of(&body).1.as_deref(), Some("state_store_unavailable"));
    let (status, _, body) = closed.call(Method::GET, "/health/ready", "").await;
    assert_eq!(
        (status, json(&body)["redis"]["up"].as_bool()),
        (StatusCode::SERVICE_UNAVAILABLE, Some(false))
    );
    let (status, _, body) = local.call(Method::GET, "/health/ready", "").await;
    assert_eq!(
        (status, json(&body)["redis"]["up"].as_bool()),
        (StatusCode::OK, Some(false)),
        "local still serves"
    );

    // Back (and empty): both use it again, no restart of theirs.
    redis.restart().unwrap();
    let mut back = false;
    for _ in 0..100 {
        if closed.call(Method::GET, "/health/ready", "").await.0 == StatusCode::OK {
            back = true;
            break;
        }
    }
    assert!(back, "readiness returns when Redis does");
    assert_eq!(status_of(&closed, &[]).await, StatusCode::OK);
    assert_eq!(status_of(&local, &[]).await, StatusCode::OK);
    local.stop().await;
    closed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_hold_one_tenant_budget() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // gpt-4o-mini at $10 / $100 per million: a call of ~11 input tokens and
    // at most 16 output tokens is estimated at ~1,710 micro-dollars and costs
    // about as much; acme may spend $0.05, ~29 calls, whichever gateway.
    let budget = "[auth]\ntrust_tenant_header = true\n[tenants.budgets.acme]\nusd = 0.05\n\
                  [prices.gpt-4o-mini]\ninput = 10.0\noutput = 100.0\n";
    let cfg = config(&mock, &redis, "spend:", 100_000, "local", budget)
        .replace("redis_timeout_ms = 1000", "redis_timeout_ms = 5000");
    let (a, b) = (std::sync::Arc::new(start(&cfg).await), std::sync::Arc::new(start(&cfg).await));
    let chat =
        r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hello gateway"}]}"#;
    let mut calls = Vec::new();
    for i in 0..120 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.push(tokio::spawn(async move {
            let res = h.send(Method::POST, "/v1/chat/completions", chat, &[("x-tenant", "acme")]).await;
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            if status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(error_of(&body).0, "insufficient_quota");
            }
            status
        }));
    }
    let mut ok = 0u64;
    for c in calls {
        match c.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    let admin = format!("Bearer {ADMIN}");
    let mut cost = 0;
    let mut served = 0;
    for h in [&a, &b] {
        let res = h.send(Method::GET, "/stats", "", &[("authorization", &admin)]).await;
        let stats = json(&res.into_body().collect().await.unwrap().to_bytes());
        assert_eq!(stats["redis"]["budgets_without_redis"], false);
        if let Some(e) = stats["usage"].as_array().unwrap().iter().find(|e| e["tenant"] == "acme") {
            cost += e["total"]["cost_micros"].as_u64().unwrap();
            served += e["total"]["requests"].as_u64().unwrap();
        }
    }
    eprintln!(
        "two gateways, one Redis budget of $0.05: {ok} of 120 calls passed, ${:.6} spent",
        cost as f64 / 1e6
    );
    assert_eq!(served, ok, "every call that passed was accounted, on the gateway that served it");
    // Each gateway alone would have let ~29 through: together they held one budget,
    // filled to within about one call's cost (~1,700).
    assert!(cost <= 50_000, "never spent past the one budget: {cost}");
    assert!(cost > 50_000 - 2 * 1_800, "the budget was used, not refused early: {cost}");
    assert_eq!(mock.stats().llm_requests, ok, "refused calls never reached the provider");
}

#[tokio::test]
async fn an_answer_one_gateway_cached_is_a_hit_on_the_other() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let cache = "[cache]\nstrategy = 'conservative'\nshared = true\n";
    let cfg = config(&mock, &redis, "cache:", 100_000, "local", cache);
    let (a, b) = (start(&cfg).await, start(&cfg).await);
    let det = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"cache me"}]}"#;
    async fn chat(h: &Harness, det: &str) -> (String, serde_json::Value) {
        let res = h.send(Method::POST, "/v1/chat/completions", det, &[]).await;
        let cache = res.headers().get("x-llm-cache").map(|v| v.to_str().unwrap().to_owned());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (cache.unwrap_or_default(), json(&body)["choices"].clone())
    }
    let (state, first) = chat(&a, det).await;
    assert_eq!(state, "MISS");
    // A writes Redis once the answer has ended, off the request path: wait
    // (without sleeping) until the entry is there.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut stored = false;
    for _ in 0..10_000 {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg("cache:cache:e:*").query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            stored = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(stored, "A stored its answer in Redis");
    let (state, second) = chat(&b, det).await;
    assert_eq!(state, "HIT", "B answers from what A stored");
    assert_eq!(first, second);
    assert_eq!(chat(&b, det).await.0, "HIT", "and keeps it in its own memory");
    assert_eq!(mock.stats().llm_requests, 1, "one upstream call for both gateways");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_hold_one_concurrency_limit() {
    let Some(redis) = RedisServer::start_or_skip() else { return };
    // Each answer takes 50 ms to its head: calls overlap.
    let latency = llm_tower::mock::Latency {
        headers: std::time::Duration::from_millis(50),
        per_token: std::time::Duration::ZERO,
    };
    let mock = MockServer::start(MockConfig { latency, ..Default::default() }).await.unwrap();
    let cfg = config(&mock, &redis, "conc:", 100_000, "local", "")
        .replace("requests_per_minute = 100000\n", "max_concurrent = 2\nmode = 'wait'\nmax_wait_ms = 20000\n")
        .replace("redis_timeout_ms = 1000", "redis_timeout_ms = 5000");
    let (a, b) = (std::sync::Arc::new(start(&cfg).await), std::sync::Arc::new(start(&cfg).await));
    let mut calls = Vec::new();
    for i in 0..12 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.push(tokio::spawn(async move { status_of(&h, &[]).await }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK, "each waited for a slot");
    }
    let stats = mock.stats();
    assert_eq!(stats.llm_requests, 12);
    // Each gateway alone would allow 2 at once: 4 in flight.
    assert_eq!(stats.max_in_flight, 2, "two gateways held one limit of 2 calls in flight");
}

#[tokio::test]
async fn a_gateway_shares_its_limits_over_tls_with_a_private_ca() {
    let Some(redis) = RedisServer::start_tls_or_skip() else { return };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("llm-tower-gw-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("redis-ca.pem");
    std::fs::write(&ca, redis.ca_pem().unwrap()).unwrap();
    let extra = format!("redis_ca_file = '{}'\n", ca.display());
    let cfg = config(&mock, &redis, "tls:", 1, "closed", &extra)
        .replace("redis_timeout_ms = 1000", "redis_timeout_ms = 5000");
    assert!(cfg.contains("rediss://127.0.0.1:"));
    let (a, b) = (start(&cfg).await, start(&cfg).await);
    assert_eq!(status_of(&a, &[]).await, StatusCode::OK);
    assert_eq!(status_of(&b, &[]).await, StatusCode::TOO_MANY_REQUESTS, "one 1 RPM quota over TLS");
    assert_eq!(b.call(Method::GET, "/health/ready", "").await.0, StatusCode::OK, "closed mode, Redis up");
    std::fs::remove_dir_all(&dir).unwrap();
}
