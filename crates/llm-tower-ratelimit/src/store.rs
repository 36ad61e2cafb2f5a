//! Where limit state lives: the [`RateLimitStore`] trait and the in-memory store.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use llm_tower_core::bounded::{BoundedMap, Placement};
use llm_tower_core::{BoxError, Key};
use serde::Serialize;
use tokio::time::Instant;

use crate::limits::{LimitKind, Rate, Rates};

/// What one request asks of its key's limits.
///
/// ```
/// let d = llm_tower_ratelimit::Demand {
///     requests: 1, tokens: 500, rates: llm_tower_ratelimit::Limits::default().rates(), max_wait: None, max_queue: 0,
/// };
/// assert_eq!(d.tokens, 500);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// Requests (1).
    pub requests: u32,
    /// Estimated tokens (input + expected output).
    pub tokens: u64,
    /// The rates to check.
    pub rates: Rates,
    /// `Some`: the request may wait this long (FIFO); `None`: reject at once.
    pub max_wait: Option<Duration>,
    /// Most requests of the key waiting at once.
    pub max_queue: u32,
}

/// A limit's state after a decision, for `x-ratelimit-*` headers.
///
/// ```
/// let q = llm_tower_ratelimit::Quota { limit: 60, remaining: 59, reset: std::time::Duration::from_secs(1) };
/// assert_eq!(q.remaining, 59);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Quota {
    /// Units per period.
    pub limit: u64,
    /// Units available now.
    pub remaining: u64,
    /// Time until fully replenished.
    pub reset: Duration,
}

/// A granted demand.
///
/// Small on purpose (it travels in every request's future): the limit state
/// is kept as theoretical arrival times and turned into [`Quota`]s with the
/// rates only when headers are wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grant {
    /// How long to wait before sending (zero: at once). The capacity is
    /// already reserved: a waiter that gives up must cancel it.
    pub wait: Duration,
    rpm_tat: u64,
    tpm_tat: u64,
    now: u64,
}

impl Grant {
    /// A grant, from the theoretical arrival times (ns) of the per-minute
    /// request and token limits after it, and `now` on the same clock.
    pub fn new(wait: Duration, rpm_tat: u64, tpm_tat: u64, now: u64) -> Self {
        Grant { wait, rpm_tat, tpm_tat, now }
    }

    /// Requests-per-minute state after the grant.
    pub fn requests(&self, rates: &Rates) -> Option<Quota> {
        quota(rates.rpm, self.rpm_tat, self.now)
    }

    /// Tokens-per-minute state after the grant.
    pub fn tokens(&self, rates: &Rates) -> Option<Quota> {
        quota(rates.tpm, self.tpm_tat, self.now)
    }
}

/// The store's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// All limits taken.
    Granted(Grant),
    /// Nothing taken.
    Denied {
        /// The limit that refused (the one needing the longest wait).
        limit: LimitKind,
        /// When it would have room; `None` if it never can (the demand exceeds the burst).
        retry_after: Option<Duration>,
    },
}

/// A change to a key's state after a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adjustment {
    /// Real usage differed from the estimate: positive charges, negative refunds.
    Tokens {
        /// Token difference.
        delta: i64,
        /// The rates.
        rates: Rates,
    },
    /// Undo a grant that was never used (a waiter gave up, another limit refused).
    Cancel {
        /// The demand to give back.
        demand: Demand,
        /// Whether it was waiting.
        queued: bool,
    },
    /// A waiter's time came: it leaves the queue.
    Dequeue,
    /// Refuse everything until this long from now (the provider said so).
    Hold(Duration),
    /// Space requests by `interval` for the next `period` (the provider is nearly out).
    Pace {
        /// Gap between requests.
        interval: Duration,
        /// How long to keep pacing.
        period: Duration,
    },
}

/// One of a key's concurrent-call slots, held in a shared store for one call
/// and given back when dropped (the layer drops it when the answer's body
/// ends). A shared store holds each under a lease, so a process that dies
/// with slots taken does not keep them.
pub struct Slot {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Slot {
    /// A slot that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Slot { release: Some(Box::new(release)) }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// The answer of [`RateLimitStore::acquire_slot`]: a slot, or `None` when
/// every slot is taken.
pub type SlotFuture = Pin<Box<dyn Future<Output = Result<Option<Slot>, BoxError>> + Send>>;

/// Where per-key limit state lives. Decisions are atomic per key: every limit
/// of a demand is taken, or none.
///
/// The in-memory [`MemoryStore`] answers at once (`Ready`); a shared store
/// (Redis) answers over the network through the same trait, so the layer does
/// not change. Adjustments are fire-and-forget.
pub trait RateLimitStore: Send + Sync + 'static {
    /// The decision future (`Unpin`: the layer polls it once in `call`, so a
    /// store that decides at once costs no state-machine round trip).
    type Reserve: Future<Output = Result<Decision, BoxError>> + Send + Unpin + 'static;

    /// Decides `demand` for `key`, reserving on a grant.
    fn reserve(&self, key: &Key, demand: &Demand) -> Self::Reserve;

    /// Applies an adjustment to `key`.
    fn adjust(&self, key: &Key, adjustment: Adjustment);

    /// How long `demand` would wait for `key` now, without reserving
    /// (`Duration::MAX`: it can never fit). `None`: this store cannot tell
    /// without a round trip. Used to route around a busy limiter.
    fn peek(&self, key: &Key, demand: &Demand) -> Option<Duration> {
        let _ = (key, demand);
        None
    }

    /// Takes one of `max` concurrent-call slots of `key`, across every
    /// process sharing this store. `None` (the default, the in-memory
    /// store): this store keeps no slots, and the layer limits concurrency
    /// per process with its own semaphores.
    fn acquire_slot(&self, key: &Key, max: u32) -> Option<SlotFuture> {
        let _ = (key, max);
        None
    }

    /// Per-key counters, for stats (a store that cannot list keys returns
    /// none); `rates_of` gives each key's rates (a layer's keys may have
    /// limits of their own), to report its quotas.
    fn key_stats(&self, rates_of: &dyn Fn(&str) -> Rates) -> Vec<KeyStats> {
        let _ = rates_of;
        Vec::new()
    }
}

/// One key's counters and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyStats {
    /// The key.
    pub key: String,
    /// Demands granted.
    pub allowed: u64,
    /// Demands refused.
    pub rejected: u64,
    /// Grants that had to wait.
    pub waited: u64,
    /// Requests waiting now.
    pub queued: u32,
    /// Requests-per-minute state.
    pub requests: Option<Quota>,
    /// Tokens-per-minute state.
    pub tokens: Option<Quota>,
}

// Even: in the key's own state; odd: in its `Extra`. `i >> 1` is the slot.
const RPM: usize = 0;
const RPD: usize = 1;
const TPM: usize = 2;
const INTERVAL: usize = 3;

/// One key's state: 40 bytes, so that a key and its state fill one cache line
/// and 10,000 keys stay in cache. The rarer limits (per day, min interval),
/// waiting and adaptive limiting live in [`Extra`], allocated on first use.
#[derive(Clone, Debug, Default)]
struct KeyState {
    /// Theoretical arrival time (ns since the store's base) of the per-minute
    /// request and token limits; the others are in `extra.tat`.
    tat: [u64; 2],
    allowed: u64,
    rejected: u64,
    extra: Option<Box<Extra>>,
}

#[derive(Clone, Debug, Default)]
struct Extra {
    /// Theoretical arrival times of the per-day and min-interval limits.
    tat: [u64; 2],
    blocked_until: u64,
    pace_interval: u64,
    pace_until: u64,
    pace_tat: u64,
    queued: u32,
    waited: u64,
}

fn quota(rate: Option<Rate>, tat: u64, now: u64) -> Option<Quota> {
    let r = rate?;
    let unit = r.cost_ns(1).max(1);
    let used = tat.saturating_sub(now);
    Some(Quota {
        limit: r.limit(),
        remaining: r.capacity_ns().saturating_sub(used) / unit,
        reset: Duration::from_nanos(used),
    })
}

impl KeyState {
    /// Limit `i` of a demand: its rate (if set), the units asked, its kind.
    /// By reference and one at a time: rates are large, decisions are hot.
    #[inline]
    fn limit(demand: &Demand, i: usize) -> (Option<&Rate>, u64, LimitKind) {
        let (r, req) = (&demand.rates, u64::from(demand.requests));
        match i {
            RPM => (r.rpm.as_ref(), req, LimitKind::RequestsPerMinute),
            RPD => (r.rpd.as_ref(), req, LimitKind::RequestsPerDay),
            TPM => (r.tpm.as_ref(), demand.tokens, LimitKind::TokensPerMinute),
            _ => (r.interval.as_ref(), req, LimitKind::MinInterval),
        }
    }

    fn queued(&self) -> u32 {
        self.extra.as_ref().map_or(0, |x| x.queued)
    }

    fn waited(&self) -> u64 {
        self.extra.as_ref().map_or(0, |x| x.waited)
    }

    /// When this key's state becomes the same as a fresh key's (every limit
    /// recovered, no hold or pacing in effect): evicting it after that loses
    /// nothing but its counters.
    fn settles_at(&self) -> u64 {
        let held = self
            .extra
            .as_ref()
            .map_or(0, |x| x.blocked_until.max(x.pace_until).max(x.pace_tat).max(x.tat[0]).max(x.tat[1]));
        self.tat.iter().copied().fold(held, u64::max)
    }

    /// Limit `i`'s theoretical arrival time.
    fn tat(&self, i: usize) -> u64 {
        match i {
            RPM | TPM => self.tat[i >> 1],
            _ => self.extra.as_ref().map_or(0, |x| x.tat[i >> 1]),
        }
    }

    fn tat_mut(&mut self, i: usize) -> &mut u64 {
        match i {
            RPM | TPM => &mut self.tat[i >> 1],
            _ => &mut self.extra.get_or_insert_default().tat[i >> 1],
        }
    }

    fn decide(&mut self, demand: &Demand, now: u64) -> Decision {
        let mut next = [None; 4];
        let mut wait = 0u64;
        let mut by = LimitKind::RequestsPerMinute;
        for i in [RPM, TPM, RPD, INTERVAL] {
            let (rate, units, kind) = Self::limit(demand, i);
            let Some(r) = rate else { continue };
            if units == 0 {
                continue;
            }
            if units > r.burst() {
                self.rejected += 1;
                return Decision::Denied { limit: kind, retry_after: None };
            }
            let new = self.tat(i).max(now) + r.cost_ns(units);
            let w = new.saturating_sub(now + r.capacity_ns());
            if w > wait {
                wait = w;
                by = kind;
            }
            next[i] = Some(new);
        }
        let mut pace_next = None;
        if let Some(x) = &self.extra {
            if x.blocked_until > now && x.blocked_until - now > wait {
                wait = x.blocked_until - now;
                by = LimitKind::Adaptive;
            }
            if x.pace_until > now && x.pace_interval > 0 {
                let start = x.pace_tat.max(now);
                pace_next = Some(start + x.pace_interval);
                if start - now > wait {
                    wait = start - now;
                    by = LimitKind::Adaptive;
                }
            }
        }
        let granted_wait = match demand.max_wait {
            _ if wait == 0 => Some(0),
            Some(max) if wait <= max.as_nanos() as u64 && self.queued() < demand.max_queue => Some(wait),
            _ => None,
        };
        let Some(w) = granted_wait else {
            self.rejected += 1;
            return Decision::Denied { limit: by, retry_after: Some(Duration::from_nanos(wait)) };
        };
        for (i, t) in next.into_iter().enumerate() {
            if let Some(t) = t {
                *self.tat_mut(i) = t;
            }
        }
        if let Some(p) = pace_next {
            self.extra.get_or_insert_default().pace_tat = p;
        }
        self.allowed += 1;
        if w > 0 {
            let x = self.extra.get_or_insert_default();
            x.queued += 1;
            x.waited += 1;
        }
        Decision::Granted(Grant {
            wait: Duration::from_nanos(w),
            rpm_tat: self.tat(RPM),
            tpm_tat: self.tat(TPM),
            now,
        })
    }

    fn give_back(&mut self, i: usize, rate: Option<Rate>, units: u64, now: u64) {
        if let Some(r) = rate {
            let t = self.tat_mut(i);
            *t = t.saturating_sub(r.cost_ns(units)).max(now.min(*t));
        }
    }

    fn dequeue(&mut self) {
        if let Some(x) = &mut self.extra {
            x.queued = x.queued.saturating_sub(1);
        }
    }

    fn apply(&mut self, adj: Adjustment, now: u64) {
        match adj {
            Adjustment::Tokens { delta, rates } => {
                if let Some(r) = rates.tpm {
                    if delta >= 0 {
                        let t = self.tat_mut(TPM);
                        *t = (*t).max(now) + r.cost_ns(delta as u64);
                    } else {
                        self.give_back(TPM, rates.tpm, delta.unsigned_abs(), now);
                    }
                }
            }
            Adjustment::Cancel { demand, queued } => {
                for i in [RPM, TPM, RPD, INTERVAL] {
                    let (rate, units, _) = Self::limit(&demand, i);
                    self.give_back(i, rate.copied(), units, now);
                }
                if queued {
                    self.dequeue();
                }
                self.allowed = self.allowed.saturating_sub(1);
            }
            Adjustment::Dequeue => self.dequeue(),
            Adjustment::Hold(d) => {
                let x = self.extra.get_or_insert_default();
                x.blocked_until = x.blocked_until.max(now.saturating_add(nanos(d)));
            }
            Adjustment::Pace { interval, period } => {
                let x = self.extra.get_or_insert_default();
                x.pace_interval = nanos(interval);
                x.pace_until = now.saturating_add(nanos(period));
            }
        }
    }
}

/// A duration from an upstream's header in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The key of an unkeyed limiter.
pub(crate) const GLOBAL: &str = "*";
/// How the shared overflow key shows in stats.
pub const OVERFLOW: &str = "(overflow)";

/// The in-memory store: keys in core's [`BoundedMap`] (sharded, one short
/// lock per decision, O(1) eviction), bounded by `max_keys`. A key may be
/// evicted only once every limit of it has fully recovered and stayed so for
/// `idle_ttl` (such a key behaves exactly like a fresh one, so evicting it
/// never hands out extra quota), and nothing of it is waiting. When the bound
/// is full of keys still limited, a new key shares one **overflow key**: a
/// flood of new values (tenants, client-chosen headers) shares one quota
/// instead of escaping the limits; [`overflow_hits`](Self::overflow_hits)
/// counts it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
/// use llm_tower_core::Key;
/// use llm_tower_ratelimit::{Decision, Demand, Limits, MemoryStore, RateLimitStore};
/// let store = MemoryStore::new(10_000, std::time::Duration::ZERO);
/// let demand = Demand { requests: 1, tokens: 0, rates: Limits::default().requests_per_minute(1).rates(), max_wait: None, max_queue: 0 };
/// let key = Key::from_static("k");
/// assert!(matches!(store.reserve(&key, &demand).await?, Decision::Granted(_)));
/// assert!(matches!(store.reserve(&key, &demand).await?, Decision::Denied { .. }));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    base: Instant,
    /// The unkeyed layer's key (`*`): no hashing, no map.
    global: Mutex<KeyState>,
    /// foldhash-seeded per store inside: keys an attacker picks cannot be
    /// aimed at one bucket without knowing the seed.
    keys: BoundedMap<Key, KeyState>,
    idle_ttl: Duration,
}

impl Default for MemoryStore {
    /// 100,000 keys; a key may go as soon as it has recovered.
    fn default() -> Self {
        Self::new(100_000, Duration::ZERO)
    }
}

impl MemoryStore {
    /// A store keeping at most `max_keys` keys; a key may be evicted once it
    /// has been fully recovered for `idle_ttl` (zero: as soon as it recovers).
    pub fn new(max_keys: usize, idle_ttl: Duration) -> Self {
        Self {
            base: Instant::now(),
            global: Mutex::new(KeyState::default()),
            keys: BoundedMap::new(max_keys.max(1), KeyState::default()),
            idle_ttl,
        }
    }

    fn now(&self) -> u64 {
        // Offset by a second so that "zero" never means "now". 64-bit math only.
        let d = Instant::now().saturating_duration_since(self.base);
        d.as_secs().saturating_mul(1_000_000_000) + u64::from(d.subsec_nanos()) + 1_000_000_000
    }

    /// Runs `f` on `key`'s state (or the overflow key's) under one short lock.
    fn with_key<T>(&self, key: &Key, now: u64, f: impl FnOnce(&mut KeyState) -> T) -> T {
        let k = key.as_str();
        if k == GLOBAL {
            return f(&mut self.global.lock().unwrap_or_else(|e| e.into_inner()));
        }
        let ttl = nanos(self.idle_ttl);
        let (out, placed) = self.keys.with(
            k,
            || (key.clone(), KeyState::default()),
            |st| st.queued() == 0 && st.settles_at().saturating_add(ttl) <= now,
            f,
        );
        if placed == Placement::Overflow {
            metrics::counter!("llm_tower_ratelimit_overflow_total").increment(1);
        }
        out
    }

    /// Runs `f` on `key`'s state (`None`: not held) without inserting it.
    fn read_key<T>(&self, key: &Key, f: impl FnOnce(Option<&KeyState>) -> T) -> T {
        let k = key.as_str();
        if k == GLOBAL {
            return f(Some(&self.global.lock().unwrap_or_else(|e| e.into_inner())));
        }
        self.keys.get(k, f)
    }

    /// Keys held now (the overflow key not counted).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decisions made on the shared overflow key because the bound was full
    /// of keys still limited.
    pub fn overflow_hits(&self) -> u64 {
        self.keys.overflow_hits()
    }
}

impl RateLimitStore for MemoryStore {
    type Reserve = Ready<Result<Decision, BoxError>>;

    fn reserve(&self, key: &Key, demand: &Demand) -> Self::Reserve {
        let now = self.now();
        ready(Ok(self.with_key(key, now, |st| st.decide(demand, now))))
    }

    fn adjust(&self, key: &Key, adjustment: Adjustment) {
        let now = self.now();
        self.with_key(key, now, |st| st.apply(adjustment, now));
    }

    fn peek(&self, key: &Key, demand: &Demand) -> Option<Duration> {
        let now = self.now();
        let unbounded = Demand { max_wait: Some(Duration::MAX), max_queue: u32::MAX, ..*demand };
        // A read: an unknown key is a fresh one, and is not inserted.
        let decision = self.read_key(key, |st| st.cloned().unwrap_or_default().decide(&unbounded, now));
        Some(match decision {
            Decision::Granted(g) => g.wait,
            Decision::Denied { retry_after, .. } => retry_after.unwrap_or(Duration::MAX),
        })
    }

    fn key_stats(&self, rates_of: &dyn Fn(&str) -> Rates) -> Vec<KeyStats> {
        let now = self.now();
        let mut out = Vec::new();
        let line = |key: String, st: &KeyState| {
            let rates = rates_of(&key);
            KeyStats {
                requests: quota(rates.rpm, st.tat(RPM), now),
                tokens: quota(rates.tpm, st.tat(TPM), now),
                key,
                allowed: st.allowed,
                rejected: st.rejected,
                waited: st.waited(),
                queued: st.queued(),
            }
        };
        {
            let st = self.global.lock().unwrap_or_else(|e| e.into_inner());
            if st.allowed + st.rejected > 0 {
                out.push(line(GLOBAL.to_owned(), &st));
            }
        }
        self.keys.for_each(|k, st| out.push(line(k.to_string(), st)));
        self.keys.with_overflow(|st| {
            if st.allowed + st.rejected > 0 {
                out.push(line(OVERFLOW.to_owned(), st));
            }
        });
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}
