//! The limiter's shared state: its counters, the limits of the layer and of
//! the keys that have their own, the store and the concurrency semaphores.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use llm_tower_core::Key;
use llm_tower_core::bounded::BoundedMap;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::limits::{Limits, Rates};
use crate::service::base_demand;
use crate::settle::*;
use crate::store::{Demand, KeyStats};

/// A rate limiter's counters.
///
/// ```
/// let layer = llm_tower_ratelimit::RateLimitLayer::new(Default::default());
/// assert_eq!(layer.stats().allowed, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Requests let through.
    pub allowed: u64,
    /// Requests refused.
    pub rejected: u64,
    /// Requests that waited before going through.
    pub waited: u64,
    /// Total time spent waiting, ms.
    pub wait_ms: u64,
    /// Per key (from the store).
    pub keys: Vec<KeyStats>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) allowed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) waited: AtomicU64,
    pub(crate) wait_ns: AtomicU64,
}

/// One set of limits: the layer's own, or a key's own (`key_limits`).
pub(crate) struct Profile {
    pub(crate) limits: Limits,
    pub(crate) rates: Rates,
    /// Every request's demand but for its tokens.
    pub(crate) demand: Demand,
    /// No limit at all: requests pass without touching the store.
    pub(crate) unlimited: bool,
    /// The `x-ratelimit-limit-*` values.
    pub(crate) limit_values: LimitValues,
    pub(crate) counters: Counters,
}

impl Profile {
    pub(crate) fn new(limits: Limits) -> Self {
        let rates = limits.rates();
        // Adaptive limits hold a key on the provider's hints even without a
        // limit of their own: only a layer with nothing to do may be skipped.
        let unlimited = limits.max_concurrent.is_none()
            && !limits.adaptive
            && [rates.rpm, rates.rpd, rates.tpm, rates.interval].iter().all(Option::is_none);
        Profile {
            demand: base_demand(&limits),
            limit_values: LimitValues::of(&rates),
            rates,
            unlimited,
            limits,
            counters: Counters::default(),
        }
    }

    /// The demand of a request estimated at `tokens`.
    pub(crate) fn demand(&self, tokens: u64) -> Demand {
        Demand { tokens, ..self.demand }
    }
}

pub(crate) struct Shared<St> {
    /// The layer's own limits.
    pub(crate) default: Profile,
    /// Keys with limits of their own (few, named: tenants of a config, or
    /// virtual keys an admin creates at run time).
    pub(crate) per_key: std::sync::RwLock<std::collections::HashMap<Box<str>, Arc<Profile>>>,
    /// Whether `per_key` has any entry (the common case, none, takes no lock).
    pub(crate) any_key: std::sync::atomic::AtomicBool,
    pub(crate) store: St,
    /// Concurrency semaphores per key, made at the first limit that needs one.
    pub(crate) semaphores: std::sync::OnceLock<BoundedMap<Key, Arc<Semaphore>>>,
}

impl<St> Shared<St> {
    /// The limits of `key`: its own, else the layer's.
    pub(crate) fn profile_of(&self, key: &Key) -> Option<Arc<Profile>> {
        if !self.any_key.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.per_key_map().get(key.as_str()).cloned()
    }

    /// The per-key profiles (a poisoned lock still holds a consistent map:
    /// every write replaces whole entries).
    pub(crate) fn per_key_map(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<Box<str>, Arc<Profile>>> {
        self.per_key.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn edit_keys<T>(
        &self,
        f: impl FnOnce(&mut std::collections::HashMap<Box<str>, Arc<Profile>>) -> T,
    ) -> T {
        let mut map = self.per_key.write().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut map);
        self.any_key.store(!map.is_empty(), std::sync::atomic::Ordering::Release);
        out
    }

    pub(crate) fn semaphore(&self, key: &Key, max: u32) -> Arc<Semaphore> {
        let max = max as usize;
        let map = self.semaphores.get_or_init(|| BoundedMap::new(10_000, Arc::new(Semaphore::new(max))));
        // Bounded (core's BoundedMap): only a semaphore nobody holds may go
        // (a permit or a waiter holds a clone of its Arc); when all are
        // busy, new keys share the overflow semaphore.
        let (sem, _) = map.with(
            key.as_str(),
            || (key.clone(), Arc::new(Semaphore::new(max))),
            |s| Arc::strong_count(s) == 1,
            |s| s.clone(),
        );
        sem
    }
}
