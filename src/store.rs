//! [`LimitStore`] and [`SpendStore`]: where a stack's limiters and its
//! accounting keep their state.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use llm_tower_core::{BoxError, Key};
use llm_tower_ratelimit::{
    Adjustment, Decision, Demand, KeyStats, MemoryStore, RateLimitStore, Rates, SlotFuture,
};
use llm_tower_tokens::{AccountSnapshot, Budget, BudgetStore, MemoryBudgets, Reservation};

/// Where one of a stack's limiters (a provider's, the tenants') keeps its
/// state: this process's memory (the default), or Redis, shared by every
/// gateway on it (feature `redis`, `LlmStack::shared_limits`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
/// use llm_tower::LimitStore;
/// use llm_tower::ratelimit::{Decision, Demand, Limits, RateLimitStore};
/// let store = LimitStore::default();
/// let demand = Demand { requests: 1, tokens: 0, rates: Limits::default().requests_per_minute(1).rates(), max_wait: None, max_queue: 0 };
/// let key = llm_tower::core::Key::from_static("k");
/// assert!(matches!(store.reserve(&key, &demand).await?, Decision::Granted(_)));
/// assert!(matches!(store.reserve(&key, &demand).await?, Decision::Denied { .. }));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum LimitStore {
    /// This process only.
    Memory(MemoryStore),
    /// Shared in Redis.
    #[cfg(feature = "redis")]
    Redis(llm_tower_redis::RedisLimits),
}

impl Default for LimitStore {
    fn default() -> Self {
        LimitStore::Memory(MemoryStore::default())
    }
}

impl LimitStore {
    /// Whether it is shared and its Redis did not answer the last call.
    pub fn is_down(&self) -> bool {
        match self {
            LimitStore::Memory(_) => false,
            #[cfg(feature = "redis")]
            LimitStore::Redis(r) => r.is_down(),
        }
    }
}

/// The decision future of a [`LimitStore`].
pub enum LimitReserve {
    /// Decided at once.
    Memory(Ready<Result<Decision, BoxError>>),
    /// One Redis round trip.
    #[cfg(feature = "redis")]
    Redis(llm_tower_redis::Reserve),
}

impl std::fmt::Debug for LimitReserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LimitReserve")
    }
}

impl Future for LimitReserve {
    type Output = Result<Decision, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            LimitReserve::Memory(r) => Pin::new(r).poll(cx),
            #[cfg(feature = "redis")]
            LimitReserve::Redis(r) => Pin::new(r).poll(cx),
        }
    }
}

impl RateLimitStore for LimitStore {
    type Reserve = LimitReserve;

    fn reserve(&self, key: &Key, demand: &Demand) -> LimitReserve {
        match self {
            LimitStore::Memory(s) => LimitReserve::Memory(s.reserve(key, demand)),
            #[cfg(feature = "redis")]
            LimitStore::Redis(s) => LimitReserve::Redis(s.reserve(key, demand)),
        }
    }

    fn adjust(&self, key: &Key, adjustment: Adjustment) {
        match self {
            LimitStore::Memory(s) => s.adjust(key, adjustment),
            #[cfg(feature = "redis")]
            LimitStore::Redis(s) => s.adjust(key, adjustment),
        }
    }

    fn peek(&self, key: &Key, demand: &Demand) -> Option<Duration> {
        match self {
            LimitStore::Memory(s) => s.peek(key, demand),
            #[cfg(feature = "redis")]
            LimitStore::Redis(s) => s.peek(key, demand),
        }
    }

    fn acquire_slot(&self, key: &Key, max: u32) -> Option<SlotFuture> {
        match self {
            LimitStore::Memory(s) => s.acquire_slot(key, max),
            #[cfg(feature = "redis")]
            LimitStore::Redis(s) => s.acquire_slot(key, max),
        }
    }

    fn key_stats(&self, rates_of: &dyn Fn(&str) -> Rates) -> Vec<KeyStats> {
        match self {
            LimitStore::Memory(s) => s.key_stats(rates_of),
            #[cfg(feature = "redis")]
            LimitStore::Redis(s) => s.key_stats(rates_of),
        }
    }
}

/// Where the accounting layer keeps tenants' spend: this process's memory
/// (the default; the SQLite state can persist it), or Redis, one budget for
/// every gateway on it (feature `redis`,
/// `LlmStack::shared_limits`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use llm_tower::SpendStore;
/// use llm_tower::tokens::{Budget, BudgetStore, Period};
/// let store = SpendStore::default();
/// let (key, budget) = (llm_tower::core::Key::from_static("t"), Budget { limit_micros: 100, period: Period::Day });
/// let r = store.reserve(&key, &budget, 80).await.unwrap();
/// assert!(store.reserve(&key, &budget, 80).await.is_err(), "80 + 80 > 100");
/// store.settle(&key, &budget, r, 30);
/// assert_eq!(store.balance(&key), Some((30, 0)));
/// # }
/// ```
#[derive(Debug)]
pub enum SpendStore {
    /// This process only.
    Memory(MemoryBudgets),
    /// Shared in Redis.
    #[cfg(feature = "redis")]
    Redis(llm_tower_redis::RedisBudgets),
}

impl Default for SpendStore {
    fn default() -> Self {
        SpendStore::Memory(MemoryBudgets::default())
    }
}

impl SpendStore {
    /// Whether it is shared and its Redis did not answer the last call.
    pub fn is_down(&self) -> bool {
        match self {
            SpendStore::Memory(_) => false,
            #[cfg(feature = "redis")]
            SpendStore::Redis(r) => r.is_down(),
        }
    }
}

/// The reservation future of a [`SpendStore`].
pub enum SpendReserve {
    /// Decided at once.
    Memory(Ready<Result<Reservation, BoxError>>),
    /// One Redis round trip.
    #[cfg(feature = "redis")]
    Redis(llm_tower_redis::BudgetReserve),
}

impl std::fmt::Debug for SpendReserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpendReserve")
    }
}

impl Future for SpendReserve {
    type Output = Result<Reservation, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            SpendReserve::Memory(r) => Pin::new(r).poll(cx),
            #[cfg(feature = "redis")]
            SpendReserve::Redis(r) => Pin::new(r).poll(cx),
        }
    }
}

impl BudgetStore for SpendStore {
    type Reserve = SpendReserve;

    fn reserve(&self, key: &Key, budget: &Budget, estimate: u64) -> SpendReserve {
        match self {
            SpendStore::Memory(s) => SpendReserve::Memory(s.reserve(key, budget, estimate)),
            #[cfg(feature = "redis")]
            SpendStore::Redis(s) => SpendReserve::Redis(s.reserve(key, budget, estimate)),
        }
    }

    fn settle(&self, key: &Key, budget: &Budget, reservation: Reservation, actual: u64) {
        match self {
            SpendStore::Memory(s) => s.settle(key, budget, reservation, actual),
            #[cfg(feature = "redis")]
            SpendStore::Redis(s) => s.settle(key, budget, reservation, actual),
        }
    }

    fn balance(&self, key: &Key) -> Option<(u64, u64)> {
        match self {
            SpendStore::Memory(s) => s.balance(key),
            #[cfg(feature = "redis")]
            SpendStore::Redis(s) => s.balance(key),
        }
    }

    fn drain_changed(&self) -> Vec<AccountSnapshot> {
        match self {
            SpendStore::Memory(s) => s.drain_changed(),
            #[cfg(feature = "redis")]
            SpendStore::Redis(s) => s.drain_changed(),
        }
    }

    fn restore(&self, snapshot: &AccountSnapshot) {
        match self {
            SpendStore::Memory(s) => s.restore(snapshot),
            #[cfg(feature = "redis")]
            SpendStore::Redis(s) => s.restore(snapshot),
        }
    }
}

/// Where a stack's limiters and its accounting keep state: each its own
/// memory store, or namespaces of one shared Redis.
#[derive(Clone, Debug, Default)]
pub(crate) enum Stores {
    #[default]
    Memory,
    #[cfg(feature = "redis")]
    Redis(llm_tower_redis::Redis, llm_tower_redis::OnRedisError),
}

impl Stores {
    pub(crate) fn make(&self, namespace: &str) -> LimitStore {
        match self {
            Stores::Memory => {
                let _ = namespace;
                LimitStore::default()
            }
            #[cfg(feature = "redis")]
            Stores::Redis(r, on_error) => LimitStore::Redis(r.limits(namespace).on_error(*on_error)),
        }
    }

    pub(crate) fn spend(&self) -> SpendStore {
        match self {
            Stores::Memory => SpendStore::default(),
            #[cfg(feature = "redis")]
            Stores::Redis(r, on_error) => SpendStore::Redis(r.budgets("tenants").on_error(*on_error)),
        }
    }
}
