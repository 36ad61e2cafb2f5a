//! Breaker configuration.

use std::time::Duration;

/// The sliding window failure and slow-call rates are computed over.
///
/// ```
/// use llm_tower_circuit::Window;
/// let w = Window::Time { buckets: 10, bucket: std::time::Duration::from_secs(1) };
/// assert_ne!(w, Window::Count(100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last N outcomes (a ring).
    Count(u32),
    /// The outcomes of the last `buckets × bucket` of time.
    Time {
        /// Number of buckets.
        buckets: u32,
        /// Width of one bucket.
        bucket: Duration,
    },
}

/// Trip on a failure rate once enough calls are in the window.
///
/// ```
/// let r = llm_tower_circuit::RateRule { threshold: 0.5, min_calls: 20 };
/// assert!(r.threshold > 0.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateRule {
    /// Trip when failures / calls reaches this (0..=1).
    pub threshold: f64,
    /// Calls in the window before the rate counts.
    pub min_calls: u32,
}

/// Trip when too many calls are slow.
///
/// ```
/// use std::time::Duration;
/// let r = llm_tower_circuit::SlowRule { slower_than: Duration::from_secs(20), threshold: 0.8, min_calls: 10 };
/// assert_eq!(r.min_calls, 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlowRule {
    /// A call is slow when its response head takes at least this long.
    pub slower_than: Duration,
    /// Trip when slow calls / calls reaches this (0..=1).
    pub threshold: f64,
    /// Calls in the window before the rate counts.
    pub min_calls: u32,
}

/// When a breaker opens, how long it stays open, and how it recovers.
///
/// Defaults: open after 5 consecutive failures, or a 50 % failure rate over
/// the last 100 calls once 20 are seen; no slow-call rule; open for 60 s,
/// growing ×2 per repeated trip up to 10 min, ±10 % jitter; half-open admits 3
/// probes and closes after 3 successes; a `retry-after` on a failure holds the
/// circuit open at least that long (up to 10 min); at most 10,000 keys, idle
/// keys pruned after 10 min.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_circuit::{CircuitConfig, Window};
/// let cfg = CircuitConfig::default()
///     .consecutive_failures(Some(3))
///     .window(Window::Time { buckets: 10, bucket: Duration::from_secs(1) })
///     .open_duration(Duration::from_secs(30));
/// assert_eq!(cfg.half_open_probes, 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct CircuitConfig {
    /// Trip after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// Trip on a failure rate.
    pub failure_rate: Option<RateRule>,
    /// Trip on a slow-call rate.
    pub slow_calls: Option<SlowRule>,
    /// The window for the rate rules.
    pub window: Window,
    /// First open period.
    pub open_duration: Duration,
    /// Growth of the open period per repeated trip (without a close between).
    pub open_backoff: f64,
    /// Largest open period.
    pub max_open_duration: Duration,
    /// Random spread of the open period, a fraction (0.1 = ±10 %).
    pub open_jitter: f64,
    /// Probes admitted while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close the circuit.
    pub half_open_successes: u32,
    /// Hold the circuit open at least as long as a failure's `retry-after`.
    pub honor_retry_after: bool,
    /// Longest `retry-after` honoured.
    pub max_retry_after: Duration,
    /// Keys kept at most (idle ones pruned first).
    pub max_keys: usize,
    /// A key unused this long may be pruned.
    pub idle_ttl: Duration,
}

/// The bare layer opens after 5 consecutive failures. `LlmStack`'s
/// `ProviderSpec` and the gateway use 10: they put a retry layer above the
/// breaker, so one failing request is up to 3 failed calls.
impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            failure_rate: Some(RateRule { threshold: 0.5, min_calls: 20 }),
            slow_calls: None,
            window: Window::Count(100),
            open_duration: Duration::from_secs(60),
            open_backoff: 2.0,
            max_open_duration: Duration::from_secs(600),
            open_jitter: 0.1,
            half_open_probes: 3,
            half_open_successes: 3,
            honor_retry_after: true,
            max_retry_after: Duration::from_secs(600),
            max_keys: 10_000,
            idle_ttl: Duration::from_secs(600),
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }
    };
}

impl CircuitConfig {
    setter!(/// Sets the consecutive-failure rule.
        consecutive_failures: Option<u32>);
    setter!(/// Sets the failure-rate rule.
        failure_rate: Option<RateRule>);
    setter!(/// Sets the slow-call rule.
        slow_calls: Option<SlowRule>);
    setter!(/// Sets the window.
        window: Window);
    setter!(/// Sets the first open period.
        open_duration: Duration);
    setter!(/// Sets the growth per repeated trip.
        open_backoff: f64);
    setter!(/// Sets the largest open period.
        max_open_duration: Duration);
    setter!(/// Sets the open-period jitter fraction.
        open_jitter: f64);
    setter!(/// Sets the probes admitted while half-open.
        half_open_probes: u32);
    setter!(/// Sets the successes that close the circuit.
        half_open_successes: u32);
    setter!(/// Whether failures' `retry-after` hold the circuit open.
        honor_retry_after: bool);
    setter!(/// Sets the key bound.
        max_keys: usize);
    setter!(/// Sets the idle time after which a key may be pruned.
        idle_ttl: Duration);
}
