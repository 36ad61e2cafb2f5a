//! Keyed breakers (sharded, bounded, pruned), transitions, the handle and stats.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use llm_tower_core::Key;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::breaker::{Breaker, CircuitState, Transition};
use crate::config::CircuitConfig;

const SHARDS: usize = 16;

type Shard = RwLock<HashMap<Key, Arc<Breaker>>>;

/// A user-supplied check run while a circuit is open; `true` closes it early.
pub type ProbeFn = Arc<dyn Fn(Key) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

pub(crate) struct Registry {
    pub(crate) cfg: CircuitConfig,
    base: Instant,
    /// The breaker of an unkeyed layer (no map lookup on the call path).
    pub(crate) single: Arc<Breaker>,
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    len: AtomicUsize,
    tx: watch::Sender<Option<Transition>>,
    pub(crate) probe: Option<(Duration, ProbeFn)>,
    keyed: bool,
}

impl Registry {
    pub(crate) fn new(cfg: CircuitConfig, probe: Option<(Duration, ProbeFn)>, keyed: bool) -> Self {
        let base = Instant::now();
        Registry {
            cfg,
            base,
            single: Arc::new(Breaker::new(Key::from_static("*"), &cfg, base)),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
            len: AtomicUsize::new(0),
            tx: watch::channel(None).0,
            probe,
            keyed,
        }
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The breaker for `key`, created on first use.
    pub(crate) fn get(&self, key: Key, now: Instant) -> Arc<Breaker> {
        let shard = self.shard(key.as_str());
        if let Some(b) = shard.read().unwrap_or_else(|e| e.into_inner()).get(key.as_str()) {
            return b.clone();
        }
        let created = {
            let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = map.get(key.as_str()) {
                return b.clone();
            }
            let b = Arc::new(Breaker::new(key.clone(), &self.cfg, self.base));
            map.insert(key, b.clone());
            b
        };
        if self.len.fetch_add(1, AcqRel) + 1 > self.cfg.max_keys {
            self.prune(now);
        }
        created
    }

    fn find(&self, key: &str) -> Option<Arc<Breaker>> {
        if !self.keyed {
            return (key == self.single.key.as_str()).then(|| self.single.clone());
        }
        self.shard(key).read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    fn all(&self) -> Vec<Arc<Breaker>> {
        let mut out: Vec<Arc<Breaker>> = Vec::new();
        for s in self.shards.iter() {
            out.extend(s.read().unwrap_or_else(|e| e.into_inner()).values().cloned());
        }
        if !self.keyed {
            out.push(self.single.clone());
        }
        out
    }

    /// Drops idle closed breakers; if still over the bound, the least recently used closed ones.
    fn prune(&self, now: Instant) {
        let now_ns = now.saturating_duration_since(self.base).as_nanos() as u64;
        let ttl = self.cfg.idle_ttl.as_nanos() as u64;
        let prunable = |b: &Breaker| b.state() == CircuitState::Closed;
        let mut removed = 0;
        for s in self.shards.iter() {
            let mut map = s.write().unwrap_or_else(|e| e.into_inner());
            let before = map.len();
            map.retain(|_, b| !(prunable(b) && now_ns.saturating_sub(b.last_used()) >= ttl));
            removed += before - map.len();
        }
        let len = self.len.fetch_sub(removed, AcqRel) - removed;
        if len > self.cfg.max_keys {
            let mut candidates: Vec<(u64, Key)> =
                self.all().iter().filter(|b| prunable(b)).map(|b| (b.last_used(), b.key.clone())).collect();
            candidates.sort_unstable_by_key(|(t, _)| *t);
            for (_, key) in candidates.into_iter().take(len - self.cfg.max_keys) {
                if self
                    .shard(key.as_str())
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(key.as_str())
                    .is_some()
                {
                    self.len.fetch_sub(1, AcqRel);
                }
            }
        }
    }

    pub(crate) fn on_transition(self: &Arc<Self>, b: &Arc<Breaker>, from: CircuitState, to: CircuitState) {
        tracing::warn!(key = %b.key, %from, %to, "circuit breaker transition");
        metrics::counter!("llm_tower_circuit_transitions_total", "to" => to.to_string()).increment(1);
        self.tx.send_replace(Some(Transition { key: b.key.clone(), from, to, at: Instant::now() }));
        if to == CircuitState::Open {
            self.spawn_probe(b);
        }
    }

    fn spawn_probe(self: &Arc<Self>, b: &Arc<Breaker>) {
        let Some((interval, probe)) = self.probe.clone() else { return };
        if b.probing.swap(true, AcqRel) {
            return;
        }
        let (reg, b) = (self.clone(), b.clone());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            b.probing.store(false, Release);
            return;
        };
        rt.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if b.state() != CircuitState::Open {
                    break;
                }
                if probe(b.key.clone()).await {
                    tracing::info!(key = %b.key, "health probe succeeded: closing the circuit");
                    let notify = |_: &Breaker, from, to| reg.on_transition(&b, from, to);
                    if b.state() == CircuitState::Open {
                        b.force(CircuitState::Closed, Instant::now(), &notify);
                    }
                    break;
                }
            }
            b.probing.store(false, Release);
        });
    }
}

/// Operates and observes a breaker layer's circuits. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use llm_tower_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState};
/// let layer = CircuitBreakerLayer::new(CircuitConfig::default());
/// let h = layer.handle();
/// assert!(h.is_available("*"));
/// h.force_open("*");
/// assert_eq!(h.state("*"), CircuitState::ForcedOpen);
/// h.reset("*");
/// assert_eq!(h.state("*"), CircuitState::Closed);
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitHandle {
    pub(crate) reg: Arc<Registry>,
}

impl std::fmt::Debug for CircuitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitHandle").field("keys", &self.reg.len.load(Relaxed)).finish()
    }
}

impl CircuitHandle {
    fn breaker(&self, key: &str) -> Arc<Breaker> {
        self.reg.find(key).unwrap_or_else(|| self.reg.get(Key::from(key), Instant::now()))
    }

    fn apply(&self, key: &str, to: CircuitState) {
        let b = self.breaker(key);
        let reg = self.reg.clone();
        let bb = b.clone();
        b.force(to, Instant::now(), &move |_: &Breaker, from, to| reg.on_transition(&bb, from, to));
    }

    /// The state of `key`'s circuit (an elapsed open period reads as
    /// half-open; an unknown key is closed). An unkeyed layer's key is `*`.
    pub fn state(&self, key: &str) -> CircuitState {
        self.reg.find(key).map_or(CircuitState::Closed, |b| b.effective_state(Instant::now()))
    }

    /// Every known key and its state.
    pub fn states(&self) -> Vec<(Key, CircuitState)> {
        let now = Instant::now();
        let mut v: Vec<_> = self.reg.all().iter().map(|b| (b.key.clone(), b.effective_state(now))).collect();
        v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        v
    }

    /// Whether a call for `key` would be admitted now. For routing (failover
    /// skips unavailable backends without waiting).
    pub fn is_available(&self, key: &str) -> bool {
        self.reg.find(key).is_none_or(|b| b.is_available(&self.reg.cfg, Instant::now()))
    }

    /// Holds `key`'s circuit open until [`reset`](Self::reset) or [`force_closed`](Self::force_closed).
    pub fn force_open(&self, key: &str) {
        self.apply(key, CircuitState::ForcedOpen);
    }

    /// Holds `key`'s circuit closed (never trips) until [`reset`](Self::reset).
    pub fn force_closed(&self, key: &str) {
        self.apply(key, CircuitState::ForcedClosed);
    }

    /// Closes `key`'s circuit and forgets its history.
    pub fn reset(&self, key: &str) {
        self.apply(key, CircuitState::Closed);
    }

    /// The latest transition of any circuit, as a `watch` subscription.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = llm_tower_circuit::CircuitBreakerLayer::new(Default::default());
    /// let mut rx = layer.handle().subscribe();
    /// layer.handle().force_open("*");
    /// rx.changed().await.unwrap();
    /// assert_eq!(rx.borrow().as_ref().unwrap().to, llm_tower_circuit::CircuitState::ForcedOpen);
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<Option<Transition>> {
        self.reg.tx.subscribe()
    }

    /// Counters, in total and per key.
    pub fn stats(&self) -> CircuitStats {
        let now = Instant::now();
        let mut keys: Vec<KeyStats> = self
            .reg
            .all()
            .iter()
            .map(|b| KeyStats {
                key: b.key.to_string(),
                state: b.effective_state(now),
                failure_rate: b.failure_rate(now),
                calls: b.calls.load(Relaxed),
                failures: b.failures.load(Relaxed),
                slow_calls: b.slow.load(Relaxed),
                rejections: b.rejections.load(Relaxed),
                transitions: b.transitions.load(Relaxed),
                open_for_ms: b.open_remaining(now).map(|d| d.as_millis() as u64),
            })
            .collect();
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        let sum = |f: fn(&KeyStats) -> u64| keys.iter().map(f).sum();
        CircuitStats {
            calls: sum(|k| k.calls),
            failures: sum(|k| k.failures),
            slow_calls: sum(|k| k.slow_calls),
            rejections: sum(|k| k.rejections),
            transitions: sum(|k| k.transitions),
            keys,
        }
    }
}

/// A breaker layer's counters.
///
/// ```
/// let layer = llm_tower_circuit::CircuitBreakerLayer::new(Default::default());
/// assert_eq!(layer.handle().stats().calls, 0);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CircuitStats {
    /// Calls whose outcome was recorded.
    pub calls: u64,
    /// Upstream failures.
    pub failures: u64,
    /// Slow calls.
    pub slow_calls: u64,
    /// Calls refused while open.
    pub rejections: u64,
    /// State changes.
    pub transitions: u64,
    /// Per key.
    pub keys: Vec<KeyStats>,
}

/// One key's counters and state.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct KeyStats {
    /// The key.
    pub key: String,
    /// Its state.
    pub state: CircuitState,
    /// Failure rate over the current window.
    pub failure_rate: f64,
    /// Calls recorded.
    pub calls: u64,
    /// Upstream failures.
    pub failures: u64,
    /// Slow calls.
    pub slow_calls: u64,
    /// Calls refused.
    pub rejections: u64,
    /// State changes.
    pub transitions: u64,
    /// Time left open, ms.
    pub open_for_ms: Option<u64>,
}
