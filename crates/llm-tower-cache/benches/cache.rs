//! Cache hit latency (key hashing included) for 1 KiB and 32 KiB answers,
//! against tower-resilience's cache layer on the same workload and key
//! function, and canonical key hashing throughput. `cargo bench -p llm-tower-cache`.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use llm_tower_cache::key::canonical_hash;
use llm_tower_cache::{CacheConfig, CacheKey, CacheLayer, Strategy};
use llm_tower_core::LlmBody;
use tower::{Layer, Service, ServiceExt};

type Req = Request<LlmBody>;
type Res = Response<Full<Bytes>>;

/// A chat request of about 600 bytes (system prompt, two turns, temperature 0).
fn request_body() -> String {
    let system = "You are a careful assistant. Answer in one short paragraph and cite nothing.";
    format!(
        r#"{{"model":"gpt-4o-mini","temperature":0,"max_tokens":256,"user":"u-42","messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"What is a circuit breaker in a distributed system, and when should it open?"}},{{"role":"assistant","content":"It stops calls to a failing dependency."}},{{"role":"user","content":"And how does it recover?"}}]}}"#
    )
}

/// A chat completion of about `size` bytes.
fn answer(size: usize) -> Bytes {
    let head = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":""#;
    let tail = r#""},"finish_reason":"stop"}],"usage":{"prompt_tokens":60,"completion_tokens":200,"total_tokens":260}}"#;
    let words = "the breaker half-opens after a cool-down and lets a probe through ";
    let text: String = words.chars().cycle().take(size.saturating_sub(head.len() + tail.len())).collect();
    Bytes::from(format!("{head}{text}{tail}"))
}

fn upstream(
    body: Bytes,
) -> impl Service<Req, Response = Res, Error = Infallible, Future = std::future::Ready<Result<Res, Infallible>>>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |_r: Req| {
        let mut res = Response::new(Full::new(body.clone()));
        res.headers_mut().insert("content-type", "application/json".parse().unwrap());
        std::future::ready(Ok(res))
    })
}

fn run<S>(rt: &tokio::runtime::Runtime, svc: &S, req: &Req, iters: u64) -> Duration
where
    S: Service<Req> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut svc = svc.clone();
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let res = svc.ready().await.unwrap().call(req.clone()).await;
            black_box(res.is_ok());
        }
        start.elapsed()
    })
}

fn hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let body = request_body();
    let req = Request::post("/v1/chat/completions").body(LlmBody::from(body.clone())).unwrap();
    let ignored: Vec<String> = CacheConfig::default().ignored_fields;
    let mut g = c.benchmark_group("cache_hit");
    // The last case stores the answer lz4-compressed (threshold 16 KiB).
    for (size, name, compress) in
        [(1 << 10, "1KiB", None), (32 << 10, "32KiB", None), (32 << 10, "32KiB_lz4", Some(16 << 10))]
    {
        let cfg = CacheConfig::default().strategy(Strategy::Aggressive);
        let cfg = if compress.is_some() { cfg.compress_above(compress) } else { cfg };
        let ours = CacheLayer::new(cfg).layer(upstream(answer(size)));
        // Prime: one miss, its body read to the end so that it is stored.
        rt.block_on(async {
            let res = ours.clone().oneshot(req.clone()).await.unwrap();
            res.into_body().collect().await.unwrap();
            let res = ours.clone().oneshot(req.clone()).await.unwrap();
            assert_eq!(res.headers()["x-llm-cache"], "HIT");
        });
        let key_ignored = ignored.clone();
        let theirs = tower_resilience::cache::CacheLayer::builder()
            .max_size(10_000)
            .ttl(Duration::from_secs(3600))
            .key_extractor(move |r: &Req| {
                CacheKey::of("-", "/v1/chat/completions", r.body().as_bytes(), &key_ignored).unwrap()
            })
            .build()
            .unwrap()
            .layer(upstream(answer(size)));
        rt.block_on(async { theirs.clone().oneshot(req.clone()).await.unwrap() });
        // Theirs again, keyed by the raw bytes (not canonical: a reordered
        // request would miss): the floor of their layer.
        let theirs_raw = tower_resilience::cache::CacheLayer::builder()
            .max_size(10_000)
            .ttl(Duration::from_secs(3600))
            .key_extractor(|r: &Req| xxhash_rust::xxh3::xxh3_128(r.body().as_bytes()))
            .build()
            .unwrap()
            .layer(upstream(answer(size)));
        rt.block_on(async { theirs_raw.clone().oneshot(req.clone()).await.unwrap() });
        g.bench_function(BenchmarkId::new("llm_tower", name), |b| {
            b.iter_custom(|n| run(&rt, &ours, &req, n))
        });
        if compress.is_some() {
            continue;
        }
        g.bench_function(BenchmarkId::new("tower_resilience", name), |b| {
            b.iter_custom(|n| run(&rt, &theirs, &req, n))
        });
        g.bench_function(BenchmarkId::new("tower_resilience_raw_key", name), |b| {
            b.iter_custom(|n| run(&rt, &theirs_raw, &req, n))
        });
        g.bench_function(BenchmarkId::new("no_cache_upstream_noop", name), |b| {
            b.iter_custom(|n| run(&rt, &upstream(answer(size)), &req, n))
        });
    }
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache_key");
    let small = request_body();
    let long_turn = "Tell me more about it, with every detail you know. ".repeat(600);
    let large = small.replace("And how does it recover?", &long_turn);
    for (name, body) in [("600B", small), ("32KiB", large)] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(BenchmarkId::new("canonical_hash", name), |b| {
            b.iter(|| black_box(canonical_hash(body.as_bytes(), &[], true).unwrap()))
        });
        g.bench_function(BenchmarkId::new("serde_json_value_parse", name), |b| {
            b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(body.as_bytes()).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, hits, hashing);
criterion_main!(benches);
