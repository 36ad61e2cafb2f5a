//! The configuration's parse and validation errors.

use std::time::Duration;

use llm_tower_circuit::Window;
use llm_tower_http::Timeouts;
use llm_tower_retry::{Backoff, Jitter};

use super::*;

fn errors(toml: &str) -> Vec<String> {
    let env = |k: &str| (k == "SET_KEY").then(|| "sk-env".to_string());
    match StackConfig::from_toml(toml) {
        Err(e) => vec![e.to_string()],
        Ok(c) => c.validate_with_env(&env).err().unwrap_or_default().iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn embedded_default_is_valid() {
    let resolved = StackConfig::embedded_default().validate().unwrap();
    assert_eq!(resolved.len(), 1);
    assert!(resolved[0].mock.is_some());
    assert!(resolved[0].models.contains(&"fast".to_string()));
}

#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("", "providers: at least one provider is required"),
        ("[server]\nlisten = 'nope'", "line 2"),
        ("[server]\nbogus = 1", "unknown field `bogus`"),
        (
            "[server]\nlisten_backlog = 0\n[[providers]]\nname='a'\nkind='mock'\nmodels=['m']",
            "server.listen_backlog: must be greater than 0",
        ),
        ("[[providers]]\nname='a'\nkind='openai'\nmodels=['m']", "providers[0].base_url"),
        ("[[providers]]\nname='a'\nkind='warp'\nmodels=['m']", "unknown variant `warp`"),
        (
            "[[providers]]\nname='a'\nkind='openai'\nbase_url='ftp://x'\nmodels=['m']",
            "providers[0].base_url: invalid base URL",
        ),
        (
            "[[providers]]\nname='a'\nkind='groq'\nmodels=['m']",
            "providers[0].api_key_env: this provider needs an API key",
        ),
        (
            "[[providers]]\nname='a'\nkind='groq'\napi_key_env='UNSET_KEY'\nmodels=['m']",
            "UNSET_KEY is not set",
        ),
        (
            "[[providers]]\nname='a'\nkind='azure'\napi_key_env='SET_KEY'\nbase_url='https://x.openai.azure.com'\nmodels=['m']",
            "providers[0].api_version",
        ),
        ("[[providers]]\nname='a'\nkind='mock'\nmodels=[]", "providers[0].models"),
        (
            "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\n[[providers]]\nname='a'\nkind='mock'\nmodels=['m']",
            "providers[1].models[0]: model \"m\" is already served by provider \"a\"",
        ),
        (
            "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\nheaders={'bad name'='x'}",
            "providers[0].headers.bad name",
        ),
        (
            "[[providers]]\nname='a'\nkind='ollama'\nmodels=['m']\n[providers.mock]\nseed=1",
            "providers[0].mock",
        ),
        (
            "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\n[providers.rate_limit]\ntokens_per_minute=0",
            "providers[0].rate_limit.tokens_per_minute",
        ),
        (
            "[tenants.default]\nrequests_per_minute=0\n[[providers]]\nname='a'\nkind='mock'\nmodels=['m']",
            "tenants.default.requests_per_minute",
        ),
        (
            "[tenants]\nheader='bad header'\n[[providers]]\nname='a'\nkind='mock'\nmodels=['m']",
            "tenants.header",
        ),
        (
            "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\n[providers.rate_limit]\nmode='maybe'",
            "unknown variant `maybe`",
        ),
    ];
    for (toml, needle) in cases {
        let errs = errors(toml);
        assert!(errs.iter().any(|e| e.contains(needle)), "{toml:?}: {errs:?} lacks {needle:?}");
    }
}

#[test]
fn reports_every_problem_at_once() {
    let errs = errors("[[providers]]\nname=''\nkind='openai'\nmodels=[]");
    assert!(errs.len() >= 3, "{errs:?}");
}

#[test]
fn keys_from_env_never_print() {
    let cfg = StackConfig::from_toml(
        "[[providers]]\nname='g'\nkind='groq'\napi_key_env='SET_KEY'\nmodels=['m']\n[[providers]]\nname='i'\nkind='openai'\nbase_url='http://127.0.0.1:1/v1'\napi_key='sk-inline'\nmodels=['n']",
    )
    .unwrap();
    let resolved = cfg.validate_with_env(&|k| (k == "SET_KEY").then(|| "sk-env".to_string())).unwrap();
    let dump = format!("{cfg:?} {resolved:?}");
    assert!(!dump.contains("sk-env") && !dump.contains("sk-inline"), "{dump}");
}

#[test]
fn retry_and_breaker_sections_map_to_policies() {
    let cfg = StackConfig::from_toml(
        "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\n[providers.retry]\nmax_attempts=5\nbackoff='fixed'\nbase_ms=250\njitter='none'\ndeadline_ms=9000\n[providers.circuit_breaker]\nkey='model'\nconsecutive_failures=0\nwindow_secs=30\nopen_secs=5",
    )
    .unwrap();
    let r = &cfg.validate().unwrap()[0];
    assert_eq!(r.retry.max_attempts, 5);
    assert_eq!(r.retry.backoff, Backoff::Fixed(Duration::from_millis(250)));
    assert_eq!(r.retry.jitter, Jitter::None);
    assert_eq!(r.retry.deadline, Some(Duration::from_secs(9)));
    assert!(r.breaker_per_model);
    assert_eq!(r.breaker.consecutive_failures, None);
    assert_eq!(r.breaker.window, Window::Time { buckets: 30, bucket: Duration::from_secs(1) });
    assert_eq!(r.breaker.open_duration, Duration::from_secs(5));
    let off = RetrySection { enabled: false, ..Default::default() }.to_policy();
    assert_eq!(off.max_attempts, 1);
    let never = BreakerSection { enabled: false, ..Default::default() }.to_config();
    assert!(
        never.consecutive_failures.is_none() && never.failure_rate.is_none() && never.slow_calls.is_none()
    );
}

#[test]
fn timeouts_zero_disables() {
    let t = TimeoutsSection { headers_ms: Some(0), idle_ms: Some(500), total_ms: None }.to_timeouts();
    assert_eq!(t.headers, None);
    assert_eq!(t.idle, Some(Duration::from_millis(500)));
    assert_eq!(t.total, Timeouts::default().total);
}

#[test]
fn keys_and_auth_are_checked_against_each_other() {
    const MOCK: &str = "[[providers]]\nname='m'\nkind='mock'\nmodels=['gpt-4o-mini']\n";
    let hash = llm_tower_auth::KeyHash::of("sk-env");
    let cases: Vec<(String, &str)> = vec![
        (format!("[auth]\nmode='keys'\n{MOCK}"), "auth.mode: no [[keys]] and no server.admin_token"),
        (
            format!("[[keys]]\nname='a'\nhash='{hash}'\n{MOCK}"),
            "auth.mode: [[keys]] are given but mode is \"open\"",
        ),
        (
            format!("[tenants.overrides.acme]\nrequests_per_minute=5\n{MOCK}"),
            "auth.trust_tenant_header: tenants are named in [tenants]",
        ),
        (
            format!(
                "[auth]\nmode='keys'\ntrust_tenant_header=true\n[[keys]]\nname='a'\nhash='{hash}'\n{MOCK}"
            ),
            "auth.trust_tenant_header: with mode = \"keys\"",
        ),
        (
            format!("[auth]\nmode='keys'\n[[keys]]\nname='a'\nkey_env='UNSET_KEY'\n{MOCK}"),
            "keys[0].key_env: environment variable UNSET_KEY is not set",
        ),
        (
            format!(
                "[auth]\nmode='keys'\n[[keys]]\nname='a'\nkey_env='SET_KEY'\n[[keys]]\nname='a'\nhash='{hash}'\n{MOCK}"
            ),
            "keys[1].name: another key is named a",
        ),
        (
            format!(
                "[auth]\nmode='keys'\n[[keys]]\nname='a'\nkey_env='SET_KEY'\n[[keys]]\nname='b'\nhash='{hash}'\n{MOCK}"
            ),
            "keys[1].key_env: the same key as a",
        ),
        (
            format!("[auth]\nmode='keys'\n[[keys]]\nname='a'\nhash='{hash}'\nrequests_per_minute=0\n{MOCK}"),
            "keys[0].requests_per_minute: must be at least 1",
        ),
        (format!("[auth]\nmode='keys'\n[[keys]]\nname='a'\nhash='sha256:00'\n{MOCK}"), "keys[0].hash"),
    ];
    for (toml, want) in &cases {
        let errs = errors(toml);
        assert!(errs.iter().any(|e| e.contains(want)), "{want}: {errs:?}");
    }
    let ok =
        format!("[auth]\nmode='keys'\n[[keys]]\nname='a'\nkey_env='SET_KEY'\nmodels=['gpt-4o-mini']\n{MOCK}");
    assert!(errors(&ok).is_empty(), "{:?}", errors(&ok));
    let trusted =
        format!("[auth]\ntrust_tenant_header=true\n[tenants.overrides.acme]\nrequests_per_minute=5\n{MOCK}");
    assert!(errors(&trusted).is_empty(), "{:?}", errors(&trusted));
}

#[test]
fn a_shared_cache_needs_a_redis() {
    const MOCK: &str = "[[providers]]\nname='m'\nkind='mock'\nmodels=['gpt-4o-mini']\n";
    let errs = errors(&format!("[cache]\nshared = true\n[state]\npath = 'x.db'\n{MOCK}"));
    assert!(
        errs.iter().any(|e| e.starts_with("cache.shared: a shared cache tier needs [state] redis_url")),
        "{errs:?}"
    );
    let ok =
        errors(&format!("[cache]\nshared = true\n[state]\nredis_url = 'redis://127.0.0.1:6379'\n{MOCK}"));
    assert!(!ok.iter().any(|e| e.starts_with("cache.shared")), "{ok:?}");
}

#[test]
fn a_redis_ca_is_for_rediss_and_must_exist() {
    const MOCK: &str = "[[providers]]\nname='m'\nkind='mock'\nmodels=['gpt-4o-mini']\n";
    let plain = errors(&format!(
        "[state]\nredis_url = 'redis://127.0.0.1:6379'\nredis_ca_file = 'Cargo.toml'\n{MOCK}"
    ));
    assert!(plain.iter().any(|e| e == "state.redis_ca_file: a CA is for a rediss:// URL"), "{plain:?}");
    let missing = errors(&format!(
        "[state]\nredis_url = 'rediss://127.0.0.1:6379'\nredis_ca_file = '/no/such/ca.pem'\n{MOCK}"
    ));
    assert!(
        missing.iter().any(|e| e == "state.redis_ca_file: /no/such/ca.pem is not a readable file"),
        "{missing:?}"
    );
}
