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

fn redis_server() -> Option<RedisServer> {
    if !RedisServer::available() {
        eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
        return None;
    }
    Some(RedisServer::start().expect("redis-server starts"))
}

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
             redis_timeout_ms = 200\n{extra}",
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
    let Some(redis) = redis_server() else { return };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let cfg = config(&mock, &redis, "two:", 100, "local", "");
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
    let Some(redis) = redis_server() else { return };
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
    let Some(mut redis) = redis_server() else { return };
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
