//! What each layer, and the whole stack, costs per request in process: every
//! configuration over the same no-op inner service (a fixed JSON answer or a
//! short event stream with usage), measured in one run, plus the heap
//! allocations per request (a counting allocator). `all_cache_*` are the
//! five response-side layers; `stack_cache_miss` is the whole stack in
//! `LlmStack`'s order (token count, accounting, cache, tenant limiter,
//! failover, then the provider's retry, breaker and limiter).
//!
//! A second group runs a whole `LlmStack` (every layer on: token count,
//! accounting, cache missing, tenant limits, failover, retry, breaker,
//! limits) against the bare `LlmHttpService`, both over the in-process mock
//! on loopback, in the same run.
//!
//! `cargo bench --bench stack`. The allocation counts are printed first, one
//! line per configuration, each with the bytes those allocations asked for
//! (a growth counts its new size less its old); criterion's times follow. `ALLOCS_ONLY=1` prints
//! the counts and stops; `STACKS=cache_miss,all_cache_miss` limits the
//! counts to those configurations and `KINDS=json` (or `sse`) to one kind
//! of answer, `REQUESTS=n` the requests counted (10,000) after `WARMUP=n`
//! uncounted ones (1,000) (for a profiler run such as `valgrind --tool=callgrind`:
//! `scripts/stack-instructions.sh` counts instructions per request that way).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::BodyExt;
use llm_tower::cache::{CacheConfig, CacheLayer};
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig};
use llm_tower::core::KeyFn;
use llm_tower::failover::{Backend, Failover, Route, Target};
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::retry::{RetryLayer, RetryPolicy};
use llm_tower::tokens::{AccountingConfig, Preflight, TokenAccountingLayer, TokenCountLayer};
use llm_tower::{LlmBody, LlmResponseBody, LlmService};
use tower::{Layer, ServiceBuilder, ServiceExt};

/// Counts every allocation of the process, and the bytes asked for.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // A growth asks for a new block of the new size (a shrink for none).
        BYTES.fetch_add(new_size.saturating_sub(layout.size()) as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const JSON_ANSWER: &str = r#"{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":8,"total_tokens":17}}"#;

fn sse_answer() -> Bytes {
    let mut s = String::new();
    for t in ["Hello", " there", ",", " friend"] {
        s.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    s.push_str(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    );
    s.push_str("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\ndata: [DONE]\n\n");
    Bytes::from(s)
}

/// The no-op upstream: answers at once, JSON or a stream as asked.
fn noop() -> LlmService {
    let sse = sse_answer();
    LlmService::new(tower::service_fn(move |req: Request<LlmBody>| {
        let stream = llm_tower::RequestInfo::get(&req).is_some_and(|i| i.stream)
            || req.body().as_bytes().windows(13).any(|w| w == br#""stream":true"#);
        let res = if stream {
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(LlmResponseBody::full(sse.clone()))
        } else {
            Response::builder()
                .header("content-type", "application/json")
                .body(LlmResponseBody::full(Bytes::from_static(JSON_ANSWER.as_bytes())))
        };
        std::future::ready(Ok::<_, tower::BoxError>(res.expect("valid response")))
    }))
}

fn limits() -> Limits {
    Limits::default().requests_per_minute(1_000_000_000).tokens_per_minute(u32::MAX)
}

fn accounting() -> TokenAccountingLayer {
    TokenAccountingLayer::new(AccountingConfig::default())
}

/// A failover of one backend serving the bench's model (as `LlmStack` builds
/// for one provider).
fn failover<S>(backend: S) -> Failover<S>
where
    S: tower::Service<Request<LlmBody>, Response = Response<LlmResponseBody>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<tower::BoxError>,
{
    Failover::builder()
        .backend(Backend::new("noop", backend))
        .route("gpt-4o-mini", Route::new([Target::new("noop")]))
        .build()
        .expect("one backend, one route")
}

/// The whole stack in `LlmStack`'s order over the no-op: token count,
/// accounting, the cache (missing), the tenant limiter, the failover, and
/// the provider's retry, breaker and limiter.
fn whole() -> LlmService {
    let provider = RetryLayer::new(RetryPolicy::default()).layer(
        CircuitBreakerLayer::new(CircuitConfig::default()).layer(RateLimitLayer::new(limits()).layer(noop())),
    );
    LlmService::new(
        ServiceBuilder::new()
            .layer(TokenCountLayer::new(Preflight::Enforce))
            .layer(accounting())
            .layer(CacheLayer::new(CacheConfig::default()))
            .layer(RateLimitLayer::new(limits()).keyed(KeyFn::tenant()))
            .service(failover(provider)),
    )
}

/// Every configuration measured, by name.
fn stacks() -> Vec<(&'static str, LlmService)> {
    let all = || {
        LlmService::new(
            ServiceBuilder::new()
                .layer(accounting())
                .layer(CacheLayer::new(CacheConfig::default()))
                .layer(RetryLayer::new(RetryPolicy::default()))
                .layer(CircuitBreakerLayer::new(CircuitConfig::default()))
                .layer(RateLimitLayer::new(limits()))
                .service(noop()),
        )
    };
    vec![
        ("noop", noop()),
        ("retry", LlmService::new(RetryLayer::new(RetryPolicy::default()).layer(noop()))),
        ("breaker", LlmService::new(CircuitBreakerLayer::new(CircuitConfig::default()).layer(noop()))),
        ("limiter", LlmService::new(RateLimitLayer::new(limits()).layer(noop()))),
        ("accounting", LlmService::new(accounting().layer(noop()))),
        ("cache_miss", LlmService::new(CacheLayer::new(CacheConfig::default()).layer(noop()))),
        ("all_cache_miss", all()),
        ("all_cache_hit", all()),
        ("count", LlmService::new(TokenCountLayer::new(Preflight::Enforce).layer(noop()))),
        ("failover", LlmService::new(failover(noop()))),
        ("stack_cache_miss", whole()),
    ]
}

fn request(i: u64, stream: bool, unique: bool) -> Request<LlmBody> {
    let n = if unique { i } else { 0 };
    let stream = if stream { r#""stream":true,"# } else { "" };
    let body = format!(
        r#"{{"model":"gpt-4o-mini",{stream}"temperature":0,"max_tokens":16,"messages":[{{"role":"user","content":"question {n}"}}]}}"#
    );
    Request::post("/v1/chat/completions").body(LlmBody::from(body)).expect("valid request")
}

async fn one(svc: &LlmService, i: u64, stream: bool, unique: bool) -> usize {
    let res = svc.clone().oneshot(request(i, stream, unique)).await.expect("answered");
    res.into_body().collect().await.expect("whole body").to_bytes().len()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    // Allocations per request, steady state (after a warm-up).
    let only = std::env::var("STACKS").ok();
    let chosen = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|n| n == name));
    let kinds = std::env::var("KINDS").ok();
    let kind_chosen = |stream: bool| {
        let kind = if stream { "sse" } else { "json" };
        kinds.as_deref().is_none_or(|k| k.split(',').any(|n| n == kind))
    };
    let env_count =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    let warmup = env_count("WARMUP", 1_000);
    for stream in [false, true] {
        for (name, svc) in stacks() {
            if !chosen(name) || !kind_chosen(stream) {
                continue;
            }
            let unique = name != "all_cache_hit";
            rt.block_on(async {
                for i in 0..warmup {
                    one(&svc, i, stream, unique).await;
                }
                let before = (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
                let n = env_count("REQUESTS", 10_000);
                for i in warmup..warmup + n {
                    one(&svc, i, stream, unique).await;
                }
                let per = (ALLOCATIONS.load(Ordering::Relaxed) - before.0) as f64 / n as f64;
                let bytes = (BYTES.load(Ordering::Relaxed) - before.1) / n;
                let kind = if stream { "sse" } else { "json" };
                println!("allocations per request: {kind}/{name}: {per:.1} ({bytes} bytes)");
            });
        }
    }
    if std::env::var_os("ALLOCS_ONLY").is_some() {
        return;
    }
    let mut group = c.benchmark_group("stack");
    for stream in [false, true] {
        for (name, svc) in stacks() {
            let unique = name != "all_cache_hit";
            let kind = if stream { "sse" } else { "json" };
            // Past the warm-up's prompts: a miss stays a miss.
            let mut i = 1_000_000u64;
            group.bench_function(format!("{kind}/{name}"), |b| {
                b.iter(|| {
                    i += 1;
                    black_box(rt.block_on(one(&svc, i, stream, unique)))
                })
            });
        }
    }
    group.finish();
    over_the_mock(c);
}

/// The whole `LlmStack` and the bare HTTP service over the same mock.
fn over_the_mock(c: &mut Criterion) {
    use llm_tower::ratelimit::Limits;
    use llm_tower::{LlmHttpService, LlmStack, Provider, ProviderSpec, TenantLimits};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (mock, bare, stack) = rt.block_on(async {
        let mock = llm_tower::mock::MockServer::start(Default::default()).await.expect("mock starts");
        let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).expect("url");
        let bare = LlmService::new(LlmHttpService::new(provider.clone()));
        let llm = LlmStack::new()
            .provider(ProviderSpec::new(provider).models(["gpt-4o-mini"]).limits(limits()))
            .count_tokens(Preflight::Enforce)
            .accounting(AccountingConfig::default())
            .cache(CacheConfig::default())
            .tenant_limits(TenantLimits::new(Some(limits())).tenant("vip", Limits::default()))
            .build()
            .expect("stack builds");
        (mock, bare, llm.service())
    });
    let mut group = c.benchmark_group("over_mock");
    for stream in [false, true] {
        for (name, svc) in [("bare_http", &bare), ("llm_stack_cache_miss", &stack)] {
            let kind = if stream { "sse" } else { "json" };
            let mut i = 0u64;
            group.bench_function(format!("{kind}/{name}"), |b| {
                b.iter(|| {
                    i += 1;
                    black_box(rt.block_on(one(svc, i, stream, true)))
                })
            });
        }
    }
    group.finish();
    drop(mock);
}

criterion_group!(benches, bench);
criterion_main!(benches);
