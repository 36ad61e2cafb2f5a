//! The retry layer's section of a configuration file (`[providers.retry]`),
//! behind the `serde` feature: serde types, validation naming each field's
//! path, and conversion to a [`RetryPolicy`].

use std::time::Duration;

use llm_tower_core::config::ConfigError;
use serde::Deserialize;

use crate::{Backoff, BudgetConfig, Jitter, RetryPolicy};

/// Backoff schedule names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// `base × factor^n`, capped.
    Exponential,
    /// `base + step × n`, capped.
    Linear,
    /// Always `base`.
    Fixed,
    /// Uniform in `[base, 3 × previous]`, capped.
    Decorrelated,
}

/// Jitter names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitterKind {
    /// Uniform in `[0, delay]`.
    Full,
    /// `delay/2 + uniform[0, delay/2]`.
    Equal,
    /// Uniform in `[base, 3 × previous]`.
    Decorrelated,
    /// None.
    None,
}

/// `[providers.retry]`. Defaults: 3 attempts, exponential from 500 ms ×2 up
/// to 8 s, full jitter, server hints up to 60 s, a 20 % budget (+10/s over
/// 10 s), a deadline equal to the provider's headers timeout (all attempts
/// and waits together), no per-attempt timeout.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Retry at all. Default true.
    pub enabled: bool,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Schedule.
    pub backoff: BackoffKind,
    /// First delay, ms.
    pub base_ms: u64,
    /// Growth (exponential).
    pub factor: f64,
    /// Step, ms (linear).
    pub step_ms: u64,
    /// Largest delay, ms.
    pub cap_ms: u64,
    /// Jitter.
    pub jitter: JitterKind,
    /// Longer server hints are not retried, s.
    pub max_retry_after_secs: u64,
    /// Bound retries by a budget.
    pub budget: bool,
    /// Budget: fraction of requests that may be retried.
    pub budget_ratio: f64,
    /// Budget: retries per second always allowed.
    pub budget_min_per_sec: u32,
    /// Budget window, s.
    pub budget_window_secs: u64,
    /// Deadline over all attempts and waits, ms. Default: the provider's
    /// `timeouts.headers_ms`.
    pub deadline_ms: Option<u64>,
    /// Per-attempt limit on the wait for the response head, ms.
    pub attempt_timeout_ms: Option<u64>,
}

impl Default for RetrySection {
    fn default() -> Self {
        let b = BudgetConfig::default();
        Self {
            enabled: true,
            max_attempts: 3,
            backoff: BackoffKind::Exponential,
            base_ms: 500,
            factor: 2.0,
            step_ms: 500,
            cap_ms: 8000,
            jitter: JitterKind::Full,
            max_retry_after_secs: 60,
            budget: true,
            budget_ratio: b.ratio,
            budget_min_per_sec: b.min_per_sec,
            budget_window_secs: b.window.as_secs(),
            deadline_ms: None,
            attempt_timeout_ms: None,
        }
    }
}

impl RetrySection {
    /// Every problem of this section, its fields named under `path`
    /// (`providers[0].retry`).
    ///
    /// ```
    /// let s: llm_tower_retry::section::RetrySection =
    ///     serde_json::from_str(r#"{"max_attempts": 0, "base_ms": 900, "cap_ms": 100}"#).unwrap();
    /// let fields: Vec<_> = s.check("retry").into_iter().map(|e| e.field).collect();
    /// assert_eq!(fields, ["retry.max_attempts", "retry.cap_ms"]);
    /// ```
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut err = |field: &str, message: &str| errs.push(ConfigError::at(path, field, message));
        if self.max_attempts == 0 {
            err("max_attempts", "must be at least 1");
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            err("factor", "must be a number >= 1");
        }
        if !(0.0..=10.0).contains(&self.budget_ratio) {
            err("budget_ratio", "must be between 0 and 10");
        }
        if self.budget_window_secs == 0 {
            err("budget_window_secs", "must be at least 1");
        }
        if self.cap_ms < self.base_ms {
            err("cap_ms", "must be at least base_ms");
        }
        errs
    }

    /// The retry policy this section describes (one attempt when disabled).
    pub fn to_policy(&self) -> RetryPolicy {
        let (base, cap) = (Duration::from_millis(self.base_ms), Duration::from_millis(self.cap_ms));
        let backoff = match self.backoff {
            BackoffKind::Exponential => Backoff::Exponential { base, factor: self.factor, cap },
            BackoffKind::Linear => Backoff::Linear { base, step: Duration::from_millis(self.step_ms), cap },
            BackoffKind::Fixed => Backoff::Fixed(base),
            BackoffKind::Decorrelated => Backoff::Decorrelated { base, cap },
        };
        let jitter = match self.jitter {
            JitterKind::Full => Jitter::Full,
            JitterKind::Equal => Jitter::Equal,
            JitterKind::Decorrelated => Jitter::Decorrelated,
            JitterKind::None => Jitter::None,
        };
        let budget = self.budget.then(|| BudgetConfig {
            ratio: self.budget_ratio,
            min_per_sec: self.budget_min_per_sec,
            window: Duration::from_secs(self.budget_window_secs.max(1)),
        });
        let mut p = RetryPolicy::default()
            .max_attempts(if self.enabled { self.max_attempts } else { 1 })
            .backoff(backoff)
            .jitter(jitter)
            .max_retry_after(Duration::from_secs(self.max_retry_after_secs))
            .budget(budget);
        if let Some(ms) = self.deadline_ms {
            p = p.deadline(Duration::from_millis(ms));
        }
        if let Some(ms) = self.attempt_timeout_ms {
            p = p.attempt_timeout(crate::AttemptTimeout::Fixed(Duration::from_millis(ms)));
        }
        p
    }
}
