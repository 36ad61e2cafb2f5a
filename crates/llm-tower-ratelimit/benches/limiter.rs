//! Limiter decision overhead vs governor, and layer overhead vs tower-resilience,
//! in the same run. `cargo bench -p llm-tower-ratelimit`.

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use http::{Request, Response};
use http_body_util::Empty;
use llm_tower_core::{Key, LlmBody};
use llm_tower_ratelimit::{Demand, Limits, MemoryStore, RateLimitLayer, RateLimitStore};
use tower::{Layer, Service, ServiceExt};

/// A limit high enough never to refuse: we measure the cost of deciding.
const HUGE: u32 = 1_000_000_000;

fn decisions(c: &mut Criterion) {
    let keys: Vec<Key> = (0..10_000).map(|i| Key::from(format!("tenant-{i}"))).collect();
    let rates = Limits::default().requests_per_minute(HUGE).rates();
    let demand = Demand { requests: 1, tokens: 0, rates, max_wait: None, max_queue: 0 };
    let quota = Quota::per_minute(NonZeroU32::new(HUGE).unwrap());

    let mut g = c.benchmark_group("limiter_decision");
    // The floor under every decision: one read of tokio's clock (the store's
    // time base, so that limits can be tested on paused time).
    g.bench_function("tokio_clock_read", |b| b.iter(|| black_box(tokio::time::Instant::now())));
    let ours = MemoryStore::default();
    let one = Key::from_static("*");
    g.bench_function("llm_tower_store", |b| {
        b.iter(|| black_box(ours.reserve(&one, &demand).into_inner().is_ok()))
    });
    let direct = RateLimiter::direct(quota);
    g.bench_function("governor_direct", |b| b.iter(|| black_box(direct.check().is_ok())));
    let mut i = 0usize;
    g.bench_function("llm_tower_store_10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(ours.reserve(&keys[i], &demand).into_inner().is_ok())
        })
    });
    let keyed = RateLimiter::<Key, _, _>::keyed(quota);
    g.bench_function("governor_keyed_10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(keyed.check_key(&keys[i]).is_ok())
        })
    });
    let tpm = Limits::default().requests_per_minute(HUGE).tokens_per_minute(HUGE).rates();
    let both = Demand { tokens: 500, rates: tpm, ..demand };
    g.bench_function("llm_tower_store_rpm_and_tpm_10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(ours.reserve(&keys[i], &both).into_inner().is_ok())
        })
    });
    g.finish();
}

type Req = Request<LlmBody>;
type Res = Response<Empty<Bytes>>;

fn noop()
-> impl Service<Req, Response = Res, Error = Infallible, Future = std::future::Ready<Result<Res, Infallible>>>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|_r: Req| std::future::ready(Ok(Response::new(Empty::new()))))
}

fn run<S>(rt: &tokio::runtime::Runtime, svc: &S, iters: u64) -> Duration
where
    S: Service<Req> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut svc = svc.clone();
    let req = Request::post("/v1/chat/completions").body(LlmBody::from("{}")).unwrap();
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let res = svc.ready().await.unwrap().call(req.clone()).await;
            black_box(res.is_ok());
        }
        start.elapsed()
    })
}

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ours =
        RateLimitLayer::new(Limits::default().requests_per_minute(HUGE).emit_headers(false).adaptive(false))
            .layer(noop());
    let theirs = tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(HUGE as usize)
        .refresh_period(Duration::from_secs(1))
        .timeout_duration(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(noop());
    let mut g = c.benchmark_group("rate_limit_layer");
    g.bench_function("llm_tower", |b| b.iter_custom(|n| run(&rt, &ours, n)));
    g.bench_function("tower_resilience", |b| b.iter_custom(|n| run(&rt, &theirs, n)));
    g.bench_function("bare_noop", |b| b.iter_custom(|n| run(&rt, &noop(), n)));
    g.finish();
}

criterion_group!(benches, decisions, layers);
criterion_main!(benches);
