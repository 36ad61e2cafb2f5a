//! [`RedisBudgets`]: the accounting layer's [`BudgetStore`] in Redis.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use llm_tower_core::bounded::BoundedMap;
use llm_tower_core::{BoxError, BudgetExceeded, Key};
use llm_tower_tokens::{Budget, BudgetStore, MemoryBudgets, Reservation};

use crate::{OnRedisError, Redis};

/// The script: one account's reservation or settlement, atomic.
pub(crate) const SCRIPT: &str = include_str!("budgets.lua");

/// Amounts above this are not exact in the script's numbers (2^53).
const MAX_MICROS: u64 = 1 << 53;

/// A shared [`BudgetStore`]: each tenant's spend in its current period is one
/// Redis hash, reserved and settled by one Lua script, so every gateway on
/// the Redis holds one budget: however many race, reservations never exceed
/// it, and the overspend is bounded by how much one request's real cost
/// exceeds its estimate (as in memory). Periods roll on Redis `TIME`.
///
/// Each reservation is held under a **lease** (10 minutes by default, longer
/// than any call): a gateway that dies mid-call, or a settlement that cannot
/// reach Redis, does not hold the tenant's budget forever; the amount comes
/// back when the lease ends. (A lost settlement's cost is then not counted:
/// the store errs towards letting a tenant spend, never towards locking it out.)
/// A daily or monthly account expires an hour after its period ends; a total
/// one stays.
///
/// While Redis cannot be reached, [`OnRedisError::Local`] reserves in this
/// process's memory (each gateway then holds the whole budget on its own),
/// [`OnRedisError::Closed`] refuses with core's `StoreUnavailable` (503).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), llm_tower_core::BoxError> {
/// use llm_tower_tokens::{AccountingConfig, Budget, Period, TokenAccountingLayer};
/// let redis = llm_tower_redis::Redis::connect("redis://127.0.0.1:6379", Default::default()).await?;
/// let cfg = AccountingConfig {
///     default_budget: Some(Budget { limit_micros: 5_000_000, period: Period::Day }),
///     ..Default::default()
/// };
/// // Every gateway with this line holds each tenant to one $5 a day.
/// let accounting = TokenAccountingLayer::with_store(cfg, redis.budgets("tenants"));
/// # let _ = accounting; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisBudgets {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis: Redis,
    /// `<prefix>bud:<namespace>:`.
    space: String,
    on_error: OnRedisError,
    lease: Duration,
    /// This process's budgets while Redis is down (`Local`).
    local: MemoryBudgets,
    down: AtomicBool,
    /// Names this process's reservations apart from every other gateway's.
    instance: u64,
    next: AtomicU64,
    /// `(spent, reserved)` as the last answer about each account said.
    seen: BoundedMap<Key, (u64, u64)>,
}

impl RedisBudgets {
    pub(crate) fn new(redis: Redis, namespace: &str) -> Self {
        let space = format!("{}bud:{namespace}:", redis.prefix());
        let instance = std::collections::hash_map::RandomState::new().build_hasher().finish();
        RedisBudgets {
            inner: Arc::new(Inner {
                redis,
                space,
                on_error: OnRedisError::Local,
                lease: Duration::from_secs(600),
                local: MemoryBudgets::default(),
                down: AtomicBool::new(false),
                instance,
                next: AtomicU64::new(1),
                seen: BoundedMap::new(100_000, (0, 0)),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("configured before it is cloned")
    }

    /// What to do while Redis cannot be reached (default: reserve locally).
    ///
    /// # Panics
    /// When called on a clone of a store still in use elsewhere.
    pub fn on_error(mut self, on_error: OnRedisError) -> Self {
        self.inner_mut().on_error = on_error;
        self
    }

    /// How long a reservation is held if it is never settled (default 10
    /// minutes, at most an hour).
    ///
    /// # Panics
    /// When called on a clone of a store still in use elsewhere.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.inner_mut().lease = lease.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        self
    }

    /// Whether the last call to Redis failed.
    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Relaxed)
    }

    /// `(spent, reserved)` of `key` read from Redis now (what
    /// [`BudgetStore::balance`] gives as last seen by this process).
    pub async fn fetch_balance(&self, key: &Key, budget: &Budget) -> Result<(u64, u64), BoxError> {
        let args = vec!["read".into(), limit(budget), period_ms(budget)];
        let out: Vec<u64> = self.inner.run(key, args).await?;
        let [_, spent, reserved] = out[..] else {
            return Err("the budget script answered in an unknown shape".into());
        };
        self.inner.seen_now(key, spent, reserved);
        Ok((spent, reserved))
    }
}

fn limit(b: &Budget) -> String {
    b.limit_micros.min(MAX_MICROS).to_string()
}

fn period_ms(b: &Budget) -> String {
    b.period.length().map_or(0, |l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)).to_string()
}

impl Inner {
    fn keys(&self, key: &Key) -> [String; 2] {
        // One hash tag per account: both keys on one slot of a cluster.
        let h = format!("{}{{{}}}", self.space, key.as_str());
        let l = format!("{h}:leases");
        [h, l]
    }

    fn member(&self, id: u64) -> String {
        format!("{:016x}.{id}", self.instance)
    }

    async fn run(&self, key: &Key, args: Vec<String>) -> Result<Vec<u64>, BoxError> {
        let [h, l] = self.keys(key);
        let out = self.redis.run_budget([h.as_str(), l.as_str()], args).await;
        match &out {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: budgets are shared again");
                }
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, mode = ?self.on_error, "Redis is unreachable: budgets");
                }
            }
        }
        out
    }

    fn seen_now(&self, key: &Key, spent: u64, reserved: u64) {
        self.seen.with(key.as_str(), || (key.clone(), (0, 0)), |_| true, |v| *v = (spent, reserved));
    }
}

/// The reservation future of [`RedisBudgets`]: one script call.
pub struct Reserve(Pin<Box<dyn Future<Output = Result<Reservation, BoxError>> + Send>>);

impl std::fmt::Debug for Reserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reserve")
    }
}

impl Future for Reserve {
    type Output = Result<Reservation, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl BudgetStore for RedisBudgets {
    type Reserve = Reserve;

    fn reserve(&self, key: &Key, budget: &Budget, estimate: u64) -> Reserve {
        let inner = self.inner.clone();
        let (key, budget) = (key.clone(), *budget);
        Reserve(Box::pin(async move {
            let estimate = estimate.min(MAX_MICROS);
            let id = inner.next.fetch_add(1, Ordering::Relaxed);
            let lease = u64::try_from(inner.lease.as_millis()).unwrap_or(3_600_000);
            let args = vec![
                "reserve".into(),
                limit(&budget),
                period_ms(&budget),
                estimate.to_string(),
                inner.member(id),
                lease.to_string(),
            ];
            match inner.run(&key, args).await {
                Ok(out) => {
                    let [granted, spent, reserved] = out[..] else {
                        return Err("the budget script answered in an unknown shape".into());
                    };
                    inner.seen_now(&key, spent, reserved);
                    if granted == 1 {
                        return Ok(Reservation::shared(estimate, id));
                    }
                    Err(BudgetExceeded {
                        key: key.to_string(),
                        period: budget.period.name(),
                        limit_micros: budget.limit_micros,
                        spent_micros: spent.saturating_add(reserved),
                        request_micros: estimate,
                    }
                    .into())
                }
                Err(_) => {
                    metrics::counter!("llm_tower_redis_fallbacks_total", "mode" => match inner.on_error {
                        OnRedisError::Local => "local",
                        OnRedisError::Closed => "closed",
                    })
                    .increment(1);
                    match inner.on_error {
                        OnRedisError::Local => inner.local.reserve(&key, &budget, estimate).await,
                        OnRedisError::Closed => Err(crate::limits::unavailable()),
                    }
                }
            }
        }))
    }

    fn settle(&self, key: &Key, budget: &Budget, reservation: Reservation, actual: u64) {
        let Some(id) = reservation.id() else {
            // Reserved here while Redis was down: settled here.
            self.inner.local.settle(key, budget, reservation, actual);
            return;
        };
        let args = vec![
            "settle".into(),
            limit(budget),
            period_ms(budget),
            actual.min(MAX_MICROS).to_string(),
            self.inner.member(id),
        ];
        let (inner, key) = (self.inner.clone(), key.clone());
        self.inner.redis.send_in_order(async move {
            match inner.run(&key, args).await {
                Ok(out) => {
                    if let [_, spent, reserved] = out[..] {
                        inner.seen_now(&key, spent, reserved);
                    }
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    cost_micros = actual,
                    "a spend did not reach Redis: its reservation ends with its lease, its cost is not counted"
                ),
            }
        });
    }

    fn balance(&self, key: &Key) -> Option<(u64, u64)> {
        let seen = self.inner.seen.get(key.as_str(), |v| v.copied());
        let local = self.inner.local.balance(key);
        match (seen, local) {
            (Some((s, r)), Some((ls, lr))) => Some((s.saturating_add(ls), r.saturating_add(lr))),
            (a, b) => a.or(b),
        }
    }
}
