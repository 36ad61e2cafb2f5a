//! TokenAccountingLayer around LlmHttpService against the mock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use llm_tower_core::{BudgetExceeded, ErrorInfo, Key, LlmBody, RequestInfo, Usage};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower_tokens::{AccountingConfig, Budget, BudgetStore, ModelInfo, Period, TokenAccountingLayer};
use tower::{Layer, ServiceExt};

fn http(mock: &MockServer) -> LlmHttpService {
    LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap())
}

fn req(body: &str, tenant: Option<&str>) -> Request<LlmBody> {
    let mut r = Request::post("/v1/chat/completions").body(LlmBody::from(body.to_owned())).unwrap();
    let mut info = RequestInfo::ensure(&mut r).unwrap().as_ref().clone();
    info.tenant = tenant.map(Into::into);
    r.extensions_mut().insert(Arc::new(info));
    r
}

const JSON: &str = r#"{"model":"gpt-4o","max_tokens":100,"messages":[{"role":"user","content":"hello"}]}"#;
const STREAM: &str =
    r#"{"model":"gpt-4o","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"hello"}]}"#;

#[tokio::test]
async fn json_usage_is_priced_and_recorded_per_tenant_and_model() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let layer = TokenAccountingLayer::new(AccountingConfig::default());
    let svc = layer.layer(http(&mock));
    let res = svc.oneshot(req(JSON, Some("acme"))).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let usage =
        Usage { input: v["usage"]["prompt_tokens"].as_u64().unwrap(), output: 16, ..Default::default() };
    let e = &layer.ledger().entries()[0];
    assert_eq!((e.tenant.as_str(), e.model.as_str(), e.provider.as_str()), ("acme", "gpt-4o", "mock"));
    assert_eq!((e.total.requests, e.total.input_tokens, e.total.output_tokens), (1, usage.input, 16));
    assert_eq!(e.total.cost_micros, ModelInfo::lookup("gpt-4o").prices.cost_micros(&usage));
    assert_eq!(e.last_hour, e.total);
}

#[tokio::test]
async fn streams_without_include_usage_are_still_accounted_and_the_caller_sees_no_extra_chunk() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let layer = TokenAccountingLayer::new(AccountingConfig::default());
    let svc = layer.layer(http(&mock));
    let res = svc.clone().oneshot(req(STREAM, None)).await.unwrap();
    let text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"usage\":{"), "the injected usage chunk was removed:\n{text}");
    assert_eq!(mock.requests()[0].json()["stream_options"]["include_usage"], true, "usage was asked for");
    assert_eq!(layer.ledger().entries()[0].total.output_tokens, 16);

    // A caller who asked for usage keeps the chunk.
    let asked =
        STREAM.replace("\"stream\":true", "\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    let res = svc.oneshot(req(&asked, None)).await.unwrap();
    let text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("\"usage\":{"), "{text}");
    assert_eq!(layer.ledger().entries()[0].total.requests, 2);
}

#[tokio::test]
async fn budgets_refuse_with_insufficient_quota_once_spent() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let budget = Budget { limit_micros: 2_500, period: Period::Day };
    let cfg = AccountingConfig { budgets: [("acme".to_string(), budget)].into(), ..Default::default() };
    let layer = TokenAccountingLayer::new(cfg);
    let svc = layer.layer(http(&mock));
    let mut passed = 0;
    let err = loop {
        match svc.clone().oneshot(req(JSON, Some("acme"))).await {
            Ok(res) => {
                res.into_body().collect().await.unwrap();
                passed += 1;
            }
            Err(e) => break e,
        }
        assert!(passed < 100, "the budget never ran out");
    };
    let ex = err.downcast_ref::<BudgetExceeded>().expect("typed");
    assert_eq!((ex.key.as_str(), ex.period, ex.limit_micros), ("acme", "day", 2_500));
    let info = ErrorInfo::from_error(&*err);
    assert_eq!(
        (info.status, info.kind, info.should_retry),
        (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", Some(false))
    );
    let (spent, reserved) = layer.budgets().balance(&Key::from("acme")).unwrap();
    assert!(spent <= 2_500 && reserved == 0, "spent {spent}, reserved {reserved}");
    assert_eq!(mock.stats().llm_requests, passed);
    // Other tenants have no budget here.
    assert!(svc.oneshot(req(JSON, Some("globex"))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_cannot_overspend_the_budget() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let budget = Budget { limit_micros: 20_000, period: Period::Total };
    let layer =
        TokenAccountingLayer::new(AccountingConfig { default_budget: Some(budget), ..Default::default() });
    let svc = layer.layer(http(&mock));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (svc, refused) = (svc.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            match svc.oneshot(req(JSON, None)).await {
                Ok(res) => {
                    res.into_body().collect().await.unwrap();
                }
                Err(e) => {
                    assert!(e.is::<BudgetExceeded>());
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (spent, reserved) = layer.budgets().balance(&Key::from("-")).unwrap();
    let estimate = ModelInfo::lookup("gpt-4o").prices.cost_micros(&Usage {
        input: 10,
        output: 100,
        ..Default::default()
    });
    assert_eq!(reserved, 0);
    assert!(spent <= 20_000 + estimate, "spent {spent} overshoots the budget by more than one estimate");
    assert!(refused.load(Ordering::SeqCst) > 0, "the budget did refuse some");
    assert_eq!(mock.stats().llm_requests as usize, 200 - refused.load(Ordering::SeqCst));
}

#[tokio::test]
async fn failed_calls_cost_nothing() {
    let mock = MockServer::start(MockConfig {
        faults: FaultPlan::Always { fault: Fault::status(500) },
        ..Default::default()
    })
    .await
    .unwrap();
    let budget = Budget { limit_micros: 1_000_000, period: Period::Day };
    let layer =
        TokenAccountingLayer::new(AccountingConfig { default_budget: Some(budget), ..Default::default() });
    let svc = layer.layer(http(&mock));
    let res = svc.oneshot(req(JSON, None)).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.budgets().balance(&Key::from("-")), Some((0, 0)));
    assert!(layer.ledger().entries().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_mid_stream_is_still_charged() {
    let latency = llm_tower_mock::Latency {
        headers: std::time::Duration::ZERO,
        per_token: std::time::Duration::from_millis(100),
    };
    let mock = MockServer::start(MockConfig { latency, ..Default::default() }).await.unwrap();
    let budget = Budget { limit_micros: 1_000_000, period: Period::Day };
    let layer =
        TokenAccountingLayer::new(AccountingConfig { default_budget: Some(budget), ..Default::default() });
    let svc = layer.layer(http(&mock));
    let res = svc.oneshot(req(STREAM, None)).await.unwrap();
    let mut body = Box::pin(res.into_body());
    body.as_mut().frame().await.unwrap().unwrap();
    drop(body);
    let estimate = layer.ledger().entries()[0].total.cost_micros;
    assert!(estimate > 0, "charged, not released");
    assert_eq!(layer.budgets().balance(&Key::from("-")), Some((estimate, 0)));
}

#[tokio::test]
async fn a_provider_that_reports_no_usage_is_charged_the_counted_text() {
    use llm_tower_tokens::{count_input, counter_for};
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // Not asking for usage: the mock, like many OpenAI-compatible servers, then sends none.
    let layer =
        TokenAccountingLayer::new(AccountingConfig { inject_stream_usage: false, ..Default::default() });
    let svc = layer.layer(http(&mock));
    let res = svc.oneshot(req(STREAM, Some("t"))).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let stream = String::from_utf8(body.to_vec()).unwrap();
    assert!(!stream.contains("\"usage\":{"), "the mock sent no usage:\n{stream}");
    // What the caller saw, counted independently.
    let mut text = String::new();
    for line in stream.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert!(!text.is_empty());
    let output = u64::from(counter_for("gpt-4o").count_text(&text));
    let info = RequestInfo::parse(llm_tower_core::Api::ChatCompletions, STREAM.as_bytes()).unwrap();
    let input = u64::from(count_input(&info, STREAM.as_bytes()));
    let e = &layer.ledger().entries()[0];
    assert_eq!((e.total.input_tokens, e.total.output_tokens), (input, output));
    let usage = Usage { input, output, ..Default::default() };
    assert_eq!(e.total.cost_micros, ModelInfo::lookup("gpt-4o").prices.cost_micros(&usage));
    // The mock's own count of its reply (16 tokens) agrees with ours to within a token or two.
    assert!(output.abs_diff(16) <= 2, "counted {output} for {text:?}");
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_after_the_request_was_sent_is_charged_the_estimate() {
    // The upstream takes 2 s to answer; the caller leaves after 1 s. The
    // provider has the request and will likely bill it: the reservation is
    // kept as spend (not released at 0).
    let latency = llm_tower_mock::Latency {
        headers: std::time::Duration::from_secs(2),
        per_token: std::time::Duration::ZERO,
    };
    let mock = MockServer::start(MockConfig { latency, ..Default::default() }).await.unwrap();
    let budget = Budget { limit_micros: 1_000_000, period: Period::Day };
    let layer =
        TokenAccountingLayer::new(AccountingConfig { default_budget: Some(budget), ..Default::default() });
    let svc = layer.layer(http(&mock));
    let call = svc.oneshot(req(JSON, Some("acme")));
    assert!(tokio::time::timeout(std::time::Duration::from_secs(1), call).await.is_err());
    assert_eq!(mock.stats().llm_requests, 1, "the request reached the upstream");
    let info = RequestInfo::parse(llm_tower_core::Api::ChatCompletions, JSON.as_bytes()).unwrap();
    let input = u64::from(llm_tower_tokens::count_input(&info, JSON.as_bytes()));
    let estimate =
        ModelInfo::lookup("gpt-4o").prices.cost_micros(&Usage { input, output: 100, ..Default::default() });
    assert_eq!(layer.budgets().balance(&Key::from("acme")), Some((estimate, 0)));
    let e = &layer.ledger().entries()[0];
    assert_eq!((e.total.requests, e.total.input_tokens, e.total.output_tokens), (1, input, 100));
    assert_eq!(e.total.cost_micros, estimate);
}
