//! The limiter's section of a configuration file (`[providers.rate_limit]`,
//! `[tenants.default]`, `[tenants.overrides.NAME]`), behind the `serde`
//! feature: serde types, validation naming each field's path, and conversion
//! to [`Limits`].

use std::time::Duration;

use llm_tower_core::config::ConfigError;
use serde::Deserialize;

use crate::{Limits, Mode};

/// What to do at a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeKind {
    /// Answer 429 with `retry-after` at once.
    Reject,
    /// Wait in FIFO order up to `max_wait_ms`, then 429.
    Wait,
}

/// Rate limits (`[providers.rate_limit]`, `[tenants.default]`,
/// `[tenants.overrides.NAME]`). Every limit is off unless set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Requests per day.
    pub requests_per_day: Option<u32>,
    /// Tokens per minute (input estimate + max output; reconciled with real usage).
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
    /// Minimum gap between requests, ms.
    pub min_interval_ms: Option<u64>,
    /// Requests at once under the per-minute limit (default: the whole minute).
    pub burst: Option<u32>,
    /// Reject or wait. Providers default to wait (smooths bursts), tenants to reject.
    pub mode: Option<ModeKind>,
    /// Longest wait, ms (wait mode). Default 2000.
    pub max_wait_ms: u64,
    /// Most requests waiting per key (wait mode). Default 1000.
    pub max_queue: u32,
    /// Follow the provider's `x-ratelimit-*` and 429 `retry-after`. Default true.
    pub adaptive: bool,
    /// Write OpenAI-style `x-ratelimit-{limit,remaining,reset}-*` headers
    /// from this limiter's quota on successful answers. Default true; false
    /// keeps the quota from the callers (and saves up to six header writes
    /// an answer). A limiter below then writes its own quota, unless its
    /// section says false too.
    pub emit_headers: bool,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            requests_per_day: None,
            tokens_per_minute: None,
            max_concurrent: None,
            min_interval_ms: None,
            burst: None,
            mode: None,
            max_wait_ms: 2000,
            max_queue: 1000,
            adaptive: true,
            emit_headers: true,
        }
    }
}

impl LimitsSection {
    /// Every problem of this section, its fields named under `path`
    /// (`providers[0].rate_limit`, `tenants.default`).
    ///
    /// ```
    /// let s: llm_tower_ratelimit::section::LimitsSection =
    ///     serde_json::from_str(r#"{"requests_per_minute": 0, "tokens_per_minute": 1000}"#).unwrap();
    /// let errs = s.check("tenants.default");
    /// assert_eq!(errs.len(), 1);
    /// assert_eq!(errs[0].field, "tenants.default.requests_per_minute");
    /// ```
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        for (name, v) in [
            ("requests_per_minute", self.requests_per_minute),
            ("requests_per_day", self.requests_per_day),
            ("tokens_per_minute", self.tokens_per_minute),
            ("max_concurrent", self.max_concurrent),
            ("burst", self.burst),
        ] {
            if v == Some(0) {
                errs.push(ConfigError::at(path, name, "must be greater than 0 (leave it out for no limit)"));
            }
        }
        errs
    }

    /// The limits this section describes; `default_mode` when `mode` is unset.
    pub fn to_limits(&self, default_mode: ModeKind) -> Limits {
        let mode = match self.mode.unwrap_or(default_mode) {
            ModeKind::Reject => Mode::Reject,
            ModeKind::Wait => {
                Mode::Wait { max_wait: Duration::from_millis(self.max_wait_ms), max_queue: self.max_queue }
            }
        };
        let mut l = Limits::default().mode(mode).adaptive(self.adaptive).emit_headers(self.emit_headers);
        if let Some(v) = self.requests_per_minute {
            l = l.requests_per_minute(v);
        }
        if let Some(v) = self.requests_per_day {
            l = l.requests_per_day(v);
        }
        if let Some(v) = self.tokens_per_minute {
            l = l.tokens_per_minute(v);
        }
        if let Some(v) = self.max_concurrent {
            l = l.max_concurrent(v);
        }
        if let Some(v) = self.min_interval_ms {
            l = l.min_interval(Duration::from_millis(v));
        }
        if let Some(v) = self.burst {
            l = l.burst(v);
        }
        l
    }
}
