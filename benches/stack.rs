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

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use llm_tower::LlmService;
use llm_tower::cache::CacheConfig;
use llm_tower::tokens::{AccountingConfig, Preflight};

mod support;
use support::{allocations, limits, one, stacks};

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
            let (per, bytes) = allocations(&rt, &svc, stream, unique, warmup, env_count("REQUESTS", 10_000));
            let kind = if stream { "sse" } else { "json" };
            println!("allocations per request: {kind}/{name}: {per:.1} ({bytes} bytes)");
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
