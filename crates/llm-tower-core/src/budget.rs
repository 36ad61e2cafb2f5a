//! The retry budget: a sliding window of requests and retries (tokio time).
//!
//! It lives in core because two layers draw on one: the retry layer (its own
//! budget, per provider) and the failover layer (one per route, shared with
//! the retry layers of the route's providers through [`RouteBudget`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The retry budget: retries may add at most `ratio` of the traffic seen in
/// the last `window`, plus `min_per_sec` retries per second, so a failing
/// upstream sees at most about `(1 + ratio) ×` the traffic, never
/// `max_attempts ×`.
///
/// ```
/// let b = llm_tower_core::budget::BudgetConfig::default();
/// assert_eq!((b.ratio, b.min_per_sec), (0.2, 10));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetConfig {
    /// Fraction of requests that may be retried. Default 0.2.
    pub ratio: f64,
    /// Retries per second always allowed (low traffic). Default 10.
    pub min_per_sec: u32,
    /// The sliding window. Default 10 s.
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { ratio: 0.2, min_per_sec: 10, window: Duration::from_secs(10) }
    }
}

const BUCKETS: u64 = 10;

#[derive(Debug, Default)]
struct Bucket {
    epoch: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Requests deposit, retries withdraw; a retry is allowed while retries in the
/// window stay within `ratio × requests + min_per_sec × window`.
///
/// Lock-free: ten buckets over the window, each stamped with its epoch and
/// reset when reused. A deposit is one atomic increment (no clock read): the
/// pending deposits are folded into the current bucket when the budget is
/// next consulted, which happens on every failure. If that is longer than a
/// window after the previous fold, only the share of the window (at the
/// average rate since) is counted. Concurrent withdrawals can overshoot by at
/// most the number of racing retries.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use llm_tower_core::budget::{BudgetConfig, RetryBudget};
/// let b = RetryBudget::new(BudgetConfig { ratio: 0.5, min_per_sec: 0, window: std::time::Duration::from_secs(10) });
/// for _ in 0..4 { b.deposit(); }
/// assert!(b.withdraw() && b.withdraw());
/// assert!(!b.withdraw(), "50 % of 4 requests is 2 retries");
/// # }
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    cfg: BudgetConfig,
    start: Instant,
    bucket_len: Duration,
    buckets: [Bucket; BUCKETS as usize],
    deposited: AtomicU64,
    folded: AtomicU64,
    last_fold: AtomicU64,
}

impl RetryBudget {
    /// A budget with `cfg`.
    pub fn new(cfg: BudgetConfig) -> Self {
        let bucket_len = (cfg.window / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            cfg,
            start: Instant::now(),
            bucket_len,
            buckets: Default::default(),
            deposited: AtomicU64::new(0),
            folded: AtomicU64::new(0),
            last_fold: AtomicU64::new(0),
        }
    }

    fn epoch_at(&self, now: Instant) -> u64 {
        // Epochs start at 1 so that a fresh bucket (epoch 0) is never current.
        // 64-bit arithmetic: a 128-bit division costs more than the rest of a deposit.
        let since = now.saturating_duration_since(self.start).as_nanos() as u64;
        since / (self.bucket_len.as_nanos() as u64) + 1
    }

    fn current_at(&self, now: Instant) -> &Bucket {
        let e = self.epoch_at(now);
        let b = &self.buckets[(e % BUCKETS) as usize];
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != e && b.epoch.compare_exchange(seen, e, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Records a request: one atomic increment.
    pub fn deposit(&self) {
        self.deposited.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests deposited since the budget was created.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let b = llm_tower_core::budget::RetryBudget::new(Default::default());
    /// b.deposit();
    /// assert_eq!(b.deposited(), 1);
    /// # }
    /// ```
    pub fn deposited(&self) -> u64 {
        self.deposited.load(Ordering::Relaxed)
    }

    /// Folds pending deposits into the bucket of `now`.
    fn fold(&self, now: Instant) {
        let total = self.deposited.load(Ordering::Acquire);
        let n = total.saturating_sub(self.folded.swap(total, Ordering::AcqRel));
        let now_ns = now.saturating_duration_since(self.start).as_nanos() as u64;
        let last = self.last_fold.swap(now_ns, Ordering::AcqRel);
        if n == 0 {
            return;
        }
        let span = now_ns.saturating_sub(last);
        let window = self.cfg.window.as_nanos() as u64;
        let counted =
            if span <= window { n } else { (n as f64 * window as f64 / span as f64).round() as u64 };
        self.current_at(now).requests.fetch_add(counted, Ordering::Relaxed);
    }

    /// Asks for one retry; `false` when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let now = Instant::now();
        self.fold(now);
        let e = self.epoch_at(now);
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let be = b.epoch.load(Ordering::Acquire);
            if be + BUCKETS > e && be <= e {
                requests += b.requests.load(Ordering::Relaxed);
                retries += b.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = requests as f64 * self.cfg.ratio
            + f64::from(self.cfg.min_per_sec) * self.cfg.window.as_secs_f64();
        if (retries + 1) as f64 <= allowed {
            self.current_at(now).retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// A route's retry budget, shared by every extra call made for the route's
/// requests: the failover layer's moves to another backend and the retry
/// layers' retries on each backend. The failover layer puts it in each
/// attempt's extensions (and deposits once per client request); a retry layer
/// that finds it withdraws from it instead of from its own budget, so a
/// route-wide outage adds at most the route's ratio of its traffic, however
/// many providers the route has.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use llm_tower_core::budget::{BudgetConfig, RouteBudget};
/// let route = RouteBudget::new(BudgetConfig { ratio: 0.25, min_per_sec: 0, ..Default::default() });
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(route.clone());
/// for _ in 0..4 { route.deposit(); }
/// // A retry layer below draws on the same budget as the failover above.
/// let below = RouteBudget::of(&req).expect("inserted");
/// assert!(below.withdraw());
/// assert!(!route.withdraw(), "25 % of 4 requests is one extra call");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RouteBudget(pub Arc<RetryBudget>);

impl RouteBudget {
    /// A new route budget with `cfg`.
    pub fn new(cfg: BudgetConfig) -> Self {
        RouteBudget(Arc::new(RetryBudget::new(cfg)))
    }

    /// The route budget `req` carries, if any.
    pub fn of<B>(req: &http::Request<B>) -> Option<&RetryBudget> {
        req.extensions().get::<RouteBudget>().map(|b| &*b.0)
    }
}

impl std::ops::Deref for RouteBudget {
    type Target = RetryBudget;
    fn deref(&self) -> &RetryBudget {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn floor_and_window_slide() {
        let b =
            RetryBudget::new(BudgetConfig { ratio: 0.0, min_per_sec: 1, window: Duration::from_secs(10) });
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 10, "1 per second over a 10 s window");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.withdraw(), "still inside the window");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10, "the old retries left the window");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_long_before_count_only_their_share_of_the_window() {
        let b =
            RetryBudget::new(BudgetConfig { ratio: 1.0, min_per_sec: 0, window: Duration::from_secs(10) });
        assert!(!b.withdraw(), "nothing deposited yet");
        for _ in 0..100 {
            b.deposit();
        }
        // 100 requests over the 40 s since the last look: a quarter fall in the window.
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 25);
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_requests() {
        let b =
            RetryBudget::new(BudgetConfig { ratio: 0.2, min_per_sec: 0, window: Duration::from_secs(10) });
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!((0..1000).filter(|_| b.withdraw()).count(), 200);
    }
}
