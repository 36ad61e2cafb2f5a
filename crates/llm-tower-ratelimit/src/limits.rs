//! What to limit, and what to do at the limit.

use std::time::Duration;

/// At a limit: refuse at once, or wait (first come, first served) up to a bound.
///
/// ```
/// use std::time::Duration;
/// let m = llm_tower_ratelimit::Mode::Wait { max_wait: Duration::from_secs(5), max_queue: 100 };
/// assert_ne!(m, llm_tower_ratelimit::Mode::Reject);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Refuse with `RateLimited { retry_after }` at once.
    Reject,
    /// Wait in FIFO order if the wait is at most `max_wait` and fewer than
    /// `max_queue` requests of the key are already waiting; else refuse.
    Wait {
        /// Longest wait accepted.
        max_wait: Duration,
        /// Most requests waiting per key.
        max_queue: u32,
    },
}

/// Which limit decided.
///
/// ```
/// assert_eq!(llm_tower_ratelimit::LimitKind::TokensPerMinute.name(), "tokens_per_minute");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Requests per minute.
    RequestsPerMinute,
    /// Requests per day.
    RequestsPerDay,
    /// Tokens per minute.
    TokensPerMinute,
    /// Minimum interval between requests.
    MinInterval,
    /// Concurrent requests.
    Concurrency,
    /// A hold or pace learned from the provider's own headers.
    Adaptive,
}

impl LimitKind {
    /// The limit's name in errors and stats.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::RequestsPerDay => "requests_per_day",
            LimitKind::TokensPerMinute => "tokens_per_minute",
            LimitKind::MinInterval => "min_interval",
            LimitKind::Concurrency => "concurrency",
            LimitKind::Adaptive => "provider_limit",
        }
    }
}

/// A set of limits applied per key; any combination, all taken atomically.
///
/// Rates are continuous (GCRA): 60 requests per minute with the default burst
/// (the whole minute) lets 60 through at once, then one a second.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_ratelimit::{Limits, Mode};
/// let l = Limits::default()
///     .requests_per_minute(500)
///     .tokens_per_minute(200_000)
///     .max_concurrent(32)
///     .mode(Mode::Wait { max_wait: Duration::from_secs(10), max_queue: 1000 });
/// assert_eq!(l.requests_per_minute, Some(500));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Requests per day.
    pub requests_per_day: Option<u32>,
    /// Tokens per minute, weighted by each request's token estimate.
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once (until the response body ends or is dropped).
    pub max_concurrent: Option<u32>,
    /// Minimum time between two requests.
    pub min_interval: Option<Duration>,
    /// Requests that may pass at once under the per-minute limit (default: all of it).
    pub burst: Option<u32>,
    /// Reject or wait.
    pub mode: Mode,
    /// Output tokens assumed for a request without `max_tokens`. Default 256.
    pub default_output_tokens: u32,
    /// Read the provider's `x-ratelimit-*` and 429 `retry-after` and slow down
    /// before it refuses. Default on.
    pub adaptive: bool,
    /// Set OpenAI-style `x-ratelimit-*` headers from this limiter's state on
    /// successful responses (marked with core's `LocalRateLimitHeaders`, so an
    /// adaptive limiter above ignores them). Never on failures: their hints
    /// stay the upstream's, for a retry or breaker layer above. Default on.
    pub emit_headers: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            requests_per_day: None,
            tokens_per_minute: None,
            max_concurrent: None,
            min_interval: None,
            burst: None,
            mode: Mode::Reject,
            default_output_tokens: 256,
            adaptive: true,
            emit_headers: true,
        }
    }
}

macro_rules! setter {
    ($(#[$d:meta])* $name:ident: $ty:ty => $field:ident $(, $wrap:path)?) => {
        $(#[$d])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.$field = setter!(@wrap v $(, $wrap)?);
            self
        }
    };
    (@wrap $v:ident, $wrap:path) => { $wrap($v) };
    (@wrap $v:ident) => { $v };
}

impl Limits {
    setter!(/// Sets requests per minute.
        requests_per_minute: u32 => requests_per_minute, Some);
    setter!(/// Sets requests per day.
        requests_per_day: u32 => requests_per_day, Some);
    setter!(/// Sets tokens per minute.
        tokens_per_minute: u32 => tokens_per_minute, Some);
    setter!(/// Sets the concurrency cap.
        max_concurrent: u32 => max_concurrent, Some);
    setter!(/// Sets the minimum interval between requests.
        min_interval: Duration => min_interval, Some);
    setter!(/// Sets the per-minute burst.
        burst: u32 => burst, Some);
    setter!(/// Sets the mode.
        mode: Mode => mode);
    setter!(/// Sets the output tokens assumed without `max_tokens`.
        default_output_tokens: u32 => default_output_tokens);
    setter!(/// Turns provider-header adaptation on or off.
        adaptive: bool => adaptive);
    setter!(/// Turns response rate-limit headers on or off.
        emit_headers: bool => emit_headers);

    /// The rate parameters of these limits.
    pub fn rates(&self) -> Rates {
        let rate = |limit: u32, period: Duration, burst: u32| {
            (limit > 0)
                .then(|| Rate::new(period.as_nanos() as u64, u64::from(limit), u64::from(burst.max(1))))
        };
        Rates {
            rpm: self
                .requests_per_minute
                .and_then(|l| rate(l, Duration::from_secs(60), self.burst.unwrap_or(l))),
            rpd: self.requests_per_day.and_then(|l| rate(l, Duration::from_secs(86_400), l)),
            tpm: self.tokens_per_minute.and_then(|l| rate(l, Duration::from_secs(60), l)),
            interval: self
                .min_interval
                .filter(|d| !d.is_zero())
                .map(|d| Rate::new(d.as_nanos() as u64, 1, 1)),
        }
    }
}

/// One GCRA rate: `limit` units per `period`, up to `burst` units at once.
///
/// ```
/// let r = llm_tower_ratelimit::Rate::new(60_000_000_000, 60, 60);
/// assert_eq!(r.cost_ns(1), 1_000_000_000);
/// assert_eq!(r.capacity_ns(), 60_000_000_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    period_ns: u64,
    limit: u64,
    burst: u64,
    /// `period / limit` when it divides exactly (the common case): one multiply per cost.
    unit_ns: Option<u64>,
    capacity_ns: u64,
}

impl Rate {
    /// `limit` units per `period_ns` nanoseconds, `burst` at once.
    pub fn new(period_ns: u64, limit: u64, burst: u64) -> Self {
        let limit = limit.max(1);
        let exact = (period_ns % limit == 0).then_some(period_ns / limit);
        let mut r = Rate { period_ns, limit, burst: burst.max(1), unit_ns: exact, capacity_ns: 0 };
        r.capacity_ns = r.cost_ns(r.burst);
        r
    }

    /// Units per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Units at once.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Time `units` take, in nanoseconds (exact integer arithmetic).
    pub fn cost_ns(&self, units: u64) -> u64 {
        match self.unit_ns {
            Some(u) => units.saturating_mul(u).min(u64::MAX / 4),
            None => {
                let ns = u128::from(units) * u128::from(self.period_ns) / u128::from(self.limit);
                ns.min(u128::from(u64::MAX / 4)) as u64
            }
        }
    }

    /// The burst, in nanoseconds.
    pub fn capacity_ns(&self) -> u64 {
        self.capacity_ns
    }
}

/// The rates a request is checked against (passed to the store with each demand,
/// so a store needs no configuration of its own).
///
/// ```
/// let rates = llm_tower_ratelimit::Limits::default().requests_per_minute(60).rates();
/// assert!(rates.rpm.is_some() && rates.tpm.is_none());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    /// Requests per minute.
    pub rpm: Option<Rate>,
    /// Requests per day.
    pub rpd: Option<Rate>,
    /// Tokens per minute.
    pub tpm: Option<Rate>,
    /// Minimum interval.
    pub interval: Option<Rate>,
}
