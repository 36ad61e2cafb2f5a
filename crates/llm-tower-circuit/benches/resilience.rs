//! Breaker and retry overhead vs tower-resilience, in the same run.
//!
//! `cargo bench -p llm-tower-circuit`. Every variant wraps the same ready
//! no-op HTTP service; layers are built once, outside the timed loop; each
//! iteration is `ready().await` + `call(request.clone()).await`.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Empty;
use llm_tower_circuit::{CircuitBreakerLayer, CircuitConfig};
use llm_tower_core::{KeyFn, LlmBody, RequestInfo};
use llm_tower_retry::{RetryLayer, RetryPolicy};
use tower::{Layer, Service, ServiceExt};

type Req = Request<LlmBody>;
type Res = Response<Empty<Bytes>>;

fn noop()
-> impl Service<Req, Response = Res, Error = Infallible, Future = std::future::Ready<Result<Res, Infallible>>>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|_r: Req| std::future::ready(Ok(Response::new(Empty::new()))))
}

fn request(model: &str) -> Req {
    let mut r = Request::post("/v1/chat/completions")
        .body(LlmBody::from(format!(r#"{{"model":"{model}","messages":[]}}"#)))
        .unwrap();
    RequestInfo::ensure(&mut r).unwrap();
    r
}

/// Times `iters` sequential calls on one current-thread runtime.
fn run<S>(rt: &tokio::runtime::Runtime, svc: &S, reqs: &[Req], iters: u64) -> Duration
where
    S: Service<Req> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut svc = svc.clone();
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            let req = reqs[(i as usize) % reqs.len()].clone();
            let res = svc.ready().await.unwrap().call(req).await;
            black_box(res.is_ok());
        }
        start.elapsed()
    })
}

/// Times `iters` calls split over two threads sharing the service's state.
fn run_contended<S>(svc: &S, reqs: &[Req], iters: u64) -> Duration
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (svc, reqs) = (svc.clone(), reqs.to_vec());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                run(&rt, &svc, &reqs, iters / 2);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn breaker(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let one = [request("gpt-4o-mini")];
    let many: Vec<Req> = (0..1000).map(|i| request(&format!("model-{i}"))).collect();

    let ours = CircuitBreakerLayer::new(CircuitConfig::default()).layer(noop());
    let ours_keyed = CircuitBreakerLayer::new(CircuitConfig::default()).keyed(KeyFn::model()).layer(noop());
    let theirs = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .unwrap()
        .layer(noop());

    let mut g = c.benchmark_group("breaker_closed");
    g.bench_function("llm_tower", |b| b.iter_custom(|n| run(&rt, &ours, &one, n)));
    g.bench_function("tower_resilience", |b| b.iter_custom(|n| run(&rt, &theirs, &one, n)));
    g.bench_function("llm_tower_keyed_1000_keys", |b| b.iter_custom(|n| run(&rt, &ours_keyed, &many, n)));
    g.finish();

    let mut g = c.benchmark_group("breaker_closed_2_threads");
    g.bench_function("llm_tower", |b| b.iter_custom(|n| run_contended(&ours, &one, n)));
    g.bench_function("tower_resilience", |b| b.iter_custom(|n| run_contended(&theirs, &one, n)));
    g.bench_function("llm_tower_keyed_1000_keys", |b| {
        b.iter_custom(|n| run_contended(&ours_keyed, &many, n))
    });
    g.finish();
}

fn retry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let one = [request("gpt-4o-mini")];
    let ours = RetryLayer::new(RetryPolicy::default()).layer(noop());
    // tower-resilience's retry has no budget by default: compare like with like too.
    let ours_no_budget = RetryLayer::new(RetryPolicy::default().budget(None)).layer(noop());
    let theirs = tower_resilience::retry::RetryLayer::<Req, Res, Infallible>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(500))
        .build()
        .layer(noop());

    let mut g = c.benchmark_group("retry_no_failure");
    g.bench_function("llm_tower", |b| b.iter_custom(|n| run(&rt, &ours, &one, n)));
    g.bench_function("llm_tower_no_budget", |b| b.iter_custom(|n| run(&rt, &ours_no_budget, &one, n)));
    g.bench_function("tower_resilience", |b| b.iter_custom(|n| run(&rt, &theirs, &one, n)));
    g.bench_function("bare_noop", |b| b.iter_custom(|n| run(&rt, &noop(), &one, n)));
    g.finish();

    let mut g = c.benchmark_group("retry_no_failure_2_threads");
    g.bench_function("llm_tower", |b| b.iter_custom(|n| run_contended(&ours, &one, n)));
    g.bench_function("llm_tower_no_budget", |b| b.iter_custom(|n| run_contended(&ours_no_budget, &one, n)));
    g.bench_function("tower_resilience", |b| b.iter_custom(|n| run_contended(&theirs, &one, n)));
    g.finish();
}

criterion_group!(benches, breaker, retry);
criterion_main!(benches);
