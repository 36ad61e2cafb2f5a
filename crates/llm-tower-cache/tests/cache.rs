//! CacheLayer around LlmHttpService against the mock (which counts upstream calls).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use llm_tower_cache::{CacheConfig, CacheKey, CacheLayer, L2, L2Future, Strategy};
use llm_tower_core::{LlmBody, RequestInfo, ServedBy};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Fault, FaultPlan, Latency, MockConfig, MockServer};
use serde_json::Value;
use tower::{Layer, Service, ServiceExt};

const DET: &str = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hello"}]}"#;
const HOT: &str = r#"{"model":"gpt-4o-mini","temperature":1,"messages":[{"role":"user","content":"hello"}]}"#;

fn http(mock: &MockServer) -> LlmHttpService {
    LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap())
}

fn req(body: &str) -> Request<LlmBody> {
    Request::post("/v1/chat/completions").body(LlmBody::from(body.to_owned())).unwrap()
}

fn stream_of(body: &str, include_usage: bool) -> String {
    let opts = if include_usage {
        r#""stream":true,"stream_options":{"include_usage":true},"#
    } else {
        r#""stream":true,"#
    };
    body.replacen('{', &format!("{{{opts}"), 1)
}

fn as_tenant(mut r: Request<LlmBody>, tenant: &str) -> Request<LlmBody> {
    let mut info = RequestInfo::ensure(&mut r).unwrap().as_ref().clone();
    info.tenant = Some(tenant.into());
    r.extensions_mut().insert(Arc::new(info));
    r
}

type Svc = llm_tower_cache::Cache<LlmHttpService>;

/// The cache status and the whole body.
async fn send(svc: &Svc, r: Request<LlmBody>) -> (StatusCode, String, Bytes) {
    let res = svc.clone().oneshot(r).await.unwrap();
    let status = res.status();
    let cache = res.headers().get("x-llm-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, cache, body)
}

async fn setup(cfg: MockConfig, cache: CacheConfig) -> (MockServer, CacheLayer, Svc) {
    let mock = MockServer::start(cfg).await.unwrap();
    let layer = CacheLayer::new(cache);
    let svc = layer.layer(http(&mock));
    (mock, layer, svc)
}

fn upstream(mock: &MockServer) -> u64 {
    mock.stats().llm_requests
}

/// The generated text and usage of a chat answer, JSON or SSE.
fn content_and_usage(body: &[u8]) -> (String, Value) {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return (v["choices"][0]["message"]["content"].as_str().unwrap_or("").to_owned(), v["usage"].clone());
    }
    let (mut text, mut usage) = (String::new(), Value::Null);
    for line in std::str::from_utf8(body).unwrap().lines() {
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
        text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
    }
    (text, usage)
}

#[tokio::test]
async fn conservative_caches_only_deterministic_requests() {
    let (mock, layer, svc) = setup(MockConfig::default(), CacheConfig::default()).await;
    assert_eq!(send(&svc, req(DET)).await.1, "MISS");
    let (status, cache, body) = send(&svc, req(DET)).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "HIT"));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["object"], "chat.completion");
    let seeded = HOT.replace("\"temperature\":1", "\"seed\":7");
    assert_eq!(send(&svc, req(&seeded)).await.1, "MISS");
    assert_eq!(send(&svc, req(&seeded)).await.1, "HIT");
    for _ in 0..2 {
        assert_eq!(send(&svc, req(HOT)).await.1, "BYPASS", "temperature 1 varies on purpose");
    }
    let embed = Request::post("/v1/embeddings")
        .body(LlmBody::from(r#"{"model":"text-embedding-3-small","input":"x"}"#))
        .unwrap();
    assert_eq!(send(&svc, embed).await.1, "MISS", "embeddings are deterministic");
    assert_eq!(upstream(&mock), 5);
    let s = layer.stats();
    assert_eq!((s.hits, s.misses, s.bypasses, s.stored), (2, 3, 2, 3));
    assert!((s.hit_ratio - 0.4).abs() < 1e-9);
}

#[tokio::test]
async fn aggressive_selective_and_disabled() {
    let (mock, _, svc) =
        setup(MockConfig::default(), CacheConfig::default().strategy(Strategy::Aggressive)).await;
    assert_eq!(send(&svc, req(HOT)).await.1, "MISS");
    assert_eq!(send(&svc, req(HOT)).await.1, "HIT");
    assert_eq!(upstream(&mock), 1);

    let only_mini: llm_tower_cache::Predicate =
        Arc::new(|r: &Request<LlmBody>| RequestInfo::get(r).is_some_and(|i| i.model.ends_with("-mini")));
    let (mock, _, svc) =
        setup(MockConfig::default(), CacheConfig::default().strategy(Strategy::Selective(Some(only_mini))))
            .await;
    assert_eq!(send(&svc, req(HOT)).await.1, "MISS");
    assert_eq!(send(&svc, req(HOT)).await.1, "HIT", "the predicate accepts it");
    let other = HOT.replace("gpt-4o-mini", "gpt-4o");
    assert_eq!(send(&svc, req(&other)).await.1, "BYPASS");
    let opt_in = || {
        let mut r = req(&other);
        r.headers_mut().insert("x-llm-cache", "on".parse().unwrap());
        r
    };
    assert_eq!(send(&svc, opt_in()).await.1, "MISS");
    assert_eq!(send(&svc, opt_in()).await.1, "HIT", "the header opts in");
    assert_eq!(upstream(&mock), 3);

    let (mock, layer, svc) =
        setup(MockConfig::default(), CacheConfig::default().strategy(Strategy::Disabled)).await;
    assert!(!layer.enabled());
    assert_eq!(send(&svc, req(DET)).await.1, "BYPASS");
    assert_eq!(send(&svc, req(DET)).await.1, "BYPASS");
    assert_eq!(upstream(&mock), 2);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_on_tokio_time_and_requests_set_their_ttl() {
    let cfg = CacheConfig::default().ttl(Duration::from_secs(60));
    let (mock, _, svc) = setup(MockConfig::default(), cfg).await;
    assert_eq!(send(&svc, req(DET)).await.1, "MISS");
    tokio::time::advance(Duration::from_secs(59)).await;
    let res = svc.clone().oneshot(req(DET)).await.unwrap();
    assert_eq!(
        (res.headers()["x-llm-cache"].to_str().unwrap(), res.headers()["age"].to_str().unwrap()),
        ("HIT", "59")
    );
    assert_eq!(ServedBy::of(&res), Some("cache"));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(send(&svc, req(DET)).await.1, "MISS", "expired after 60 s");
    assert_eq!(upstream(&mock), 2);

    // A request's own TTL.
    let short = || {
        let mut r = req(&DET.replace("hello", "short"));
        r.headers_mut().insert("x-llm-cache-ttl", "5".parse().unwrap());
        r
    };
    assert_eq!(send(&svc, short()).await.1, "MISS");
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(send(&svc, short()).await.1, "HIT");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(send(&svc, short()).await.1, "MISS");

    // max-age: accepts only entries that young (and stores with that TTL).
    let body = DET.replace("hello", "aged");
    assert_eq!(send(&svc, req(&body)).await.1, "MISS");
    tokio::time::advance(Duration::from_secs(10)).await;
    let mut r = req(&body);
    r.headers_mut().insert("cache-control", "max-age=5".parse().unwrap());
    assert_eq!(send(&svc, r).await.1, "MISS", "10 s is older than 5 s");
    assert_eq!(send(&svc, req(&body)).await.1, "HIT");
}

#[tokio::test]
async fn no_cache_refreshes_and_no_store_bypasses() {
    let (mock, layer, svc) = setup(MockConfig::default(), CacheConfig::default()).await;
    let with = |cc: &str| {
        let mut r = req(DET);
        r.headers_mut().insert("cache-control", cc.parse().unwrap());
        r
    };
    assert_eq!(send(&svc, with("no-store")).await.1, "BYPASS");
    assert_eq!(send(&svc, req(DET)).await.1, "MISS", "no-store stored nothing");
    assert_eq!(send(&svc, with("no-cache")).await.1, "MISS", "no-cache skips the lookup");
    assert_eq!(send(&svc, req(DET)).await.1, "HIT");
    assert_eq!(upstream(&mock), 3);
    assert_eq!(layer.stats().stored, 2, "no-cache refreshed the entry");
}

#[tokio::test]
async fn errors_cut_streams_and_truncated_answers_are_never_stored() {
    let faults = FaultPlan::Script {
        faults: vec![Fault::status(500), Fault::StreamCut { after_tokens: 3 }, Fault::MalformedJson],
    };
    let (mock, layer, svc) = setup(MockConfig { faults, ..Default::default() }, CacheConfig::default()).await;
    let (status, cache, _) = send(&svc, req(DET)).await;
    assert_eq!((status, cache.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "MISS"));
    // A stream cut mid-way: the caller gets what came, nothing is stored.
    let res = svc.clone().oneshot(req(&stream_of(DET, true))).await.unwrap();
    let _ = res.into_body().collect().await;
    // Broken JSON never reaches the cache as an answer: the HTTP service
    // turns it into an error.
    let err = svc.clone().oneshot(req(DET)).await.unwrap_err();
    assert!(err.is::<llm_tower_core::BadResponse>(), "{err:?}");
    assert_eq!(send(&svc, req(DET)).await.1, "MISS", "nothing stored so far");
    assert_eq!(send(&svc, req(DET)).await.1, "HIT");
    assert_eq!(layer.stats().not_stored, 2);

    // finish_reason "length": not stored by default, stored when asked.
    let cut = DET.replace("\"temperature\":0", "\"temperature\":0,\"max_tokens\":4");
    for expect in ["MISS", "MISS"] {
        assert_eq!(send(&svc, req(&cut)).await.1, expect);
    }
    assert_eq!(upstream(&mock), 6);
    let (mock, layer, svc) = setup(MockConfig::default(), CacheConfig::default().store_truncated(true)).await;
    assert_eq!(send(&svc, req(&cut)).await.1, "MISS");
    assert_eq!(send(&svc, req(&cut)).await.1, "HIT");
    assert_eq!(layer.stats().stored, 1);
    assert_eq!(upstream(&mock), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_misses_make_one_upstream_call() {
    let latency = Latency { headers: Duration::from_millis(200), per_token: Duration::from_millis(10) };
    let (mock, layer, svc) =
        setup(MockConfig { latency, ..Default::default() }, CacheConfig::default()).await;
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let svc = svc.clone();
            let body = if i % 2 == 0 { DET.to_owned() } else { stream_of(DET, true) };
            tokio::spawn(async move { send(&svc, req(&body)).await })
        })
        .collect();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    let mut contents = std::collections::HashSet::new();
    for t in tasks {
        let (status, cache, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        *by_status.entry(cache).or_default() += 1;
        contents.insert(content_and_usage(&body));
    }
    assert_eq!(upstream(&mock), 1, "one upstream call for 100 identical requests");
    assert_eq!(by_status, HashMap::from([("MISS".to_owned(), 1), ("HIT".to_owned(), 99)]));
    assert_eq!(contents.len(), 1, "JSON and streamed callers got the same answer and usage");
    assert_eq!(layer.stats().coalesced, 99);
    // Woken when the first answer is stored, not at the end of the wait
    // (60 s by default): the mock's answer takes 200 ms and a few tokens.
    assert!(start.elapsed() < Duration::from_secs(5), "the waiters were not woken: {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn when_the_first_of_a_flight_fails_the_others_go_alone() {
    // The first answer starts (200) and is cut after 3 tokens: not stored.
    let latency = Latency { headers: Duration::ZERO, per_token: Duration::from_millis(10) };
    let faults = FaultPlan::Script { faults: vec![Fault::StreamCut { after_tokens: 3 }] };
    let (mock, layer, svc) =
        setup(MockConfig { latency, faults, ..Default::default() }, CacheConfig::default()).await;
    let first = tokio::spawn({
        let svc = svc.clone();
        async move {
            svc.clone()
                .oneshot(req(&stream_of(DET, true)))
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .is_err()
        }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let rest: Vec<_> = (0..4)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, req(DET)).await })
        })
        .collect();
    assert!(first.await.unwrap(), "the first caller saw its stream break");
    for t in rest {
        let (status, cache, body) = t.await.unwrap();
        assert_eq!((status, cache.as_str()), (StatusCode::OK, "MISS"), "a waiter got an answer of its own");
        assert!(!content_and_usage(&body).0.is_empty());
    }
    assert_eq!(upstream(&mock), 5);
    assert_eq!(layer.stats().coalesced, 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_leader_never_finishes_goes_alone_after_the_wait() {
    let latency = Latency { headers: Duration::ZERO, per_token: Duration::from_millis(10) };
    let cfg = CacheConfig::default().max_coalesce_wait(Duration::from_secs(5));
    let (mock, _, svc) = setup(MockConfig { latency, ..Default::default() }, cfg).await;
    // The first caller takes the head and never reads the body.
    let held = svc.clone().oneshot(req(DET)).await.unwrap();
    let start = tokio::time::Instant::now();
    let (status, cache, _) = send(&svc, req(DET)).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "MISS"));
    assert!(start.elapsed() >= Duration::from_secs(5), "it waited for the first: {:?}", start.elapsed());
    assert_eq!(upstream(&mock), 2);
    drop(held);
}

#[tokio::test]
async fn streams_replay_with_the_same_content_and_usage_and_convert_both_ways() {
    let (mock, _, svc) = setup(MockConfig::default(), CacheConfig::default()).await;
    // Stored from a stream...
    let (_, cache, original) = send(&svc, req(&stream_of(DET, true))).await;
    assert_eq!(cache, "MISS");
    let (_, cache, replay) = send(&svc, req(&stream_of(DET, true))).await;
    assert_eq!(cache, "HIT");
    assert_eq!(replay, original, "replayed byte for byte");
    let (text, usage) = content_and_usage(&original);
    assert!(!text.is_empty() && usage["completion_tokens"].as_u64() > Some(0));
    // ...served as JSON to a plain request...
    let (_, cache, json) = send(&svc, req(DET)).await;
    assert_eq!(cache, "HIT");
    assert_eq!(content_and_usage(&json), (text.clone(), usage.clone()));
    // ...and without the usage chunk to a stream that did not ask for it.
    let (_, _, quiet) = send(&svc, req(&stream_of(DET, false))).await;
    assert_eq!(content_and_usage(&quiet), (text, Value::Null));
    assert!(std::str::from_utf8(&quiet).unwrap().ends_with("data: [DONE]\n\n"));

    // Stored from JSON, replayed as a stream with usage.
    let other = DET.replace("hello", "other");
    let (_, _, json) = send(&svc, req(&other)).await;
    let (_, cache, sse) = send(&svc, req(&stream_of(&other, true))).await;
    assert_eq!(cache, "HIT");
    assert_eq!(content_and_usage(&sse), content_and_usage(&json));
    assert_eq!(upstream(&mock), 2);
}

#[tokio::test]
async fn tenants_never_see_each_others_entries() {
    let (mock, layer, svc) = setup(MockConfig::default(), CacheConfig::default()).await;
    assert_eq!(send(&svc, as_tenant(req(DET), "acme")).await.1, "MISS");
    assert_eq!(send(&svc, as_tenant(req(DET), "globex")).await.1, "MISS");
    assert_eq!(send(&svc, as_tenant(req(DET), "acme")).await.1, "HIT");
    assert_eq!(upstream(&mock), 2);
    layer.invalidate_scope("acme").await;
    assert_eq!(send(&svc, as_tenant(req(DET), "acme")).await.1, "MISS", "acme's entries are gone");
    assert_eq!(send(&svc, as_tenant(req(DET), "globex")).await.1, "HIT", "globex's are not");
    let key = CacheKey::of("globex", "/v1/chat/completions", DET.as_bytes(), &layer.config().ignored_fields)
        .unwrap();
    layer.invalidate(key).await;
    assert_eq!(send(&svc, as_tenant(req(DET), "globex")).await.1, "MISS", "invalidated by key");
    layer.invalidate_all().await;
    assert_eq!(layer.stats().entries, 0);
}

#[tokio::test]
async fn large_answers_are_compressed_and_served_whole() {
    let cfg = CacheConfig::default().compress_above(Some(256));
    let (_mock, layer, svc) = setup(MockConfig { reply_tokens: 400, ..Default::default() }, cfg).await;
    let (_, _, original) = send(&svc, req(DET)).await;
    assert!(original.len() > 1024);
    let (_, cache, hit) = send(&svc, req(DET)).await;
    assert_eq!((cache.as_str(), &hit), ("HIT", &original));
    layer.sync().await;
    assert!(layer.stats().bytes < original.len() as u64, "stored compressed: {:?}", layer.stats());
}

#[tokio::test]
async fn the_byte_bound_holds_under_a_flood_of_distinct_entries() {
    let max = 64 << 10;
    let (_mock, layer, svc) =
        setup(MockConfig::default(), CacheConfig::default().max_bytes(max).compress_above(None)).await;
    for i in 0..300 {
        send(&svc, req(&DET.replace("hello", &format!("hello {i}")))).await;
        if i % 50 == 0 {
            layer.sync().await;
            assert!(layer.stats().bytes <= max, "{:?}", layer.stats());
        }
    }
    layer.sync().await;
    let s = layer.stats();
    assert!(s.bytes <= max && s.bytes > max / 2, "{s:?}");
    assert!(s.evictions > 0 && s.entries < 300, "{s:?}");
}

#[tokio::test]
async fn accounting_above_the_cache_prices_hits_at_zero_and_the_cache_counts_savings() {
    use llm_tower_tokens::{AccountingConfig, TokenAccountingLayer};
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let cache = CacheLayer::new(CacheConfig::default());
    let accounting = TokenAccountingLayer::new(AccountingConfig::default());
    let svc =
        tower::ServiceBuilder::new().layer(accounting.clone()).layer(cache.clone()).service(http(&mock));
    for _ in 0..3 {
        let res = svc.clone().oneshot(req(DET)).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let lines = accounting.ledger().entries();
    let by = |p: &str| lines.iter().find(|e| e.provider == p).unwrap().total;
    let (paid, free) = (by("mock"), by("cache"));
    assert_eq!((paid.requests, free.requests), (1, 2));
    assert!(paid.cost_micros > 0);
    assert_eq!(free.cost_micros, 0, "hits cost nothing");
    assert_eq!(free.output_tokens, 2 * paid.output_tokens, "and still report their usage");
    let s = cache.stats();
    assert_eq!(s.tokens_saved, 2 * (paid.input_tokens + paid.output_tokens));
    assert_eq!(s.cost_saved_micros, 2 * paid.cost_micros);
}

/// A second level shared by two layers, as two gateway instances would share Redis.
#[derive(Clone, Default)]
struct SharedTier(Arc<Mutex<HashMap<CacheKey, (String, Bytes)>>>);

impl L2 for SharedTier {
    fn get(&self, key: CacheKey) -> L2Future<Option<Bytes>> {
        let v = self.0.lock().unwrap().get(&key).map(|(_, b)| b.clone());
        Box::pin(async move { Ok(v) })
    }
    fn put(&self, key: CacheKey, scope: &str, value: Bytes, _ttl: Duration) -> L2Future<()> {
        self.0.lock().unwrap().insert(key, (scope.to_owned(), value));
        Box::pin(async { Ok(()) })
    }
    fn invalidate(&self, key: CacheKey) -> L2Future<()> {
        self.0.lock().unwrap().remove(&key);
        Box::pin(async { Ok(()) })
    }
    fn invalidate_scope(&self, scope: &str) -> L2Future<()> {
        self.0.lock().unwrap().retain(|_, (s, _)| s != scope);
        Box::pin(async { Ok(()) })
    }
    fn clear(&self) -> L2Future<()> {
        self.0.lock().unwrap().clear();
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_second_level_serves_what_another_instance_stored() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let tier = SharedTier::default();
    let a = CacheLayer::new(CacheConfig::default()).with_l2(tier.clone()).layer(http(&mock));
    let b = CacheLayer::new(CacheConfig::default()).with_l2(tier.clone()).layer(http(&mock));
    let (_, cache, stored) = send(&a, req(DET)).await;
    assert_eq!(cache, "MISS");
    // The write to the second level is in a task: let it run.
    while tier.0.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let (_, cache, served) = send(&b, req(DET)).await;
    assert_eq!((cache.as_str(), &served), ("HIT", &stored));
    assert_eq!(send(&b, req(DET)).await.1, "HIT", "now in b's memory too");
    assert_eq!(upstream(&mock), 1);
}

#[tokio::test]
async fn not_json_and_other_endpoints_pass_through() {
    let (mock, layer, svc) =
        setup(MockConfig::default(), CacheConfig::default().strategy(Strategy::Aggressive)).await;
    let (status, cache, _) = send(&svc, req("{not json")).await;
    assert_eq!((status, cache.as_str()), (StatusCode::BAD_REQUEST, "BYPASS"));
    let models = Request::get("/v1/models").body(LlmBody::empty()).unwrap();
    let res: Response<_> = svc.clone().oneshot(models).await.unwrap();
    assert_eq!(res.headers()["x-llm-cache"], "BYPASS");
    assert_eq!(layer.stats().bypasses, 2);
    assert_eq!(upstream(&mock), 1);
    // poll_ready is forwarded.
    let mut s = svc.clone();
    std::future::poll_fn(|cx| s.poll_ready(cx)).await.unwrap();
}

#[tokio::test]
async fn a_200_whose_json_is_broken_is_never_stored_whatever_is_below() {
    // Not the HTTP service (which refuses such an answer itself): a service
    // that answers 200 with JSON cut in the middle, then a whole answer.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = calls.clone();
    let inner = tower::service_fn(move |_req: Request<LlmBody>| {
        let call = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let body = if call == 0 { r#"{"choices":[{"message""# } else { r#"{"choices":[]}"# };
            let res =
                Response::builder().header("content-type", "application/json").body(LlmBody::from(body));
            Ok::<_, tower::BoxError>(res.unwrap())
        }
    });
    let layer = CacheLayer::new(CacheConfig::default());
    let svc = layer.layer(inner);
    for expect in ["MISS", "MISS", "HIT"] {
        let res = svc.clone().oneshot(req(DET)).await.unwrap();
        assert_eq!(res.headers()["x-llm-cache"], expect);
        res.into_body().collect().await.unwrap();
    }
    assert_eq!((layer.stats().not_stored, layer.stats().stored), (1, 1), "the broken one was read, not kept");
}
