//! Virtual keys through the gateway over loopback: refusals, per-key limits
//! and budgets, the admin key API, and keys and spend across a restart on the
//! same state file.

mod common;

use std::path::PathBuf;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use llm_tower::auth::KeyHash;
use llm_tower::mock::{MockConfig, MockServer};
use serde_json::Value;

use common::*;

const ADMIN: &str = "adm-secret-keys-7";
const TEAM_A: &str = "llmt-team-a-0123456789abcdef";
const TEAM_B: &str = "llmt-team-b-0123456789abcdef";

/// A state file path for one test, removed (with its WAL files) when dropped.
struct StateFile(PathBuf);

impl StateFile {
    fn new(name: &str) -> Self {
        let f =
            StateFile(std::env::temp_dir().join(format!("llm-tower-gw-{}-{name}.db", std::process::id())));
        f.clean();
        f
    }
    fn clean(&self) {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", self.0.display()));
        }
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Keys mode in front of a mock that only takes the provider's own key.
async fn mock() -> MockServer {
    MockServer::start(MockConfig { require_key: Some(KEY.into()), ..Default::default() }).await.unwrap()
}

fn config(mock: &MockServer, state: Option<&StateFile>) -> String {
    let state = state.map_or(String::new(), |s| format!("[state]\npath = '{}'\n", s.0.display()));
    let keys = format!(
        r#"
[auth]
mode = "keys"

[[keys]]
name = "team-a"
hash = "{a}"
models = ["gpt-4o-mini", "fast"]
requests_per_minute = 2

[[keys]]
name = "team-b"
hash = "{b}"
budget = {{ usd = 0.003, period = "day" }}

[prices.gpt-4o-mini]
input = 10.0
output = 100.0
{state}"#,
        a = KeyHash::of(TEAM_A),
        b = KeyHash::of(TEAM_B),
    );
    config_for(mock, &keys).replace("stats_public = true\n", &format!("admin_token = '{ADMIN}'\n"))
}

/// A short chat (a small `max_tokens`, so a budget's estimate fits).
const SHORT: &str =
    r#"{"model":"gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"hello gateway"}]}"#;

async fn chat_as(h: &Harness, key: &str, body: &str) -> (StatusCode, http::HeaderMap, Value) {
    let auth = format!("Bearer {key}");
    let res = h.send(Method::POST, "/v1/chat/completions", body, &[("authorization", &auth)]).await;
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, json(&bytes))
}

async fn admin(h: &Harness, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let auth = format!("Bearer {ADMIN}");
    let res = h.send(method, path, body, &[("authorization", &auth)]).await;
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, if bytes.is_empty() { Value::Null } else { json(&bytes) })
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("an OpenAI error: {v}"))
}

#[tokio::test]
async fn every_v1_request_needs_a_key_and_a_key_only_its_models() {
    let mock = mock().await;
    let h = start(&config(&mock, None)).await;

    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&body), ("invalid_request_error".into(), Some("invalid_api_key".into())));
    let (status, _, v) = chat_as(&h, "llmt-nobody", CHAT).await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "invalid_api_key"));
    assert!(!v.to_string().contains("llmt-nobody"), "an error never echoes the key: {v}");
    // A tenant header means nothing in keys mode.
    let res = h.send(Method::POST, "/v1/chat/completions", CHAT, &[("x-tenant", "team-a")]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(mock.stats().llm_requests, 0, "refused requests never reach the provider");

    // The provider takes only its own key: the client's never goes upstream.
    let (status, _, v) = chat_as(&h, TEAM_A, CHAT).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let anthropic = h
        .send(
            Method::POST,
            "/v1/chat/completions",
            r#"{"model":"claude-3-5-haiku-latest","messages":[{"role":"user","content":"hi"}]}"#,
            &[("x-api-key", TEAM_A)],
        )
        .await;
    assert_eq!(anthropic.status(), StatusCode::NOT_FOUND, "outside team-a's grant");
    let (_, _, unknown) = chat_as(&h, TEAM_A, r#"{"model":"gpt-9","messages":[]}"#).await;
    let (_, _, ungranted) = chat_as(&h, TEAM_A, r#"{"model":"claude-3-5-haiku-latest","messages":[]}"#).await;
    assert_eq!(code(&unknown), "model_not_found");
    assert_eq!(
        ungranted["error"]["message"].as_str().unwrap().replace("claude-3-5-haiku-latest", "M"),
        unknown["error"]["message"].as_str().unwrap().replace("gpt-9", "M"),
        "a model outside the grant looks like one that does not exist"
    );

    // /v1/models: a key sees its own models.
    let res = h.send(Method::GET, "/v1/models", "", &[("authorization", &format!("Bearer {TEAM_A}"))]).await;
    let listed = json(&res.into_body().collect().await.unwrap().to_bytes());
    let ids: Vec<&str> =
        listed["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fast", "gpt-4o-mini"]);
    assert_eq!(h.call(Method::GET, "/v1/models", "").await.0, StatusCode::UNAUTHORIZED);
    let res = h.send(Method::GET, "/v1/models", "", &[("authorization", &format!("Bearer {TEAM_B}"))]).await;
    let all = json(&res.into_body().collect().await.unwrap().to_bytes());
    assert!(all["data"].as_array().unwrap().len() > 2, "no models list: all of them");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_limits_and_budget() {
    let mock = mock().await;
    let h = start(&config(&mock, None)).await;
    for _ in 0..2 {
        assert_eq!(chat_as(&h, TEAM_A, SHORT).await.0, StatusCode::OK);
    }
    let (status, headers, v) = chat_as(&h, TEAM_A, SHORT).await;
    assert_eq!((status, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded"));
    assert!(headers.contains_key("retry-after"), "{headers:?}");

    // team-b is not limited by team-a's quota, and has its own budget:
    // ~1,700 micro-dollars a call against $0.003.
    let (status, _, v) = chat_as(&h, TEAM_B, SHORT).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, headers, v) = chat_as(&h, TEAM_B, SHORT).await;
    assert_eq!((status, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota"));
    assert_eq!(headers["x-should-retry"], "false");
    assert_eq!(mock.stats().llm_requests, 3);

    // A minute later team-a may call again; team-b's day is still spent.
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    assert_eq!(chat_as(&h, TEAM_A, SHORT).await.0, StatusCode::OK);
    assert_eq!(chat_as(&h, TEAM_B, SHORT).await.0, StatusCode::TOO_MANY_REQUESTS);
    h.stop().await;
}

#[tokio::test]
async fn admin_keys_work_at_once_change_revoke_and_survive_a_restart() {
    let mock = mock().await;
    let state = StateFile::new("admin");
    let cfg = config(&mock, Some(&state));
    let h = start(&cfg).await;

    assert_eq!(h.call(Method::GET, "/admin/keys", "").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.call(Method::GET, "/stats", "").await.0,
        StatusCode::UNAUTHORIZED,
        "stats need the admin token"
    );
    let (status, v) = admin(&h, Method::POST, "/admin/keys", r#"{"name":"bad name"}"#).await;
    assert_eq!((status, v["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("name")));
    let (status, v) = admin(&h, Method::POST, "/admin/keys", r#"{"name":"svc","rpm":5}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown fields are refused: {v}");

    let (status, created) = admin(
        &h,
        Method::POST,
        "/admin/keys",
        r#"{"name":"svc","models":["gpt-4o-mini"],"budget":{"usd":1.0,"period":"month"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("llmt-"));
    assert_eq!(created["prefix"], KeyHash::of(&key).prefix());
    assert_eq!(admin(&h, Method::POST, "/admin/keys", r#"{"name":"svc"}"#).await.0, StatusCode::CONFLICT);

    for _ in 0..2 {
        assert_eq!(chat_as(&h, &key, SHORT).await.0, StatusCode::OK, "a created key works at once");
    }
    let (_, listed) = admin(&h, Method::GET, "/admin/keys", "").await;
    let text = listed.to_string();
    assert!(!text.contains(&key) && !text.contains(&KeyHash::of(&key).to_string()[7..]), "{text}");
    let svc = listed["data"].as_array().unwrap().iter().find(|k| k["name"] == "svc").unwrap().clone();
    let spent = svc["spend"]["spent_usd"].as_f64().unwrap();
    assert!(spent > 0.0, "{svc}");
    assert_eq!((svc["source"].as_str(), svc["spend"]["period"].as_str()), (Some("admin"), Some("month")));

    // PATCH: one request a minute; null lifts it again.
    let (status, v) = admin(&h, Method::PATCH, "/admin/keys/svc", r#"{"requests_per_minute":1}"#).await;
    assert_eq!((status, v["requests_per_minute"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(v["budget"]["usd"], 1.0, "what PATCH leaves out stays");
    assert_eq!(chat_as(&h, &key, SHORT).await.0, StatusCode::OK);
    assert_eq!(chat_as(&h, &key, SHORT).await.0, StatusCode::TOO_MANY_REQUESTS);
    admin(&h, Method::PATCH, "/admin/keys/svc", r#"{"requests_per_minute":null}"#).await;
    assert_eq!(chat_as(&h, &key, SHORT).await.0, StatusCode::OK);
    assert_eq!(
        admin(&h, Method::DELETE, "/admin/keys/team-a", "").await.0,
        StatusCode::CONFLICT,
        "config keys live in the file"
    );
    assert_eq!(admin(&h, Method::PATCH, "/admin/keys/nobody", "{}").await.0, StatusCode::NOT_FOUND);

    let (_, stats) = admin(&h, Method::GET, "/stats", "").await;
    let requests_of = |stats: &Value| -> u64 {
        stats["usage"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["tenant"] == "svc")
            .map(|l| l["total"]["requests"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(requests_of(&stats), 4);
    let (_, listed) = admin(&h, Method::GET, "/admin/keys", "").await;
    let spent =
        listed["data"].as_array().unwrap().iter().find(|k| k["name"] == "svc").unwrap()["spend"]["spent_usd"]
            .clone();
    h.stop().await;

    // The same state file after a restart: the key, its spend and its usage.
    let h = start(&cfg).await;
    assert_eq!(chat_as(&h, &key, SHORT).await.0, StatusCode::OK, "the key works after a restart");
    let (_, listed) = admin(&h, Method::GET, "/admin/keys", "").await;
    let svc = listed["data"].as_array().unwrap().iter().find(|k| k["name"] == "svc").unwrap().clone();
    assert!(
        svc["spend"]["spent_usd"].as_f64().unwrap() > spent.as_f64().unwrap(),
        "spend continued: {svc} after {spent}"
    );
    let (_, stats) = admin(&h, Method::GET, "/stats", "").await;
    assert_eq!(requests_of(&stats), 5, "the ledger continued");

    // Revoked: refused at the next request, and after the next restart.
    let (status, v) = admin(&h, Method::DELETE, "/admin/keys/svc", "").await;
    assert_eq!((status, v["deleted"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(chat_as(&h, &key, SHORT).await.0, StatusCode::UNAUTHORIZED);
    h.stop().await;
    let h = start(&cfg).await;
    assert_eq!(chat_as(&h, &key, SHORT).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(chat_as(&h, TEAM_A, SHORT).await.0, StatusCode::OK, "config keys are loaded at every start");
    h.stop().await;
}
