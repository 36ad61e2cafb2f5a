//! The failover layer's sections of a configuration file (`[[routes]]`,
//! `[failover]`), behind the `serde` feature: serde types, validation naming
//! each field's path, and conversion to [`Route`](crate::Route) and
//! [`HealthConfig`](crate::HealthConfig).

use std::time::Duration;

use llm_tower_core::config::ConfigError;
use serde::Deserialize;

/// `[[routes]]`: a logical model served by several providers, failing over
/// from one to the next.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The public model name.
    pub model: String,
    /// The providers serving it, in priority order.
    pub targets: Vec<TargetConfig>,
    /// `priority` (default), `weighted_random`, `round_robin`, `least_in_flight`,
    /// `success_rate` or `peak_ewma`.
    #[serde(default = "RouteConfig::default_strategy")]
    pub strategy: crate::RouteStrategyKind,
    /// Hedge: also send a request to the next provider after this long without an answer.
    pub hedge_after_ms: Option<u64>,
    /// Hedge after the route's recent time-to-first-byte percentile (0..1), instead.
    pub hedge_percentile: Option<f64>,
    /// Largest share of requests hedged. Default 0.1.
    #[serde(default = "RouteConfig::default_hedge_ratio")]
    pub hedge_max_ratio: f64,
    /// On `context_length_exceeded`, try this (larger-context) model.
    pub context_fallback: Option<String>,
}

/// One target of a route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The provider's name.
    pub provider: String,
    /// The model name at that provider (default: the route's).
    pub model: Option<String>,
}

impl RouteConfig {
    fn default_strategy() -> crate::RouteStrategyKind {
        crate::RouteStrategyKind::Priority
    }

    fn default_hedge_ratio() -> f64 {
        0.1
    }

    /// Every problem of this route on its own, its fields named under `path`
    /// (`routes[0]`); that its targets name real providers is the whole
    /// document's check.
    ///
    /// ```
    /// let r: llm_tower_failover::section::RouteConfig =
    ///     serde_json::from_str(r#"{"model": "chat", "targets": [], "hedge_percentile": 1.5}"#).unwrap();
    /// let fields: Vec<_> = r.check("routes[0]").into_iter().map(|e| e.field).collect();
    /// assert_eq!(fields, ["routes[0].targets", "routes[0].hedge_percentile"]);
    /// ```
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut err = |field: &str, message: &str| errs.push(ConfigError::at(path, field, message));
        if self.model.is_empty() {
            err("model", "must not be empty");
        }
        if self.targets.is_empty() {
            err("targets", "list at least one provider");
        }
        if let (Some(_), Some(_)) = (self.hedge_after_ms, self.hedge_percentile) {
            err("hedge_percentile", "set hedge_after_ms or hedge_percentile, not both");
        }
        if self.hedge_percentile.is_some_and(|p| !(p > 0.0 && p < 1.0)) {
            err("hedge_percentile", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.hedge_max_ratio) {
            err("hedge_max_ratio", "must be between 0 and 1");
        }
        errs
    }

    /// The failover route this section describes.
    pub fn to_route(&self) -> crate::Route {
        use crate::{Hedge, HedgeDelay, Route, Target};
        let targets = self.targets.iter().map(|t| match &t.model {
            Some(m) => Target::to(&t.provider, m),
            None => Target::new(&t.provider),
        });
        let mut r = Route::new(targets).strategy(self.strategy.build());
        let delay = match (self.hedge_after_ms, self.hedge_percentile) {
            (Some(ms), _) => Some(HedgeDelay::Fixed(Duration::from_millis(ms))),
            (None, Some(p)) => Some(HedgeDelay::Percentile { p, min: Duration::from_millis(100) }),
            (None, None) => None,
        };
        if let Some(d) = delay {
            r = r.hedge(Hedge::new(d).max_ratio(self.hedge_max_ratio));
        }
        if let Some(f) = &self.context_fallback {
            r = r.context_fallback(f);
        }
        r
    }
}

/// `[failover]`: health checking of providers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverSection {
    /// Consecutive failed requests that mark a provider down (0: never). Default 5.
    pub failures_to_down: u32,
    /// How long it stays down, seconds. Default 30.
    pub down_secs: u64,
    /// How long a recovered provider takes to get its full share, seconds. Default 30.
    pub slow_start_secs: u64,
    /// Probe each provider (`GET /v1/models`) this often, seconds. Default: no probe.
    pub probe_interval_secs: Option<u64>,
}

impl Default for FailoverSection {
    fn default() -> Self {
        FailoverSection { failures_to_down: 5, down_secs: 30, slow_start_secs: 30, probe_interval_secs: None }
    }
}

impl FailoverSection {
    /// The failover's health configuration.
    pub fn to_health(&self) -> crate::HealthConfig {
        let h = crate::HealthConfig::default()
            .failures_to_down(self.failures_to_down)
            .down_for(Duration::from_secs(self.down_secs))
            .slow_start(Duration::from_secs(self.slow_start_secs));
        match self.probe_interval_secs {
            Some(s) => h.probe_every(Duration::from_secs(s.max(1))),
            None => h,
        }
    }
}
