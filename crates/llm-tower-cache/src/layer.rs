//! [`CacheLayer`]: the cache's state, statistics and invalidation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use moka::notification::RemovalCause;
use moka::sync::Cache;
use serde::Serialize;

use crate::entry::Entry;
use crate::key::{MEMO_ENTRY_BYTES, Memo};
use crate::service::Flight;
use crate::{CacheConfig, CacheKey, L2, Strategy};

/// A cache's counters and size.
///
/// ```
/// let layer = llm_tower_cache::CacheLayer::new(Default::default());
/// assert_eq!(layer.stats().hits, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// Answered from the cache.
    pub hits: u64,
    /// Looked up and not found (sent upstream).
    pub misses: u64,
    /// Not cacheable (strategy, `no-store`, not JSON, other endpoints).
    pub bypasses: u64,
    /// Hits served to a request that waited for an identical one in flight.
    pub coalesced: u64,
    /// `hits / (hits + misses)`, 0 when neither.
    pub hit_ratio: f64,
    /// Answers stored.
    pub stored: u64,
    /// Answers not stored (errors, cut streams, too large, truncated).
    pub not_stored: u64,
    /// Entries pushed out by the byte bound.
    pub evictions: u64,
    /// Entries held.
    pub entries: u64,
    /// Bytes held (bodies as stored plus bookkeeping).
    pub bytes: u64,
    /// Tokens the hits did not spend upstream.
    pub tokens_saved: u64,
    /// Their cost in micro-dollars (when the request carried its model's prices).
    pub cost_saved_micros: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) bypasses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) not_stored: AtomicU64,
    pub(crate) evictions: Arc<AtomicU64>,
    pub(crate) tokens_saved: AtomicU64,
    pub(crate) cost_saved: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) cfg: CacheConfig,
    /// Hashed with foldhash (a multiply per key, per-cache random seed)
    /// rather than SipHash: the keys are xxh3 outputs already, and moka
    /// hashes each one again on every lookup, insert, sketch update and
    /// table rehash: under SipHash a quarter of a miss's samples; the stack
    /// bench's `cache_miss` went from 11.3 µs to 6.5 and 8.0 µs (two runs).
    pub(crate) cache: Cache<CacheKey, Arc<Entry>, foldhash::fast::RandomState>,
    pub(crate) l2: Option<Arc<dyn L2>>,
    /// Misses in flight: requests for the same key wait for the first.
    pub(crate) flights: Mutex<HashMap<CacheKey, Flight, foldhash::fast::RandomState>>,
    /// Numbers the flights (a flight's guard removes its own entry only).
    pub(crate) next_flight: AtomicU64,
    pub(crate) memo: Memo,
    pub(crate) counters: Counters,
    /// `llm_tower_cache_requests_total{result}` handles (hit, miss,
    /// bypass), taken from the recorder at the first request: the metrics
    /// registry's lookup (a hash of name and labels, a shard's read lock)
    /// is paid three times per cache, not once per request.
    pub(crate) results: [std::sync::OnceLock<metrics::Counter>; 3],
}

/// An exact-match response cache for LLM calls.
///
/// - **Keys** are a 128-bit canonical hash of the request (see
///   [`CacheKey`]): JSON key order, whitespace and number forms do not
///   matter; ignored fields and `stream` do not count; entries are scoped by
///   a [`KeyFn`](llm_tower_core::KeyFn) (the tenant by default).
/// - **Which requests** is the [`Strategy`]. Per request, `cache-control:
///   no-cache` skips the lookup and refreshes the entry, `no-store` bypasses
///   the cache, `cache-control: max-age=N` or `x-llm-cache-ttl: N` accepts
///   only entries up to N s old and stores with TTL N (capped at `max_ttl`).
///   Responses carry `x-llm-cache: HIT | MISS | BYPASS`, and `age` on hits.
/// - **What is stored**: complete 2xx answers only: never an error, a stream
///   that was cut or carried an error event, a body over `max_entry_bytes`,
///   or (by default) an answer cut at `max_tokens`.
/// - **Streams** pass to the caller live while being recorded. A chat
///   completion stored from a stream is served as JSON to a plain request and
///   the other way round; a stream is replayed with its usage.
/// - **Single flight**: identical concurrent misses make one upstream call;
///   the others are served from its answer, or go alone if it is not stored.
/// - TTLs run on tokio time; entries are bounded by bytes (`max_bytes`).
/// - Hits carry core's `ServedBy::cache()` so accounting above prices them
///   at 0, and count the tokens and cost they saved.
///
/// ```
/// use llm_tower_cache::{CacheConfig, CacheLayer, Strategy};
/// let cache = CacheLayer::new(CacheConfig::default().strategy(Strategy::Conservative));
/// let stack = tower::ServiceBuilder::new().layer(cache.clone());
/// # let _ = stack;
/// assert_eq!(cache.stats().entries, 0);
/// ```
///
/// # Reads and writes
///
/// - Reads the request's `Arc<RequestInfo>` (parsing it once when no layer
///   above did), its tenant for the scope, `cache-control` / `x-llm-cache` /
///   `x-llm-cache-ttl`, and the model's `Prices` in the extensions (set by
///   accounting above) for the savings figures.
/// - Writes `x-llm-cache: HIT | MISS | BYPASS` (and `age` on hits) and, on a
///   hit, core's `ServedBy` `cache` (accounting above records it at cost 0).
/// - Records a 200 miss as its body passes (an `LlmResponseBody` observer)
///   and stores it only when the body ends complete and clean: a body dropped
///   or broken stores nothing.
#[derive(Clone)]
pub struct CacheLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer").field("config", &self.shared.cfg).finish()
    }
}

impl CacheLayer {
    /// A cache with `cfg`.
    pub fn new(cfg: CacheConfig) -> Self {
        let counters = Counters::default();
        let evictions = counters.evictions.clone();
        // The memo of raw bodies takes at most a sixteenth of the bound;
        // entries get the rest, weighed with moka's own per-entry cost.
        let memo = Memo::with_capacity((cfg.max_bytes / 16 / (2 * MEMO_ENTRY_BYTES as u64)) as usize);
        let cache = Cache::builder()
            .max_capacity(cfg.max_bytes.saturating_sub(memo.max_bytes()))
            .weigher(|_: &CacheKey, e: &Arc<Entry>| e.weight())
            // moka's clock only reclaims memory; freshness is decided on tokio
            // time, per entry (`Entry::fresh`). One TTL for all (the longest a
            // request may ask) keeps moka on its write-order queue; a per-entry
            // expiry put every insert on its timer wheel, a quarter of a miss's
            // cost. A stale entry is never served and still counts against the
            // byte bound until evicted, replaced or `max_ttl` old.
            .time_to_live(cfg.max_ttl)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        let shared = Shared {
            cfg,
            cache,
            l2: None,
            flights: Mutex::default(),
            next_flight: AtomicU64::new(0),
            memo,
            counters,
            results: Default::default(),
        };
        CacheLayer { shared: Arc::new(shared) }
    }

    /// Adds a second level (e.g. shared by instances). Call before cloning.
    ///
    /// # Panics
    /// If the layer was already cloned.
    pub fn with_l2(self, l2: impl L2) -> Self {
        match Arc::try_unwrap(self.shared) {
            Ok(mut s) => {
                s.l2 = Some(Arc::new(l2));
                CacheLayer { shared: Arc::new(s) }
            }
            Err(_) => panic!("CacheLayer::with_l2 must be called before the layer is cloned"),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.cfg
    }

    /// A snapshot of the counters. Entry and byte counts are moka's, which
    /// settle after [`sync`](Self::sync).
    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (hits, misses) = (get(&c.hits), get(&c.misses));
        CacheStats {
            hits,
            misses,
            bypasses: get(&c.bypasses),
            coalesced: get(&c.coalesced),
            hit_ratio: if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            stored: get(&c.stored),
            not_stored: get(&c.not_stored),
            evictions: get(&c.evictions),
            entries: self.shared.cache.entry_count(),
            bytes: self.shared.cache.weighted_size(),
            tokens_saved: get(&c.tokens_saved),
            cost_saved_micros: get(&c.cost_saved),
        }
    }

    /// Runs moka's pending maintenance (evictions, counts) now.
    pub async fn sync(&self) {
        self.shared.cache.run_pending_tasks();
    }

    /// Removes one entry (here and in the second level).
    pub async fn invalidate(&self, key: CacheKey) {
        self.shared.cache.invalidate(&key);
        if let Some(l2) = &self.shared.l2 {
            log_l2(l2.invalidate(key).await);
        }
    }

    /// Removes every entry of a scope (a tenant).
    pub async fn invalidate_scope(&self, scope: &str) {
        let s: Arc<str> = scope.into();
        let pred = move |_: &CacheKey, e: &Arc<Entry>| e.scope.as_str() == &*s;
        if self.shared.cache.invalidate_entries_if(pred).is_err() {
            // Closures are enabled at build; unreachable, but never leave entries behind.
            self.shared.cache.invalidate_all();
        }
        self.sync().await;
        if let Some(l2) = &self.shared.l2 {
            log_l2(l2.invalidate_scope(scope).await);
        }
    }

    /// Removes every entry.
    pub async fn invalidate_all(&self) {
        self.shared.cache.invalidate_all();
        self.sync().await;
        if let Some(l2) = &self.shared.l2 {
            log_l2(l2.clear().await);
        }
    }

    /// Whether the strategy caches anything.
    pub fn enabled(&self) -> bool {
        !matches!(self.shared.cfg.strategy, Strategy::Disabled)
    }
}

pub(crate) fn log_l2<T>(r: Result<T, llm_tower_core::BoxError>) -> Option<T> {
    r.map_err(|e| tracing::warn!(error = %e, "cache second level failed")).ok()
}

impl<S> tower::Layer<S> for CacheLayer {
    type Service = crate::Cache<S>;

    fn layer(&self, inner: S) -> crate::Cache<S> {
        crate::Cache { inner, shared: self.shared.clone() }
    }
}
