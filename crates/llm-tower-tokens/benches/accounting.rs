//! What the accounting layer costs per response: a 4 KiB JSON answer and a long
//! SSE stream, read through the layer vs read bare, from the same in-memory
//! bodies. `cargo bench -p llm-tower-tokens --bench accounting`.

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use llm_tower_core::LlmBody;
use llm_tower_tokens::{AccountingConfig, TokenAccountingLayer};
use tower::{Layer, Service, ServiceExt};

/// A response body that yields prebuilt chunks, as an upstream would.
struct Chunks(std::vec::IntoIter<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
    }
}

fn json_body() -> Vec<Bytes> {
    let content = "word ".repeat(760);
    let v = serde_json::json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 760, "total_tokens": 860}});
    vec![Bytes::from(serde_json::to_vec(&v).unwrap())]
}

fn sse_body(chunks: usize) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = (0..chunks)
        .map(|i| {
            Bytes::from(format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"finish_reason\":null}}]}}\n\n"
            ))
        })
        .collect();
    out.push(Bytes::from_static(
        b"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2000,\"total_tokens\":2010}}\n\n",
    ));
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn accounting(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let layer = TokenAccountingLayer::new(AccountingConfig::default());
    let req = Request::post("/v1/chat/completions")
        .body(LlmBody::from(
            r#"{"model":"gpt-4o","max_tokens":2000,"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
    for (name, frames, content_type) in [
        ("json_4KiB", json_body(), "application/json"),
        ("sse_2000_chunks", sse_body(2000), "text/event-stream"),
    ] {
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        let upstream = tower::service_fn(move |_r: Request<LlmBody>| {
            let mut res = Response::new(Chunks(frames.clone().into_iter()));
            res.headers_mut().insert("content-type", content_type.parse().unwrap());
            std::future::ready(Ok::<_, Infallible>(res))
        });
        let accounted = layer.layer(upstream.clone());
        let mut g = c.benchmark_group(format!("accounting/{name}"));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function("bare", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let res = upstream.clone().oneshot(req.clone()).await.unwrap();
                        black_box(res.into_body().collect().await.unwrap());
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_function("with_accounting", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut svc = accounted.clone();
                    let start = Instant::now();
                    for _ in 0..iters {
                        let res = svc.ready().await.unwrap().call(req.clone()).await.unwrap();
                        black_box(res.into_body().collect().await.unwrap());
                    }
                    start.elapsed()
                })
            })
        });
        g.finish();
    }
}

criterion_group!(benches, accounting);
criterion_main!(benches);
