//! [`RedisLimits`]: the limiter's [`RateLimitStore`] in Redis.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use llm_tower_core::bounded::BoundedMap;
use tokio::sync::Semaphore;

use llm_tower_core::{BoxError, Key, StoreUnavailable};
use llm_tower_ratelimit::{
    Adjustment, Decision, Demand, Grant, LimitKind, MemoryStore, Rate, RateLimitStore, Slot, SlotFuture,
};

use crate::Redis;

/// The script: every limit of a decision taken or refused together, on the
/// server, in one round trip.
pub(crate) const SCRIPT: &str = include_str!("limits.lua");

/// A key's concurrency slots. KEYS[1]: a sorted set, holder -> lease end
/// (ms). ARGV: now ("" = Redis TIME), "take" | "give", the holder, then for
/// take: the most slots, the lease (ms). Answers 1 (taken, given) or 0 (full).
const SLOTS: &str = r"
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if ARGV[2] == 'give' then return redis.call('ZREM', KEYS[1], ARGV[3]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// How long a key stays after every limit of it has recovered (its counters
/// with it); then Redis expires it.
const IDLE_MS: u64 = 60_000;

/// A shared [`RateLimitStore`]: each key's limit state is one Redis hash,
/// decided and adjusted by one Lua script (the in-memory store's weighted
/// GCRA: every limit of a demand taken or none, refunds and token
/// reconciliation, holds and pacing learned from a provider), so any number
/// of gateways share one quota exactly. Time is the Redis server's `TIME`
/// (no clock skew between gateways); keys expire a minute after they fully
/// recover. Adjustments are sent at once, in order with this process's later
/// decisions (one multiplexed connection), and not waited for.
///
/// A concurrency limit (`max_concurrent`) is shared too, with **leases**:
/// each call in flight holds one slot of the key (a sorted set of holders,
/// each with the time its lease ends), given back when its answer's body
/// ends. A gateway that dies holding slots does not keep them: they end
/// with their lease (10 minutes by default, [`slot_lease`](Self::slot_lease);
/// a call still running past its lease no longer counts). A full limit in
/// wait mode is asked again every 20 ms until the longest wait.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), llm_tower_core::BoxError> {
/// use llm_tower_ratelimit::{Limits, RateLimitLayer};
/// use llm_tower_redis::{Redis, RedisConfig};
/// let redis = Redis::connect("redis://127.0.0.1:6379", RedisConfig::default()).await?;
/// // Every gateway with this line shares the provider's 500 RPM.
/// let layer = RateLimitLayer::with_store(Limits::default().requests_per_minute(500), redis.limits("openai"));
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisLimits {
    redis: Redis,
    /// `<prefix>rl:<namespace>:`: one limiter's keys.
    space: Arc<str>,
    on_error: OnRedisError,
    /// This process's own limits, used while Redis is down (`Local`).
    local: Arc<MemoryStore>,
    /// Whether the last call failed (decisions and adjustments go local).
    down: Arc<AtomicBool>,
    slots: Arc<Slots>,
}

/// The concurrency slots' script and this process's names for its holders.
#[derive(Debug)]
struct Slots {
    script: redis::Script,
    lease: Duration,
    instance: u64,
    next: AtomicU64,
    /// This process's slots while Redis is down (`Local`).
    local: BoundedMap<Key, Arc<Semaphore>>,
}

/// What a limiter does while Redis cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnRedisError {
    /// Decide with this process's own memory store (each gateway then
    /// enforces the whole limit on its own: up to N times the quota across N
    /// gateways), with a warning and `llm_tower_redis_fallbacks_total`.
    #[default]
    Local,
    /// Refuse: core's `StoreUnavailable` (503 with `retry-after: 1`).
    Closed,
}

impl RedisLimits {
    pub(crate) fn new(redis: Redis, namespace: &str) -> Self {
        let space = format!("{}rl:{namespace}:", redis.prefix()).into();
        RedisLimits {
            redis,
            space,
            on_error: OnRedisError::Local,
            local: Arc::new(MemoryStore::default()),
            down: Arc::new(AtomicBool::new(false)),
            slots: Arc::new(Slots {
                script: redis::Script::new(SLOTS),
                lease: Duration::from_secs(600),
                instance: std::collections::hash_map::RandomState::new().build_hasher().finish(),
                next: AtomicU64::new(1),
                local: BoundedMap::new(10_000, Arc::new(Semaphore::new(0))),
            }),
        }
    }

    /// How long a concurrency slot is held if its holder never gives it
    /// back (default 10 minutes).
    ///
    /// # Panics
    /// When called on a clone of a store still in use elsewhere.
    pub fn slot_lease(mut self, lease: Duration) -> Self {
        Arc::get_mut(&mut self.slots).expect("configured before it is cloned").lease =
            lease.max(Duration::from_millis(1));
        self
    }

    /// What to do while Redis cannot be reached (default: decide locally).
    pub fn on_error(mut self, on_error: OnRedisError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Whether the last call to Redis failed (decisions are local or refused
    /// until one succeeds).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn key(&self, key: &Key) -> String {
        format!("{}{}", self.space, key.as_str())
    }

    fn note_up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis answers again: limits are shared again");
        }
    }

    fn note_down(&self, e: &BoxError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, mode = ?self.on_error, "Redis is unreachable");
        }
        let mode = match self.on_error {
            OnRedisError::Local => "local",
            OnRedisError::Closed => "closed",
        };
        metrics::counter!("llm_tower_redis_fallbacks_total", "mode" => mode).increment(1);
    }
}

/// The refusal while Redis is down in `closed` mode: 503, `retry-after: 1`.
pub(crate) fn unavailable() -> BoxError {
    StoreUnavailable { store: "redis".into(), retry_after: Duration::from_secs(1) }.into()
}

fn us_ceil(ns: u64) -> u64 {
    ns.div_ceil(1000)
}

/// A limit's cost and capacity in microseconds (`0, 0`: not limited here).
fn cost(rate: Option<&Rate>, units: u64) -> (u64, u64) {
    match rate {
        Some(r) if units > 0 => (us_ceil(r.cost_ns(units)), r.capacity_ns() / 1000),
        _ => (0, 0),
    }
}

fn kind_of(i: i64) -> LimitKind {
    match i {
        0 => LimitKind::RequestsPerMinute,
        1 => LimitKind::RequestsPerDay,
        2 => LimitKind::TokensPerMinute,
        3 => LimitKind::MinInterval,
        _ => LimitKind::Adaptive,
    }
}

/// The decision future: one script call.
pub struct Reserve(Pin<Box<dyn Future<Output = Result<Decision, BoxError>> + Send>>);

impl std::fmt::Debug for Reserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reserve")
    }
}

impl Future for Reserve {
    type Output = Result<Decision, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl RateLimitStore for RedisLimits {
    type Reserve = Reserve;

    fn reserve(&self, key: &Key, demand: &Demand) -> Reserve {
        let r = &demand.rates;
        let req = u64::from(demand.requests);
        let limits = [
            (r.rpm.as_ref(), req, LimitKind::RequestsPerMinute),
            (r.rpd.as_ref(), req, LimitKind::RequestsPerDay),
            (r.tpm.as_ref(), demand.tokens, LimitKind::TokensPerMinute),
            (r.interval.as_ref(), req, LimitKind::MinInterval),
        ];
        // A demand over a burst never fits: no round trip.
        for (rate, units, kind) in limits {
            if rate.is_some_and(|r| units > r.burst()) {
                return Reserve(Box::pin(
                    async move { Ok(Decision::Denied { limit: kind, retry_after: None }) },
                ));
            }
        }
        let max_wait =
            demand.max_wait.map_or(-1, |w| i64::try_from(w.as_micros()).unwrap_or(i64::MAX).min(1 << 52));
        let mut args: Vec<String> =
            vec!["reserve".into(), max_wait.to_string(), demand.max_queue.to_string()];
        for (rate, units, _) in limits {
            let (c, cap) = cost(rate, units);
            args.push(c.to_string());
            args.push(cap.to_string());
        }
        let this = self.clone();
        let (k, demand) = (key.clone(), *demand);
        let key = self.key(key);
        Reserve(Box::pin(async move {
            let out: Vec<i64> = match this.redis.run_script(&key, IDLE_MS, args).await {
                Ok(out) => {
                    this.note_up();
                    out
                }
                Err(e) => {
                    this.note_down(&e);
                    return match this.on_error {
                        OnRedisError::Local => this.local.reserve(&k, &demand).await,
                        OnRedisError::Closed => Err(unavailable()),
                    };
                }
            };
            let [granted, wait, by, rpm_tat, tpm_tat, now] = out[..] else {
                return Err("the rate-limit script answered in an unknown shape".into());
            };
            let us = |v: i64| u64::try_from(v).unwrap_or(0);
            let wait = Duration::from_micros(us(wait));
            if granted == 1 {
                let ns = |v: i64| us(v).saturating_mul(1000);
                Ok(Decision::Granted(Grant::new(wait, ns(rpm_tat), ns(tpm_tat), ns(now))))
            } else {
                Ok(Decision::Denied { limit: kind_of(by), retry_after: Some(wait) })
            }
        }))
    }

    fn acquire_slot(&self, key: &Key, max: u32) -> Option<SlotFuture> {
        let (this, k) = (self.clone(), key.clone());
        Some(Box::pin(async move {
            let slots = &this.slots;
            let set = format!("{}{}:slots", this.space, k.as_str());
            let holder = format!("{:016x}.{}", slots.instance, slots.next.fetch_add(1, Ordering::Relaxed));
            let lease = u64::try_from(slots.lease.as_millis()).unwrap_or(u64::MAX);
            let mut take = slots.script.key(&set);
            take.arg(this.redis.now_arg(true)).arg("take").arg(&holder).arg(max).arg(lease);
            match this.redis.invoke::<i64>(&take).await {
                Ok(0) => Ok(None),
                Ok(_) => {
                    this.note_up();
                    let (redis, slots) = (this.redis.clone(), this.slots.clone());
                    let give = move || {
                        let r = redis.clone();
                        redis.send_in_order(async move {
                            let mut give = slots.script.key(&set);
                            give.arg(r.now_arg(true)).arg("give").arg(&holder);
                            if let Err(e) = r.invoke::<i64>(&give).await {
                                tracing::warn!(error = %e, "a concurrency slot was not given back: it ends with its lease");
                            }
                        });
                    };
                    Ok(Some(Slot::new(give)))
                }
                Err(e) => {
                    this.note_down(&e);
                    match this.on_error {
                        OnRedisError::Local => {
                            let (sem, _) = slots.local.with(
                                k.as_str(),
                                || (k.clone(), Arc::new(Semaphore::new(max as usize))),
                                |s| Arc::strong_count(s) == 1,
                                |s| s.clone(),
                            );
                            Ok(sem.try_acquire_owned().ok().map(|p| Slot::new(move || drop(p))))
                        }
                        OnRedisError::Closed => Err(unavailable()),
                    }
                }
            }
        }))
    }

    fn adjust(&self, key: &Key, adjustment: Adjustment) {
        if self.is_down() {
            // Decided locally while Redis is down: adjusted there too.
            if self.on_error == OnRedisError::Local {
                self.local.adjust(key, adjustment);
            }
            return;
        }
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).min(1 << 52).to_string();
        let args: Vec<String> = match adjustment {
            Adjustment::Tokens { delta, rates } => {
                let (c, _) = cost(rates.tpm.as_ref(), delta.unsigned_abs());
                if c == 0 {
                    return;
                }
                let kind = if delta >= 0 { "charge" } else { "refund" };
                vec!["adjust".into(), kind.into(), c.to_string()]
            }
            Adjustment::Cancel { demand, queued } => {
                let r = &demand.rates;
                let req = u64::from(demand.requests);
                let mut a = vec!["adjust".into(), "cancel".into()];
                for (rate, units) in [(r.rpm, req), (r.rpd, req), (r.tpm, demand.tokens), (r.interval, req)] {
                    a.push(cost(rate.as_ref(), units).0.to_string());
                }
                a.push(if queued { "1" } else { "0" }.into());
                a
            }
            Adjustment::Dequeue => vec!["adjust".into(), "dequeue".into()],
            Adjustment::Hold(d) => vec!["adjust".into(), "hold".into(), micros(d)],
            Adjustment::Pace { interval, period } => {
                vec!["adjust".into(), "pace".into(), micros(interval), micros(period)]
            }
        };
        let redis = self.redis.clone();
        let key = self.key(key);
        self.redis.send_in_order(async move {
            if let Err(e) = redis.run_script::<i64>(&key, IDLE_MS, args).await {
                tracing::warn!(error = %e, "a rate-limit adjustment did not reach Redis");
            }
        });
    }
}
