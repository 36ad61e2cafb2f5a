//! Keyed breakers (sharded, bounded, pruned), transitions, the handle and stats.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::time::Duration;

use llm_tower_core::Key;
use llm_tower_core::bounded::{BoundedMap, Placement};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::breaker::{Breaker, CircuitState, Transition};
use crate::config::CircuitConfig;

/// A user-supplied check run while a circuit is open; `true` closes it early.
pub type ProbeFn = Arc<dyn Fn(Key) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// The key of the breaker that new keys share once the bound is full of
/// breakers that may not be dropped (open, half-open, or recently used).
pub const OVERFLOW_KEY: &str = "(overflow)";

/// The key of an unkeyed layer's one breaker (what [`CircuitHandle::state`]
/// and `CircuitOpen` name it).
pub const UNKEYED: &str = "*";

pub(crate) struct Registry {
    pub(crate) cfg: CircuitConfig,
    base: Instant,
    /// The breaker of an unkeyed layer (no map lookup on the call path).
    pub(crate) single: Arc<Breaker>,
    /// Keyed breakers, bounded by `max_keys` (core's `BoundedMap`).
    keys: BoundedMap<Key, Arc<Breaker>>,
    tx: watch::Sender<Option<Transition>>,
    /// Set by the layer's builder methods in place, so that handles taken
    /// before them stay the layer's (never a second registry).
    probe: std::sync::Mutex<Option<(Duration, ProbeFn)>>,
    keyed: std::sync::atomic::AtomicBool,
}

impl Registry {
    pub(crate) fn new(cfg: CircuitConfig) -> Self {
        let base = Instant::now();
        let overflow = Arc::new(Breaker::new(Key::from_static(OVERFLOW_KEY), &cfg, base));
        Registry {
            cfg,
            base,
            single: Arc::new(Breaker::new(Key::from_static(UNKEYED), &cfg, base)),
            keys: BoundedMap::new(cfg.max_keys.max(1), overflow),
            tx: watch::channel(None).0,
            probe: std::sync::Mutex::new(None),
            keyed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn set_keyed(&self) {
        self.keyed.store(true, Release);
    }

    fn keyed(&self) -> bool {
        self.keyed.load(Acquire)
    }

    pub(crate) fn set_probe(&self, interval: Duration, probe: ProbeFn) {
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some((interval, probe));
    }

    /// The breaker for `key`, created on first use. Only a closed breaker
    /// unused for `idle_ttl` is dropped to make room; when none may go, the
    /// key shares the overflow breaker.
    pub(crate) fn get(&self, key: Key, now: Instant) -> Arc<Breaker> {
        let now_ns = u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let ttl = u64::try_from(self.cfg.idle_ttl.as_nanos()).unwrap_or(u64::MAX);
        let (b, placed) = self.keys.with(
            key.as_str(),
            || (key.clone(), Arc::new(Breaker::new(key.clone(), &self.cfg, self.base))),
            |b| b.state() == CircuitState::Closed && now_ns.saturating_sub(b.last_used()) >= ttl,
            |b| b.clone(),
        );
        if placed == Placement::Overflow {
            metrics::counter!("llm_tower_circuit_overflow_total").increment(1);
        }
        b
    }

    fn find(&self, key: &str) -> Option<Arc<Breaker>> {
        if !self.keyed() {
            return (key == self.single.key.as_str()).then(|| self.single.clone());
        }
        if key == OVERFLOW_KEY {
            return Some(self.keys.with_overflow(|b| b.clone()));
        }
        self.keys.get(key, |b| b.cloned())
    }

    fn all(&self) -> Vec<Arc<Breaker>> {
        let mut out: Vec<Arc<Breaker>> = Vec::new();
        self.keys.for_each(|_, b| out.push(b.clone()));
        if self.keys.overflow_hits() > 0 {
            out.push(self.keys.with_overflow(|b| b.clone()));
        }
        if !self.keyed() {
            out.push(self.single.clone());
        }
        out
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
        let Some((interval, probe)) = self.probe.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
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
        f.debug_struct("CircuitHandle").field("keys", &self.reg.keys.len()).finish()
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
    /// half-open; an unknown key is closed). An unkeyed layer's key is [`UNKEYED`].
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
