//! Counters reach the `metrics` facade. Its own binary: the recorder is global.

use http::Request;
use http_body_util::BodyExt;
use llm_tower_core::{LlmBody, Usage};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{MockConfig, MockServer};
use llm_tower_tokens::{AccountingConfig, ModelInfo, TokenAccountingLayer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn tokens_and_cost_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let http =
        LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap());
    let svc = TokenAccountingLayer::new(AccountingConfig::default()).layer(http);
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#;
    let res =
        svc.oneshot(Request::post("/v1/chat/completions").body(LlmBody::from(body)).unwrap()).await.unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let input = v["usage"]["prompt_tokens"].as_u64().unwrap();

    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        let labels: Vec<String> = k.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        if let DebugValue::Counter(n) = value {
            seen.insert(format!("{}{{{}}}", k.name(), labels.join(",")), n);
        }
    }
    assert_eq!(seen.get("llm_tower_tokens_total{model=gpt-4o,provider=mock,kind=input}"), Some(&input));
    assert_eq!(seen.get("llm_tower_tokens_total{model=gpt-4o,provider=mock,kind=output}"), Some(&16));
    let cost =
        ModelInfo::lookup("gpt-4o").prices.cost_micros(&Usage { input, output: 16, ..Default::default() });
    assert_eq!(seen.get("llm_tower_cost_microusd_total{model=gpt-4o,provider=mock}"), Some(&cost));
}
