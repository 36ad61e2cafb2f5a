//! LlmHttpService round trip vs a bare hyper-util client, same mock, same run.
//!
//! `cargo bench -p llm-tower-http`. Both clients send the same chat request to
//! the same in-process mock over loopback and read the whole response; the
//! difference is what LlmHttpService adds (URL rewrite, header hygiene,
//! credentials, phase timers, stats).

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llm_tower_core::{LlmBody, Secret};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{MockConfig, MockServer};
use tower::ServiceExt;

const BODY: &str = r#"{"model":"gpt-4o-mini","max_tokens":8,"messages":[{"role":"user","content":"benchmark me"}]}"#;

fn roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mock, ours, bare) = rt.block_on(async {
        let mock = MockServer::start(MockConfig { log_capacity: 1, ..Default::default() }).await.unwrap();
        let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap().with_key(Secret::new("sk-bench"));
        let ours = LlmHttpService::new(provider);
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        let bare: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(http);
        (mock, ours, bare)
    });
    let url = format!("{}/v1/chat/completions", mock.url());

    let mut g = c.benchmark_group("roundtrip_json_chat");
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("bare_hyper_util", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let req = http::Request::post(&url)
                        .header("content-type", "application/json")
                        .header("authorization", "Bearer sk-bench")
                        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                        .unwrap();
                    let res = bare.request(req).await.unwrap();
                    assert_eq!(res.status(), 200);
                    res.into_body().collect().await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("llm_http_service", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let req = http::Request::post("/v1/chat/completions")
                        .header("content-type", "application/json")
                        .body(LlmBody::from(BODY))
                        .unwrap();
                    let res = ours.clone().oneshot(req).await.unwrap();
                    assert_eq!(res.status(), 200);
                    res.into_body().collect().await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    drop(mock);
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
