//! [`RedisLimits`]: the limiter's [`RateLimitStore`] in Redis.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use llm_tower_core::{BoxError, Key, StoreUnavailable};
use llm_tower_ratelimit::{
    Adjustment, Decision, Demand, Grant, LimitKind, MemoryStore, Rate, RateLimitStore,
};

use crate::Redis;

/// The script: every limit of a decision taken or refused together, on the
/// server, in one round trip.
pub(crate) const SCRIPT: &str = include_str!("limits.lua");

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
/// A concurrency limit (`max_concurrent`) stays per process: the limiter
/// holds its permits in memory.
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
        }
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
        let redis = self.redis.clone();
        let (on_error, local, down) = (self.on_error, self.local.clone(), self.down.clone());
        let (k, demand) = (key.clone(), *demand);
        let key = self.key(key);
        Reserve(Box::pin(async move {
            let out: Vec<i64> = match redis.run_script(&key, IDLE_MS, args).await {
                Ok(out) => {
                    if down.swap(false, Ordering::Relaxed) {
                        tracing::info!("Redis answers again: limits are shared again");
                    }
                    out
                }
                Err(e) => {
                    if !down.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, mode = ?on_error, "Redis is unreachable");
                    }
                    metrics::counter!("llm_tower_redis_fallbacks_total", "mode" => match on_error {
                        OnRedisError::Local => "local",
                        OnRedisError::Closed => "closed",
                    })
                    .increment(1);
                    return match on_error {
                        OnRedisError::Local => local.reserve(&k, &demand).await,
                        OnRedisError::Closed => {
                            let e = StoreUnavailable {
                                store: "redis".into(),
                                retry_after: Duration::from_secs(1),
                            };
                            Err(e.into())
                        }
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
