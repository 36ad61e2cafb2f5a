//! LlmHttpService round trip vs a bare hyper-util client, same mock, same run.
//!
//! `cargo bench -p llm-tower-http`. Both clients send the same chat request to
//! the same in-process mock over loopback and read the whole response; the
//! difference is what LlmHttpService adds (URL rewrite, header hygiene,
//! credentials, phase timeouts, stats).
//!
//! To keep scheduler noise out of a comparison of a few microseconds, the
//! client and mock share one single-threaded runtime, and the two clients
//! alternate inside every measurement: each benchmark times only its own
//! client's requests while the other client's requests run in between,
//! untimed, so both see the same conditions.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use llm_tower_core::{LlmBody, Secret};
use llm_tower_http::{LlmHttpService, Provider, Timeouts};
use llm_tower_mock::{MockConfig, MockServer};
use tower::ServiceExt;

const BODY: &str =
    r#"{"model":"gpt-4o-mini","max_tokens":8,"messages":[{"role":"user","content":"benchmark me"}]}"#;

struct Clients {
    url: String,
    bare: Client<HttpConnector, Full<Bytes>>,
    ours: LlmHttpService,
    untimed: LlmHttpService,
}

#[derive(Clone, Copy)]
enum Which {
    Bare,
    Ours,
    Untimed,
}

impl Clients {
    async fn one(&self, which: Which) {
        let res = match which {
            Which::Bare => {
                let req = http::Request::post(&self.url)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-bench")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                    .unwrap();
                let res = self.bare.request(req).await.unwrap();
                assert_eq!(res.status(), 200);
                res.into_body().collect().await.unwrap();
                return;
            }
            Which::Ours => self.ours.clone(),
            Which::Untimed => self.untimed.clone(),
        };
        let req = http::Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(LlmBody::from(BODY))
            .unwrap();
        let res = res.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
}

fn roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (_mock, clients) = rt.block_on(async {
        let mock = MockServer::start(MockConfig { log_capacity: 1, ..Default::default() }).await.unwrap();
        let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))
            .unwrap()
            .with_key(Secret::new("sk-bench"));
        let ours = LlmHttpService::new(provider);
        let untimed = ours.clone().timeouts(Timeouts::none());
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let bare = Client::builder(TokioExecutor::new()).build(http);
        let url = format!("{}/v1/chat/completions", mock.url());
        (mock, Clients { url, bare, ours, untimed })
    });

    let mut g = c.benchmark_group("roundtrip_json_chat");
    g.measurement_time(Duration::from_secs(10));
    for (name, timed, other) in [
        ("bare_hyper_util", Which::Bare, Which::Ours),
        ("llm_http_service", Which::Ours, Which::Bare),
        ("llm_http_service_no_timeouts", Which::Untimed, Which::Bare),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        clients.one(timed).await;
                        spent += start.elapsed();
                        clients.one(other).await;
                    }
                    spent
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
