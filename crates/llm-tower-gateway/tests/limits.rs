//! Provider and tenant rate limits in the gateway, on paused time.

mod common;

use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use llm_tower::mock::{MockConfig, MockServer};

use common::*;

const TENANTS: &str = "
[auth]
trust_tenant_header = true
[tenants]
header = 'x-tenant'
[tenants.default]
requests_per_minute = 2
[tenants.overrides.vip]
requests_per_minute = 5
";

async fn as_tenant(h: &Harness, tenant: &str) -> hyper::Response<hyper::body::Incoming> {
    h.send(Method::POST, "/v1/chat/completions", CHAT, &[("x-tenant", tenant)]).await
}

#[tokio::test(start_paused = true)]
async fn tenants_get_their_own_limits_and_headers() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&format!("{TENANTS}{}", config_for(&mock, ""))).await;
    for left in [1, 0] {
        let res = as_tenant(&h, "acme").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-ratelimit-limit-requests"], "2");
        assert_eq!(res.headers()["x-ratelimit-remaining-requests"], left.to_string().as_str());
        res.into_body().collect().await.unwrap();
    }
    let res = as_tenant(&h, "acme").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "30", "2 per minute: the next in 30 s");
    assert_eq!(res.headers()["x-should-retry"], "true");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(error_of(&body), ("rate_limit_error".into(), Some("rate_limit_exceeded".into())));
    // Another tenant has its own budget; a named one its own limits.
    assert_eq!(as_tenant(&h, "globex").await.status(), StatusCode::OK);
    for _ in 0..5 {
        let res = as_tenant(&h, "vip").await;
        assert_eq!(res.status(), StatusCode::OK);
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(as_tenant(&h, "vip").await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(mock.stats().llm_requests, 2 + 1 + 5, "refused requests never reached the provider");

    let (_, _, stats) = h.call(Method::GET, "/stats", "").await;
    let s = json(&stats);
    let keys: Vec<&str> = s["tenants"]["default"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["acme", "globex"]);
    assert_eq!(s["tenants"]["default"]["rejected"], 1);
    assert_eq!(s["tenants"]["overrides"]["vip"]["allowed"], 5);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn emit_headers_false_keeps_a_limiters_quota_from_the_callers() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let provider = |emit: bool| {
        format!(
            "[providers.retry]\nenabled = false\n[providers.rate_limit]\nadaptive = false\n\
             requests_per_minute = 1000\nemit_headers = {emit}\n"
        )
    };
    let quiet_tenants =
        TENANTS.replace("requests_per_minute = 2\n", "requests_per_minute = 2\nemit_headers = false\n");
    assert_ne!(quiet_tenants, TENANTS);
    let ratelimit_headers = |res: &hyper::Response<hyper::body::Incoming>| -> Vec<String> {
        res.headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k.starts_with("x-ratelimit-"))
            .collect()
    };

    // The tenant limiter quiet: the provider's limiter below writes its own
    // quota instead (the tenant's did not mark the request as written above).
    let h = start(&format!("{quiet_tenants}{}", config_with(&mock, &provider(true), ""))).await;
    let res = as_tenant(&h, "acme").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["x-ratelimit-limit-requests"],
        "1000",
        "the provider's quota, not the tenant's 2"
    );
    res.into_body().collect().await.unwrap();
    h.stop().await;

    // Both quiet: no quota header on a success, and the tenant's limit still
    // holds, its refusal still saying when to come back.
    let h = start(&format!("{quiet_tenants}{}", config_with(&mock, &provider(false), ""))).await;
    for _ in 0..2 {
        let res = as_tenant(&h, "acme").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(ratelimit_headers(&res), Vec::<String>::new());
        res.into_body().collect().await.unwrap();
    }
    let res = as_tenant(&h, "acme").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "30");
    res.into_body().collect().await.unwrap();
    // A named tenant's section has its own say: vip's writes its quota.
    let res = as_tenant(&h, "vip").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-ratelimit-limit-requests"], "5");
    res.into_body().collect().await.unwrap();
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn provider_limits_pace_requests_instead_of_failing_them() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let sections = "[providers.retry]\nenabled = false\n[providers.rate_limit]\nrequests_per_minute = 60\nburst = 1\nmax_wait_ms = 5000\n";
    let h = start(&config_with(&mock, sections, "")).await;
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        let (status, _, _) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(start.elapsed(), Duration::from_secs(2), "one a second, waiting rather than refusing");
    let (_, _, stats) = h.call(Method::GET, "/stats", "").await;
    assert_eq!(json(&stats)["providers"][0]["rate_limit"]["waited"], 2);
    h.stop().await;
}

#[tokio::test]
async fn requests_over_the_context_window_get_400_before_any_upstream_call() {
    let mock = MockServer::start(MockConfig { models: vec![], ..Default::default() }).await.unwrap();
    let toml = |preflight: &str| {
        format!(
            "[server]\nmax_body_bytes = 1000000\ncontext_preflight = '{preflight}'\n[[providers]]\nname = 'up'\nkind = 'openai'\nbase_url = '{}/v1'\napi_key = 'k'\nmodels = ['gpt-4']\n[providers.retry]\nenabled = false\n",
            mock.url()
        )
    };
    let long = serde_json::json!({"model": "gpt-4", "max_tokens": 100,
        "messages": [{"role": "user", "content": "token ".repeat(9_000)}]})
    .to_string();
    let h = start(&toml("enforce")).await;
    let (status, _, body) = h.call(Method::POST, "/v1/chat/completions", &long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&body), ("invalid_request_error".into(), Some("context_length_exceeded".into())));
    assert_eq!(json(&body)["error"]["param"], "messages");
    assert_eq!(mock.stats().llm_requests, 0);
    h.stop().await;

    let h = start(&toml("off")).await;
    assert_eq!(h.call(Method::POST, "/v1/chat/completions", &long).await.0, StatusCode::OK);
    assert_eq!(mock.stats().llm_requests, 1);
    h.stop().await;
}

#[tokio::test]
async fn tenant_budgets_and_usage_in_stats() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // gpt-4o-mini priced at $10 / $100 per million: ~11 input and 16 output tokens
    // cost about 1,700 micro-dollars a call (about 11 at the built-in prices).
    let toml = format!(
        "[auth]\ntrust_tenant_header = true\n[tenants.budgets.acme]\nusd = 0.05\n[prices.gpt-4o-mini]\ninput = 10.0\noutput = 100.0\n{}",
        config_for(&mock, "")
    );
    let h = start(&toml).await;
    let mut passed = 0;
    let last = loop {
        let res = as_tenant(&h, "acme").await;
        if res.status() != StatusCode::OK {
            break res;
        }
        res.into_body().collect().await.unwrap();
        passed += 1;
        assert!(passed < 50);
    };
    assert_eq!(last.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last.headers()["x-should-retry"], "false");
    let body = last.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(error_of(&body).0, "insufficient_quota");
    assert!(passed >= 1);
    assert_eq!(as_tenant(&h, "globex").await.status(), StatusCode::OK, "no budget for others");

    let (_, _, stats) = h.call(Method::GET, "/stats", "").await;
    let s = json(&stats);
    let acme = s["usage"].as_array().unwrap().iter().find(|e| e["tenant"] == "acme").unwrap().clone();
    assert_eq!(acme["total"]["requests"], passed);
    assert_eq!(acme["provider"], "up", "usage is kept per provider too");
    let cost = acme["total"]["cost_micros"].as_u64().unwrap();
    assert!(cost <= 50_000, "never spent past the budget: {cost}");
    let per_call = cost / passed;
    assert!((1_500..=2_000).contains(&per_call), "the override prices were used: {per_call}");
    h.stop().await;
}

#[tokio::test]
async fn an_alias_and_a_route_are_priced_at_the_model_that_served_them() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // `fast` is the provider's alias of gpt-4o-mini; `smart` a route to it.
    let toml = format!(
        "[prices.gpt-4o-mini]\ninput = 10.0\noutput = 100.0\n[[routes]]\nmodel = \"smart\"\ntargets = [{{ provider = \"up\", model = \"gpt-4o-mini\" }}]\n{}",
        config_for(&mock, "")
    );
    let h = start(&toml).await;
    for model in ["gpt-4o-mini", "fast", "smart"] {
        let body = CHAT.replace("gpt-4o-mini", model);
        let (status, _, _) = h.call(Method::POST, "/v1/chat/completions", &body).await;
        assert_eq!(status, StatusCode::OK, "{model}");
    }
    let (_, _, stats) = h.call(Method::GET, "/stats", "").await;
    let s = json(&stats);
    let cost = |model: &str| {
        let line = s["usage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["model"] == model)
            .unwrap_or_else(|| panic!("{model}: {s}"));
        line["total"]["cost_micros"].as_u64().unwrap()
    };
    let direct = cost("gpt-4o-mini");
    assert!(direct > 1_000, "priced by the override: {direct}");
    assert_eq!(cost("fast"), direct, "the alias costs what its model costs");
    assert_eq!(cost("smart"), direct, "the route costs what its target costs");
    h.stop().await;
}
