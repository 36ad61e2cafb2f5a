//! Spending budgets: reserve the estimated cost before a call, settle the real cost after.

use std::future::{Future, Ready, ready};
use std::time::Duration;

use llm_tower_core::bounded::BoundedMap;
use llm_tower_core::{BoxError, BudgetExceeded, Key};
use serde::Serialize;
use tokio::time::Instant;

/// A budget's period. Periods roll from the first spend of the key (tokio
/// time), not on calendar boundaries.
///
/// ```
/// assert_eq!(llm_tower_tokens::Period::Day.name(), "day");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// 24 hours.
    Day,
    /// 30 days.
    Month,
    /// Forever.
    Total,
}

impl Period {
    /// The period's name.
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// How long one period lasts (`None`: [`Period::Total`] never rolls).
    pub fn length(self) -> Option<Duration> {
        match self {
            Period::Day => Some(Duration::from_secs(86_400)),
            Period::Month => Some(Duration::from_secs(30 * 86_400)),
            Period::Total => None,
        }
    }
}

/// A spending limit in micro-dollars per period.
///
/// ```
/// let b = llm_tower_tokens::Budget { limit_micros: 5_000_000, period: llm_tower_tokens::Period::Day };
/// assert_eq!(b.limit_micros, 5_000_000, "$5 a day");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Limit, micro-dollars.
    pub limit_micros: u64,
    /// Period.
    pub period: Period,
}

/// A reservation a [`BudgetStore`] made: what [`BudgetStore::settle`] gives
/// back. It names the reservation (a shared store holds each one under a
/// lease, so a gateway that dies mid-call does not hold budget forever) and
/// where it was made (a shared store that fell back to local state settles
/// there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    estimate: u64,
    id: u64,
}

impl Reservation {
    /// A reservation of `estimate` micro-dollars held by this process.
    pub fn local(estimate: u64) -> Self {
        Reservation { estimate, id: 0 }
    }

    /// A reservation of `estimate` held elsewhere as `id` (never 0).
    pub fn shared(estimate: u64, id: u64) -> Self {
        Reservation { estimate, id: id.max(1) }
    }

    /// The micro-dollars reserved.
    pub fn estimate(&self) -> u64 {
        self.estimate
    }

    /// The shared store's name for it (`None`: held by this process).
    pub fn id(&self) -> Option<u64> {
        (self.id != 0).then_some(self.id)
    }
}

/// Where budget state lives. A reservation is atomic per key: concurrent
/// requests can never reserve more than the budget, so the real overspend is
/// bounded by how much one request's cost exceeds its estimate.
pub trait BudgetStore: Send + Sync + 'static {
    /// The reservation future (`Ready` for the in-memory store; a shared
    /// store answers after a round trip). It fails with core's
    /// `BudgetExceeded` (402), or `StoreUnavailable` (503) when a shared
    /// store cannot decide.
    type Reserve: Future<Output = Result<Reservation, BoxError>> + Send + Unpin + 'static;

    /// Reserves `estimate` micro-dollars of `key`'s `budget`.
    fn reserve(&self, key: &Key, budget: &Budget, estimate: u64) -> Self::Reserve;

    /// Replaces `reservation` by the `actual` cost.
    fn settle(&self, key: &Key, budget: &Budget, reservation: Reservation, actual: u64);

    /// `(spent, reserved)` for `key` in its current period (a shared store:
    /// as this process last saw it).
    fn balance(&self, key: &Key) -> Option<(u64, u64)>;

    /// The accounts whose spend changed since the last call, for a
    /// persistent copy (the SQLite state). A store that is itself the
    /// durable copy (Redis) has nothing to give.
    fn drain_changed(&self) -> Vec<AccountSnapshot> {
        Vec::new()
    }

    /// Puts a persistent copy's account back (at start). A store that is
    /// itself the durable copy ignores it: its own state is the truth.
    fn restore(&self, snapshot: &AccountSnapshot) {
        let _ = snapshot;
    }
}

#[derive(Debug)]
struct Account {
    /// When its period started, milliseconds after the store's origin (it
    /// may be before it: an account restored from a snapshot).
    started: i64,
    spent: u64,
    reserved: u64,
    /// Spend changed since the last [`MemoryBudgets::drain_changed`].
    changed: bool,
}

/// An account's spend in its current period, for a persistent copy
/// ([`MemoryBudgets::drain_changed`], [`MemoryBudgets::restore`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSnapshot {
    /// The account (tenant) key.
    pub key: Key,
    /// Spent in the current period, micro-dollars.
    pub spent_micros: u64,
    /// How long ago the current period started.
    pub period_age: Duration,
}

/// The in-memory budget store: accounts in core's [`BoundedMap`] (at most
/// `max_accounts`, default 100,000). An account is evicted only when nothing
/// of it would be lost: no reservation in flight, and no spend in its current
/// period. When the bound is full of accounts with spend, a new tenant shares
/// one **overflow account** (so a flood of tenant names shares one budget
/// instead of each getting a fresh one); [`overflow_hits`](Self::overflow_hits)
/// counts it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use llm_tower_core::Key;
/// use llm_tower_tokens::{Budget, BudgetStore, MemoryBudgets, Period};
/// let store = MemoryBudgets::default();
/// let b = Budget { limit_micros: 100, period: Period::Total };
/// let k = Key::from_static("t");
/// let first = store.reserve(&k, &b, 60).await.unwrap();
/// assert!(store.reserve(&k, &b, 60).await.is_err(), "60 + 60 > 100");
/// store.settle(&k, &b, first, 10);
/// assert!(store.reserve(&k, &b, 60).await.is_ok(), "10 spent + 60 fits");
/// # }
/// ```
#[derive(Debug)]
pub struct MemoryBudgets {
    accounts: BoundedMap<Key, Account>,
    origin: Instant,
    /// Set by the first [`drain_changed`](Self::drain_changed): from then on
    /// an account with spend not yet drained is not evicted.
    persisted: std::sync::atomic::AtomicBool,
}

impl Default for MemoryBudgets {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl MemoryBudgets {
    /// A store of at most `max_accounts` accounts.
    pub fn new(max_accounts: usize) -> Self {
        MemoryBudgets {
            accounts: BoundedMap::new(
                max_accounts,
                Account { started: 0, spent: 0, reserved: 0, changed: false },
            ),
            origin: Instant::now(),
            persisted: false.into(),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(Instant::now().saturating_duration_since(self.origin).as_millis()).unwrap_or(i64::MAX)
    }

    /// The accounts whose spend changed since the last call, with their
    /// spend and period age now: what a persistent copy writes (the SQLite
    /// state writes them every second). The shared overflow account is not
    /// included.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use llm_tower_core::Key;
    /// use llm_tower_tokens::{Budget, BudgetStore, MemoryBudgets, Period};
    /// let store = MemoryBudgets::default();
    /// let b = Budget { limit_micros: 100, period: Period::Day };
    /// let r = store.reserve(&Key::from_static("t"), &b, 10).await.unwrap();
    /// store.settle(&Key::from_static("t"), &b, r, 7);
    /// let changed = store.drain_changed();
    /// assert_eq!((changed[0].key.as_str(), changed[0].spent_micros), ("t", 7));
    /// assert!(store.drain_changed().is_empty(), "nothing new since");
    /// # }
    /// ```
    pub fn drain_changed(&self) -> Vec<AccountSnapshot> {
        self.persisted.store(true, std::sync::atomic::Ordering::Relaxed);
        let now = self.now_ms();
        let mut out = Vec::new();
        self.accounts.retain(|key, acc| {
            if acc.changed {
                acc.changed = false;
                let age = u64::try_from(now.saturating_sub(acc.started)).unwrap_or(0);
                out.push(AccountSnapshot {
                    key: key.clone(),
                    spent_micros: acc.spent,
                    period_age: Duration::from_millis(age),
                });
            }
            true
        });
        out
    }

    /// Sets an account's spend and period age from a persistent copy (at
    /// start, before requests): spend survives a restart, and the period
    /// ends when it would have. A period already over rolls at its next use.
    pub fn restore(&self, snapshot: &AccountSnapshot) {
        let age = i64::try_from(snapshot.period_age.as_millis()).unwrap_or(i64::MAX);
        let started = self.now_ms().saturating_sub(age);
        let new = || {
            let acc = Account { started, spent: snapshot.spent_micros, reserved: 0, changed: false };
            (snapshot.key.clone(), acc)
        };
        self.accounts.with(
            snapshot.key.as_str(),
            new,
            |_| false,
            |acc| {
                acc.started = started;
                acc.spent = snapshot.spent_micros;
            },
        );
    }

    /// Operations that ran on the shared overflow account.
    pub fn overflow_hits(&self) -> u64 {
        self.accounts.overflow_hits()
    }

    /// Accounts held (the overflow account not counted).
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether no account is held.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    fn with<T>(&self, key: &Key, budget: &Budget, f: impl FnOnce(&mut Account) -> T) -> T {
        let now = self.now_ms();
        let len = budget.period.length().map(|l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX));
        let over = |acc: &Account| len.is_some_and(|l| now.saturating_sub(acc.started) >= l);
        let persisted = self.persisted.load(std::sync::atomic::Ordering::Relaxed);
        let roll = |acc: &mut Account| {
            if over(acc) {
                acc.started = now;
                acc.changed |= acc.spent != 0;
                acc.spent = 0;
            }
        };
        self.accounts
            .with(
                key.as_str(),
                || (key.clone(), Account { started: now, spent: 0, reserved: 0, changed: false }),
                // Nothing to forget: no reservation, no spend in its period,
                // and nothing a persistent copy has yet to write.
                |acc| acc.reserved == 0 && !(acc.changed && persisted) && (acc.spent == 0 || over(acc)),
                |acc| {
                    roll(acc);
                    f(acc)
                },
            )
            .0
    }
}

impl BudgetStore for MemoryBudgets {
    type Reserve = Ready<Result<Reservation, BoxError>>;

    fn reserve(&self, key: &Key, budget: &Budget, estimate: u64) -> Self::Reserve {
        ready(self.with(key, budget, |acc| {
            let used = acc.spent.saturating_add(acc.reserved);
            if used.saturating_add(estimate) > budget.limit_micros {
                return Err(BudgetExceeded {
                    key: key.to_string(),
                    period: budget.period.name(),
                    limit_micros: budget.limit_micros,
                    spent_micros: used,
                    request_micros: estimate,
                }
                .into());
            }
            acc.reserved = acc.reserved.saturating_add(estimate);
            Ok(Reservation::local(estimate))
        }))
    }

    fn settle(&self, key: &Key, budget: &Budget, reservation: Reservation, actual: u64) {
        self.with(key, budget, |acc| {
            acc.reserved = acc.reserved.saturating_sub(reservation.estimate);
            acc.spent = acc.spent.saturating_add(actual);
            acc.changed |= actual != 0;
        });
    }

    fn balance(&self, key: &Key) -> Option<(u64, u64)> {
        self.accounts.get(key.as_str(), |a| a.map(|a| (a.spent, a.reserved)))
    }

    fn drain_changed(&self) -> Vec<AccountSnapshot> {
        MemoryBudgets::drain_changed(self)
    }

    fn restore(&self, snapshot: &AccountSnapshot) {
        MemoryBudgets::restore(self, snapshot)
    }
}
