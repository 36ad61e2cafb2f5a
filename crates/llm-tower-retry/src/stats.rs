//! Counters and their snapshot.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a retry layer's counters.
///
/// ```
/// let layer = llm_tower_retry::RetryLayer::new(Default::default());
/// assert_eq!(layer.stats().requests, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RetryStats {
    /// Requests received.
    pub requests: u64,
    /// Retries made.
    pub retries: u64,
    /// Retries by reason (`status_503`, `timeout`, `connect`, ...).
    pub by_reason: BTreeMap<String, u64>,
    /// Retries refused by the budget.
    pub budget_refusals: u64,
    /// Retries refused because the server asked for a wait over `max_retry_after`.
    pub hint_refusals: u64,
    /// Retries refused because the deadline would pass.
    pub deadline_refusals: u64,
    /// 429s not retried because the quota is exhausted.
    pub quota_refusals: u64,
    /// Failures not retried here because another backend could serve the
    /// request (the failover's `RetryElsewhere`).
    pub elsewhere_refusals: u64,
    /// Requests that failed after at least one retry.
    pub give_ups: u64,
    /// Requests that succeeded after at least one retry.
    pub recovered: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) budget_refusals: AtomicU64,
    pub(crate) hint_refusals: AtomicU64,
    pub(crate) deadline_refusals: AtomicU64,
    pub(crate) quota_refusals: AtomicU64,
    pub(crate) elsewhere_refusals: AtomicU64,
    pub(crate) give_ups: AtomicU64,
    pub(crate) recovered: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self, reason: &str) {
        Self::bump(&self.retries);
        metrics::counter!("llm_tower_retries_total", "reason" => reason.to_owned()).increment(1);
        *self.reasons.lock().unwrap_or_else(|e| e.into_inner()).entry(reason.to_owned()).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> RetryStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RetryStats {
            requests: l(&self.requests),
            retries: l(&self.retries),
            by_reason: self.reasons.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            budget_refusals: l(&self.budget_refusals),
            hint_refusals: l(&self.hint_refusals),
            deadline_refusals: l(&self.deadline_refusals),
            quota_refusals: l(&self.quota_refusals),
            elsewhere_refusals: l(&self.elsewhere_refusals),
            give_ups: l(&self.give_ups),
            recovered: l(&self.recovered),
        }
    }
}
