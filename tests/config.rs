//! One stack configuration, three serde formats, the same stack.

use http_body_util::BodyExt;
use llm_tower::config::StackConfig;
use tower::ServiceExt;

const YAML: &str = r#"
providers:
  - name: mock
    kind: mock
    models: [gpt-4o-mini]
routes:
  - model: smart
    targets: [{ provider: mock, model: gpt-4o-mini }]
    strategy: round_robin
cache:
  strategy: aggressive
"#;

#[tokio::test]
async fn yaml_json_and_toml_build_the_same_stack() {
    let yaml: StackConfig = serde_yaml::from_str(YAML).unwrap();
    let json = StackConfig::from_json(
        &serde_json::to_string(&serde_yaml::from_str::<serde_json::Value>(YAML).unwrap()).unwrap(),
    )
    .unwrap();
    let toml = StackConfig::from_toml(
        r#"
[[providers]]
name = "mock"
kind = "mock"
models = ["gpt-4o-mini"]
[[routes]]
model = "smart"
targets = [{ provider = "mock", model = "gpt-4o-mini" }]
strategy = "round_robin"
[cache]
strategy = "aggressive"
"#,
    )
    .unwrap();
    for cfg in [yaml, json, toml] {
        let built = cfg.build().await.unwrap();
        assert_eq!(built.llm.models(), ["gpt-4o-mini", "smart"]);
        for expect in ["MISS", "HIT"] {
            let req = http::Request::post("/v1/chat/completions")
                .body(llm_tower::LlmBody::from(
                    r#"{"model":"smart","messages":[{"role":"user","content":"hi"}]}"#,
                ))
                .unwrap();
            let res = built.llm.service().oneshot(req).await.unwrap();
            assert_eq!(res.headers()["x-llm-cache"], expect);
            res.into_body().collect().await.unwrap();
        }
    }
    // Errors name the field whatever the format.
    let bad: StackConfig = serde_yaml::from_str("providers: [{name: m, kind: mock, models: []}]").unwrap();
    assert_eq!(bad.validate().unwrap_err()[0].field, "providers[0].models");
}
