//! Spending budgets: reserve the estimated cost before a call, settle the real cost after.

use std::collections::HashMap;
use std::future::{Future, Ready, ready};
use std::sync::Mutex;
use std::time::Duration;

use llm_tower_core::{BudgetExceeded, Key};
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

    fn length(self) -> Option<Duration> {
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

/// Where budget state lives. A reservation is atomic per key: concurrent
/// requests can never reserve more than the budget, so the real overspend is
/// bounded by how much one request's cost exceeds its estimate.
pub trait BudgetStore: Send + Sync + 'static {
    /// The reservation future (`Ready` for the in-memory store).
    type Reserve: Future<Output = Result<(), BudgetExceeded>> + Send + Unpin + 'static;

    /// Reserves `estimate` micro-dollars of `key`'s `budget`.
    fn reserve(&self, key: &Key, budget: &Budget, estimate: u64) -> Self::Reserve;

    /// Replaces a reservation of `estimate` by the `actual` cost.
    fn settle(&self, key: &Key, budget: &Budget, estimate: u64, actual: u64);

    /// `(spent, reserved)` for `key` in its current period.
    fn balance(&self, key: &Key) -> Option<(u64, u64)>;
}

#[derive(Debug)]
struct Account {
    started: Instant,
    spent: u64,
    reserved: u64,
}

/// The in-memory budget store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use llm_tower_core::Key;
/// use llm_tower_tokens::{Budget, BudgetStore, MemoryBudgets, Period};
/// let store = MemoryBudgets::default();
/// let b = Budget { limit_micros: 100, period: Period::Total };
/// let k = Key::from_static("t");
/// assert!(store.reserve(&k, &b, 60).await.is_ok());
/// assert!(store.reserve(&k, &b, 60).await.is_err(), "60 + 60 > 100");
/// store.settle(&k, &b, 60, 10);
/// assert!(store.reserve(&k, &b, 60).await.is_ok(), "10 spent + 60 fits");
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryBudgets {
    accounts: Mutex<HashMap<Key, Account>>,
}

impl MemoryBudgets {
    fn with<T>(&self, key: &Key, budget: &Budget, f: impl FnOnce(&mut Account) -> T) -> T {
        let now = Instant::now();
        let mut map = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let acc = map.entry(key.clone()).or_insert_with(|| Account { started: now, spent: 0, reserved: 0 });
        if let Some(len) = budget.period.length() {
            if now.saturating_duration_since(acc.started) >= len {
                acc.started = now;
                acc.spent = 0;
            }
        }
        f(acc)
    }
}

impl BudgetStore for MemoryBudgets {
    type Reserve = Ready<Result<(), BudgetExceeded>>;

    fn reserve(&self, key: &Key, budget: &Budget, estimate: u64) -> Self::Reserve {
        ready(self.with(key, budget, |acc| {
            let used = acc.spent.saturating_add(acc.reserved);
            if used.saturating_add(estimate) > budget.limit_micros {
                return Err(BudgetExceeded {
                    key: key.to_string(),
                    period: budget.period.name(),
                    limit_micros: budget.limit_micros,
                    spent_micros: used,
                });
            }
            acc.reserved = acc.reserved.saturating_add(estimate);
            Ok(())
        }))
    }

    fn settle(&self, key: &Key, budget: &Budget, estimate: u64, actual: u64) {
        self.with(key, budget, |acc| {
            acc.reserved = acc.reserved.saturating_sub(estimate);
            acc.spent = acc.spent.saturating_add(actual);
        });
    }

    fn balance(&self, key: &Key) -> Option<(u64, u64)> {
        let map = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|a| (a.spent, a.reserved))
    }
}
