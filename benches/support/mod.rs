//! What the stack bench (`benches/stack.rs`) and the allocation budget test
//! (`tests/allocations.rs`) share: a counting allocator, the no-op upstream,
//! every configuration measured, and a counted run of requests. Included by
//! both with `mod support` (the test by path), so both count the same stacks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
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
pub struct Counting;

pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
pub static BYTES: AtomicU64 = AtomicU64::new(0);

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

pub const JSON_ANSWER: &str = r#"{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":8,"total_tokens":17}}"#;

pub fn sse_answer() -> Bytes {
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
pub fn noop() -> LlmService {
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

pub fn limits() -> Limits {
    Limits::default().requests_per_minute(1_000_000_000).tokens_per_minute(u32::MAX)
}

pub fn accounting() -> TokenAccountingLayer {
    TokenAccountingLayer::new(AccountingConfig::default())
}

/// A failover of one backend serving the bench's model (as `LlmStack` builds
/// for one provider).
pub fn failover<S>(backend: S) -> Failover<S>
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
pub fn whole() -> LlmService {
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
pub fn stacks() -> Vec<(&'static str, LlmService)> {
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

pub fn request(i: u64, stream: bool, unique: bool) -> Request<LlmBody> {
    let n = if unique { i } else { 0 };
    let stream = if stream { r#""stream":true,"# } else { "" };
    let body = format!(
        r#"{{"model":"gpt-4o-mini",{stream}"temperature":0,"max_tokens":16,"messages":[{{"role":"user","content":"question {n}"}}]}}"#
    );
    Request::post("/v1/chat/completions").body(LlmBody::from(body)).expect("valid request")
}

pub async fn one(svc: &LlmService, i: u64, stream: bool, unique: bool) -> usize {
    let res = svc.clone().oneshot(request(i, stream, unique)).await.expect("answered");
    res.into_body().collect().await.expect("whole body").to_bytes().len()
}

/// Heap allocations and bytes asked for per request through `svc`, after
/// `warmup` uncounted requests (numbered from 0) and over the `n` after them,
/// on `rt` (a current-thread runtime: the whole request runs on this thread).
pub fn allocations(
    rt: &tokio::runtime::Runtime,
    svc: &LlmService,
    stream: bool,
    unique: bool,
    warmup: u64,
    n: u64,
) -> (f64, u64) {
    rt.block_on(async {
        for i in 0..warmup {
            one(svc, i, stream, unique).await;
        }
        let before = (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
        for i in warmup..warmup + n {
            one(svc, i, stream, unique).await;
        }
        let per = (ALLOCATIONS.load(Ordering::Relaxed) - before.0) as f64 / n as f64;
        (per, (BYTES.load(Ordering::Relaxed) - before.1) / n)
    })
}
