//! The breaker's section of a configuration file
//! (`[providers.circuit_breaker]`), behind the `serde` feature: serde types,
//! validation naming each field's path, and conversion to a [`CircuitConfig`].

use std::time::Duration;

use llm_tower_core::config::ConfigError;
use serde::Deserialize;

use crate::{CircuitConfig, RateRule, SlowRule, Window};

/// What one breaker covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerKey {
    /// One breaker for the provider.
    Provider,
    /// One breaker per model of the provider (an overloaded model does not
    /// take the others down).
    Model,
}

/// `[providers.circuit_breaker]`. Defaults: one breaker per provider; open
/// after 10 consecutive failures (as `LlmStack`'s `ProviderSpec`: a retry
/// layer above turns one failing request into up to 3 failed calls; the bare
/// `CircuitConfig` default is 5) or a 50 % failure rate over the last 100 calls
/// (once 20 are seen); open 60 s, ×2 per repeated trip up to 600 s; 3 probes,
/// 3 successes to close; `retry-after` honoured.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Use a breaker at all. Default true.
    pub enabled: bool,
    /// One breaker per provider or per model.
    pub key: BreakerKey,
    /// Trip after this many failures in a row (0 disables).
    pub consecutive_failures: u32,
    /// Trip at this failure rate (0 disables).
    pub failure_rate: f64,
    /// Calls in the window before rates count.
    pub min_calls: u32,
    /// Window over the last N calls (default 100) ...
    pub window_calls: Option<u32>,
    /// ... or over the last N seconds.
    pub window_secs: Option<u32>,
    /// A call slower than this (ms, to the response head) is slow.
    pub slow_call_ms: Option<u64>,
    /// Trip at this slow-call rate.
    pub slow_call_rate: f64,
    /// First open period, s.
    pub open_secs: u64,
    /// Growth per repeated trip.
    pub open_backoff: f64,
    /// Largest open period, s.
    pub max_open_secs: u64,
    /// Probes admitted while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close it.
    pub half_open_successes: u32,
    /// Hold open at least as long as a failure's `retry-after`.
    pub honor_retry_after: bool,
}

impl Default for BreakerSection {
    fn default() -> Self {
        Self {
            enabled: true,
            key: BreakerKey::Provider,
            consecutive_failures: 10,
            failure_rate: 0.5,
            min_calls: 20,
            window_calls: None,
            window_secs: None,
            slow_call_ms: None,
            slow_call_rate: 0.8,
            open_secs: 60,
            open_backoff: 2.0,
            max_open_secs: 600,
            half_open_probes: 3,
            half_open_successes: 3,
            honor_retry_after: true,
        }
    }
}

impl BreakerSection {
    /// Every problem of this section, its fields named under `path`
    /// (`providers[0].circuit_breaker`).
    ///
    /// ```
    /// let s: llm_tower_circuit::section::BreakerSection =
    ///     serde_json::from_str(r#"{"failure_rate": 1.5, "half_open_probes": 2, "half_open_successes": 3}"#).unwrap();
    /// let fields: Vec<_> = s.check("cb").into_iter().map(|e| e.field).collect();
    /// assert_eq!(fields, ["cb.failure_rate", "cb.half_open_successes"]);
    /// ```
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut err = |field: &str, message: &str| errs.push(ConfigError::at(path, field, message));
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if !rate_ok(self.failure_rate) {
            err("failure_rate", "must be between 0 and 1");
        }
        if !rate_ok(self.slow_call_rate) || self.slow_call_rate == 0.0 {
            err("slow_call_rate", "must be greater than 0 and at most 1");
        }
        if self.window_calls.is_some() && self.window_secs.is_some() {
            err("window_secs", "set window_calls or window_secs, not both");
        }
        if self.window_calls == Some(0) || self.window_secs == Some(0) {
            err("window_calls", "the window must not be empty");
        }
        if self.half_open_probes == 0 {
            err("half_open_probes", "must be at least 1");
        }
        if self.half_open_successes == 0 || self.half_open_successes > self.half_open_probes {
            err("half_open_successes", "must be between 1 and half_open_probes");
        }
        if !(self.open_backoff >= 1.0 && self.open_backoff.is_finite()) {
            err("open_backoff", "must be a number >= 1");
        }
        errs
    }

    /// The breaker configuration this section describes (never trips when disabled).
    pub fn to_config(&self) -> CircuitConfig {
        let window = match (self.window_calls, self.window_secs) {
            (_, Some(s)) => Window::Time { buckets: s.clamp(1, 600), bucket: Duration::from_secs(1) },
            (n, None) => Window::Count(n.unwrap_or(100)),
        };
        let on = self.enabled;
        CircuitConfig::default()
            .consecutive_failures((on && self.consecutive_failures > 0).then_some(self.consecutive_failures))
            .failure_rate(
                (on && self.failure_rate > 0.0)
                    .then_some(RateRule { threshold: self.failure_rate, min_calls: self.min_calls }),
            )
            .slow_calls(self.slow_call_ms.filter(|_| on).map(|ms| SlowRule {
                slower_than: Duration::from_millis(ms),
                threshold: self.slow_call_rate,
                min_calls: self.min_calls,
            }))
            .window(window)
            .open_duration(Duration::from_secs(self.open_secs))
            .open_backoff(self.open_backoff)
            .max_open_duration(Duration::from_secs(self.max_open_secs.max(self.open_secs)))
            .half_open_probes(self.half_open_probes.max(1))
            .half_open_successes(self.half_open_successes.clamp(1, self.half_open_probes.max(1)))
            .honor_retry_after(self.honor_retry_after)
    }
}
