//! The retry policy: how many attempts, how long to wait, what bounds it all.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use llm_tower_core::budget::BudgetConfig;

/// The delay schedule between attempts (before jitter).
///
/// ```
/// use std::time::Duration;
/// use llm_tower_retry::Backoff;
/// let b = Backoff::Exponential { base: Duration::from_millis(100), factor: 2.0, cap: Duration::from_secs(1) };
/// assert_eq!(b.raw(1), Duration::from_millis(100));
/// assert_eq!(b.raw(3), Duration::from_millis(400));
/// assert_eq!(b.raw(10), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backoff {
    /// `base × factor^(retry-1)`, at most `cap`.
    Exponential {
        /// First delay.
        base: Duration,
        /// Growth per retry.
        factor: f64,
        /// Largest delay.
        cap: Duration,
    },
    /// `base + step × (retry-1)`, at most `cap`.
    Linear {
        /// First delay.
        base: Duration,
        /// Added per retry.
        step: Duration,
        /// Largest delay.
        cap: Duration,
    },
    /// The same delay every time.
    Fixed(Duration),
    /// "Decorrelated jitter": each delay is uniform in `[base, 3 × previous]`,
    /// at most `cap` (the jitter setting is ignored: this schedule is random).
    Decorrelated {
        /// Smallest delay.
        base: Duration,
        /// Largest delay.
        cap: Duration,
    },
}

impl Backoff {
    /// The scheduled delay before retry number `retry` (1 for the first retry),
    /// without jitter. For `Decorrelated` this is its upper bound.
    pub fn raw(&self, retry: u32) -> Duration {
        let n = retry.max(1) - 1;
        match *self {
            Backoff::Exponential { base, factor, cap } => {
                let secs = base.as_secs_f64() * factor.max(1.0).powi(n.min(1000) as i32);
                Duration::try_from_secs_f64(secs).unwrap_or(cap).min(cap)
            }
            Backoff::Linear { base, step, cap } => base.saturating_add(step.saturating_mul(n)).min(cap),
            Backoff::Fixed(d) => d,
            Backoff::Decorrelated { cap, .. } => cap,
        }
    }

    fn base(&self) -> Duration {
        match *self {
            Backoff::Exponential { base, .. }
            | Backoff::Linear { base, .. }
            | Backoff::Decorrelated { base, .. } => base,
            Backoff::Fixed(d) => d,
        }
    }
}

/// How randomness spreads the scheduled delay (so clients do not retry in lockstep).
///
/// ```
/// assert_eq!(llm_tower_retry::Jitter::default(), llm_tower_retry::Jitter::Full);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, delay]` (the default; best at spreading load).
    #[default]
    Full,
    /// `delay/2 + uniform[0, delay/2]`.
    Equal,
    /// Uniform in `[base, 3 × previous delay]`, at most the scheduled delay.
    Decorrelated,
    /// Exactly the scheduled delay.
    None,
}

/// A source of uniform random numbers in `[0, 1)`. Inject a seeded one in tests.
pub trait RandomSource: Send + Sync + 'static {
    /// The next number in `[0, 1)`.
    fn next_f64(&self) -> f64;
}

/// A fast per-thread generator seeded from the process's random state (default).
///
/// ```
/// use llm_tower_retry::{RandomSource, ThreadRandom};
/// let x = ThreadRandom.next_f64();
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRandom;

thread_local! {
    static STATE: Cell<u64> = Cell::new({
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(&h as *const _ as usize);
        h.finish() | 1
    });
}

impl RandomSource for ThreadRandom {
    fn next_f64(&self) -> f64 {
        STATE.with(|s| {
            let mut x = s.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.set(x);
            (x >> 11) as f64 / (1u64 << 53) as f64
        })
    }
}

/// A deterministic generator: the same seed gives the same sequence.
///
/// ```
/// use llm_tower_retry::{RandomSource, SeededRandom};
/// let (a, b) = (SeededRandom::new(7), SeededRandom::new(7));
/// assert_eq!(a.next_f64(), b.next_f64());
/// ```
#[derive(Debug)]
pub struct SeededRandom(AtomicU64);

impl SeededRandom {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }
}

impl RandomSource for SeededRandom {
    fn next_f64(&self) -> f64 {
        // splitmix64 over an atomic counter: lock-free and deterministic.
        let mut z =
            self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A limit on each attempt's wait for the response head.
///
/// ```
/// use std::time::Duration;
/// let t = llm_tower_retry::AttemptTimeout::Fixed(Duration::from_secs(20));
/// # let _ = t;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttemptTimeout {
    /// The same limit for every attempt.
    Fixed(Duration),
    /// A high quantile of recent successful latencies times `factor`, clamped
    /// to `[floor, ceiling]`; `ceiling` until `min_samples` successes are seen.
    Adaptive {
        /// The quantile (e.g. 0.99).
        quantile: f64,
        /// Multiplier on the quantile.
        factor: f64,
        /// Smallest limit.
        floor: Duration,
        /// Largest limit (and the limit before enough samples).
        ceiling: Duration,
        /// Samples needed before adapting.
        min_samples: usize,
    },
}

/// Everything that decides whether, when and how often to retry.
///
/// Defaults: 3 attempts; exponential backoff from 500 ms doubling to 8 s with
/// full jitter; server hints honoured up to 60 s; a 20 % retry budget; no
/// deadline and no per-attempt timeout; 429 bodies checked for
/// `insufficient_quota`.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_retry::{Backoff, Jitter, RetryPolicy};
/// let p = RetryPolicy::default()
///     .max_attempts(5)
///     .backoff(Backoff::Fixed(Duration::from_millis(200)))
///     .jitter(Jitter::None)
///     .deadline(Duration::from_secs(30));
/// assert_eq!(p.max_attempts, 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 3.
    pub max_attempts: u32,
    /// Delay schedule.
    pub backoff: Backoff,
    /// Delay randomization.
    pub jitter: Jitter,
    /// A server hint longer than this means "do not retry": the response goes
    /// back at once, with its `retry-after`. Default 60 s.
    pub max_retry_after: Duration,
    /// The retry budget (`None`: unbounded).
    pub budget: Option<BudgetConfig>,
    /// Bound on all attempts and waits together.
    pub deadline: Option<Duration>,
    /// Bound on each attempt's wait for the response head.
    pub attempt_timeout: Option<AttemptTimeout>,
    /// Read 429 bodies (≤ 16 KiB) and never retry `insufficient_quota`. Default on.
    pub check_quota: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::Exponential {
                base: Duration::from_millis(500),
                factor: 2.0,
                cap: Duration::from_secs(8),
            },
            jitter: Jitter::Full,
            max_retry_after: Duration::from_secs(60),
            budget: Some(BudgetConfig::default()),
            deadline: None,
            attempt_timeout: None,
            check_quota: true,
        }
    }
}

impl RetryPolicy {
    /// Sets the number of attempts (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
    /// Sets the backoff.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }
    /// Sets the jitter.
    pub fn jitter(mut self, j: Jitter) -> Self {
        self.jitter = j;
        self
    }
    /// Sets the longest server hint that is still retried.
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }
    /// Sets (or removes) the retry budget.
    pub fn budget(mut self, b: Option<BudgetConfig>) -> Self {
        self.budget = b;
        self
    }
    /// Sets the total deadline.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }
    /// Sets the per-attempt timeout.
    pub fn attempt_timeout(mut self, t: AttemptTimeout) -> Self {
        self.attempt_timeout = Some(t);
        self
    }
    /// Whether to read 429 bodies for `insufficient_quota`.
    pub fn check_quota(mut self, on: bool) -> Self {
        self.check_quota = on;
        self
    }

    /// The delay before retry number `retry` (1-based), given the previous
    /// delay (for decorrelated jitter) and a random source. Rounded up to
    /// whole milliseconds, tokio's timer resolution, so the wait is exact.
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_tower_retry::{Backoff, Jitter, RetryPolicy, SeededRandom};
    /// let p = RetryPolicy::default().backoff(Backoff::Fixed(Duration::from_secs(1))).jitter(Jitter::None);
    /// assert_eq!(p.delay(4, Duration::ZERO, &SeededRandom::new(1)), Duration::from_secs(1));
    /// ```
    pub fn delay(&self, retry: u32, prev: Duration, rng: &dyn RandomSource) -> Duration {
        let base = self.backoff.base();
        let decorrelated = |cap: Duration| {
            let lo = base.min(cap);
            let hi = prev.saturating_mul(3).max(lo).min(cap);
            lo + (hi - lo).mul_f64(rng.next_f64())
        };
        let raw = self.backoff.raw(retry);
        let d = match (self.backoff, self.jitter) {
            (Backoff::Decorrelated { cap, .. }, _) => decorrelated(cap),
            (_, Jitter::None) => raw,
            (_, Jitter::Full) => raw.mul_f64(rng.next_f64()),
            (_, Jitter::Equal) => raw / 2 + (raw / 2).mul_f64(rng.next_f64()),
            (_, Jitter::Decorrelated) => decorrelated(raw),
        };
        Duration::from_millis(d.as_micros().div_ceil(1000) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that always returns the same number.
    struct Const(f64);
    impl RandomSource for Const {
        fn next_f64(&self) -> f64 {
            self.0
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn schedules() {
        let exp = Backoff::Exponential { base: MS(100), factor: 3.0, cap: MS(2000) };
        assert_eq!([1, 2, 3, 4].map(|n| exp.raw(n)), [MS(100), MS(300), MS(900), MS(2000)]);
        let lin = Backoff::Linear { base: MS(100), step: MS(50), cap: MS(220) };
        assert_eq!([1, 2, 3, 4].map(|n| lin.raw(n)), [MS(100), MS(150), MS(200), MS(220)]);
        assert_eq!(Backoff::Fixed(MS(7)).raw(9), MS(7));
        assert_eq!(exp.raw(u32::MAX), MS(2000), "no overflow");
    }

    #[test]
    fn jitters() {
        let p = RetryPolicy::default().backoff(Backoff::Fixed(MS(1000)));
        assert_eq!(p.jitter(Jitter::Full).delay(1, MS(0), &Const(0.25)), MS(250));
        assert_eq!(p.jitter(Jitter::Equal).delay(1, MS(0), &Const(0.5)), MS(750));
        assert_eq!(p.jitter(Jitter::None).delay(1, MS(0), &Const(0.9)), MS(1000));
        let d = RetryPolicy::default().backoff(Backoff::Decorrelated { base: MS(100), cap: MS(10_000) });
        // uniform in [base, 3 × previous]
        assert_eq!(d.delay(2, MS(400), &Const(0.5)), MS(100) + (MS(1200) - MS(100)) / 2);
        assert_eq!(d.delay(2, MS(5000), &Const(1.0)), MS(10_000), "capped");
        let dj = RetryPolicy::default()
            .backoff(Backoff::Exponential { base: MS(100), factor: 2.0, cap: MS(10_000) })
            .jitter(Jitter::Decorrelated);
        assert_eq!(dj.delay(3, MS(1000), &Const(1.0)), MS(400), "bounded by the scheduled delay");
    }

    #[test]
    fn seeded_is_reproducible_and_uniform() {
        let a = SeededRandom::new(42);
        let xs: Vec<f64> = (0..10_000).map(|_| a.next_f64()).collect();
        let b = SeededRandom::new(42);
        assert!(xs.iter().all(|x| *x == b.next_f64()));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    }
}
