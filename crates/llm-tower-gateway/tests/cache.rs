//! The gateway's response cache, end to end against the mock.

mod common;

use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use llm_tower::mock::{MockConfig, MockServer};
use llm_tower_gateway::GatewayConfig;

const DET: &str =
    r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hello cache"}]}"#;

async fn setup(cache: &str) -> (MockServer, Harness) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let toml = config_for(&mock, cache).replace("[server]\n", "[server]\nadmin_token = \"adm-secret-1\"\n");
    (mock, start(&toml).await)
}

async fn chat(h: &Harness, body: &str, headers: &[(&str, &str)]) -> (StatusCode, String, bytes::Bytes) {
    let res = h.send(Method::POST, "/v1/chat/completions", body, headers).await;
    let status = res.status();
    let cache = res.headers().get("x-llm-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, cache, res.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn repeated_requests_are_answered_from_the_cache_at_no_cost() {
    let (mock, h) = setup("[cache]\nstrategy = \"conservative\"\n").await;
    let (status, cache, first) = chat(&h, DET, &[]).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "MISS"));
    let (status, cache, second) = chat(&h, DET, &[]).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "HIT"));
    assert_eq!(json(&first)["choices"], json(&second)["choices"]);
    // A stream of the same request is replayed from the stored JSON answer.
    let stream = DET.replacen('{', r#"{"stream":true,"#, 1);
    let (_, cache, sse) = chat(&h, &stream, &[]).await;
    assert_eq!(cache, "HIT");
    let text = String::from_utf8(sse.to_vec()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n") && !text.contains("\"usage\":{"), "{text}");
    // Temperature 1 is not cached under the conservative strategy.
    assert_eq!(chat(&h, CHAT, &[]).await.1, "BYPASS");
    assert_eq!(mock.stats().llm_requests, 2);

    let (_, _, stats) = h.call(Method::GET, "/stats", "").await;
    let s = json(&stats);
    assert_eq!((s["cache"]["hits"].as_u64(), s["cache"]["misses"].as_u64()), (Some(2), Some(1)));
    assert!(s["cache"]["tokens_saved"].as_u64() > Some(0));
    let usage = s["usage"].as_array().unwrap();
    let line =
        |p: &str| usage.iter().find(|e| e["provider"] == p).unwrap_or_else(|| panic!("{p}: {usage:?}"));
    assert_eq!(line("cache")["total"]["requests"], 2);
    assert_eq!(line("cache")["total"]["cost_micros"], 0, "hits cost nothing");
    assert!(line("up")["total"]["cost_micros"].as_u64() > Some(0));
    h.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated_and_an_admin_can_invalidate() {
    // Open mode, the tenant header trusted (what keys mode replaces).
    let (mock, h) = setup("[cache]\nstrategy = \"aggressive\"\n[auth]\ntrust_tenant_header = true\n").await;
    let acme = [("x-tenant", "acme")];
    let globex = [("x-tenant", "globex")];
    assert_eq!(chat(&h, CHAT, &acme).await.1, "MISS");
    assert_eq!(chat(&h, CHAT, &globex).await.1, "MISS", "another tenant never sees acme's entry");
    assert_eq!(chat(&h, CHAT, &acme).await.1, "HIT");

    let invalidate = |body: &'static str, token: &'static str| {
        let h = &h;
        async move {
            let auth = format!("Bearer {token}");
            let res =
                h.send(Method::POST, "/admin/cache/invalidate", body, &[("authorization", &auth)]).await;
            let status = res.status();
            (status, res.into_body().collect().await.unwrap().to_bytes())
        }
    };
    let (status, body) = invalidate(r#"{"tenant":"acme"}"#, "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&body).1.as_deref(), Some("invalid_api_key"));
    assert_eq!(chat(&h, CHAT, &acme).await.1, "HIT", "a refused call changed nothing");
    let (status, _) = invalidate(r#"{"tenant":"acme"}"#, "adm-secret-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chat(&h, CHAT, &acme).await.1, "MISS");
    assert_eq!(chat(&h, CHAT, &globex).await.1, "HIT", "only acme's entries went");
    let (status, _) = invalidate(r#"{"all":true}"#, "adm-secret-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chat(&h, CHAT, &globex).await.1, "MISS");
    for bad in [r#"{"key":"zz"}"#, r#"{"tenant":"a","all":true}"#, "{}", "not json", r#"{"other":1}"#] {
        let (status, body) = invalidate(bad, "adm-secret-1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_of(&body).0, "invalid_request_error");
    }
    assert_eq!(mock.stats().llm_requests, 4);
    h.stop().await;
}

#[tokio::test]
async fn without_an_admin_token_there_is_no_admin_call_and_without_a_cache_no_header() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(&mock, "")).await;
    let res = h.send(Method::POST, "/admin/cache/invalidate", r#"{"all":true}"#, &[]).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let (_, cache, _) = chat(&h, DET, &[]).await;
    assert_eq!(cache, "", "no cache configured: no x-llm-cache header");
    h.stop().await;
}

#[test]
fn cache_config_errors_name_the_field() {
    let toml = format!(
        "{}\n[cache]\nmax_mb = 0\nttl_secs = 100\nmax_ttl_secs = 10\n",
        llm_tower_gateway::DEFAULT_CONFIG.replace("[cache]\nstrategy = \"conservative\"\n", "")
    );
    let errs = GatewayConfig::from_toml(&toml).unwrap().validate().unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"cache.max_mb"), "{fields:?}");
    assert!(fields.contains(&"cache.max_ttl_secs"), "{fields:?}");
    assert!(GatewayConfig::from_toml("[cache]\nstrategy = \"sometimes\"\n").is_err());
    let env_only = format!(
        "{}\n[server]\nadmin_token_env = \"LLM_TOWER_TEST_UNSET_VAR\"\n",
        "[[providers]]\nname = \"m\"\nkind = \"mock\"\nmodels = [\"x\"]"
    );
    let errs = GatewayConfig::from_toml(&env_only).unwrap().validate_with_env(&|_| None).unwrap_err();
    assert_eq!(errs[0].field, "server.admin_token_env");
}
