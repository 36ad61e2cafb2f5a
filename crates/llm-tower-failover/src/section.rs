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
    /// Hedge slow requests: also send one to the next provider when it has
    /// no answer after the hedge delay. Default true (for routes of two
    /// targets or more); `false` turns hedging off.
    #[serde(default = "RouteConfig::yes")]
    pub hedge: bool,
    /// Hedge after this long without an answer.
    pub hedge_after_ms: Option<u64>,
    /// Hedge after the route's recent time-to-head percentile (0..1) instead.
    /// Default (neither set): 0.95.
    pub hedge_percentile: Option<f64>,
    /// Largest share of requests hedged. Default 0.05.
    #[serde(default = "RouteConfig::default_hedge_ratio")]
    pub hedge_max_ratio: f64,
    /// Bound the route's extra calls (failover moves and the providers'
    /// retries) by one budget. Default true.
    #[serde(default = "RouteConfig::yes")]
    pub retry_budget: bool,
    /// Route budget: extra calls as a fraction of the route's requests. Default 0.2.
    #[serde(default = "RouteConfig::default_budget_ratio")]
    pub retry_budget_ratio: f64,
    /// Route budget: extra calls per second always allowed. Default 10.
    #[serde(default = "RouteConfig::default_budget_floor")]
    pub retry_budget_min_per_sec: u32,
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
        0.05
    }

    fn yes() -> bool {
        true
    }

    fn default_budget_ratio() -> f64 {
        llm_tower_core::budget::BudgetConfig::default().ratio
    }

    fn default_budget_floor() -> u32 {
        llm_tower_core::budget::BudgetConfig::default().min_per_sec
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
        if !(self.retry_budget_ratio >= 0.0 && self.retry_budget_ratio.is_finite()) {
            err("retry_budget_ratio", "must be 0 or more");
        }
        if !(0.0..=1.0).contains(&self.hedge_max_ratio) {
            err("hedge_max_ratio", "must be between 0 and 1");
        }
        errs
    }

    /// The failover route this section describes: hedging and the route
    /// retry budget are on unless turned off.
    ///
    /// ```
    /// use llm_tower_failover::section::RouteConfig;
    /// let targets = r#""targets": [{"provider": "a"}, {"provider": "b"}]"#;
    /// let on: RouteConfig = serde_json::from_str(&format!(r#"{{"model": "m", {targets}}}"#)).unwrap();
    /// let r = on.to_route();
    /// assert_eq!(r.hedge.map(|h| h.max_ratio), Some(0.05));
    /// assert_eq!(r.budget.map(|b| b.ratio), Some(0.2));
    /// let off: RouteConfig = serde_json::from_str(&format!(
    ///     r#"{{"model": "m", {targets}, "hedge": false, "retry_budget": false}}"#
    /// ))
    /// .unwrap();
    /// let r = off.to_route();
    /// assert!(r.hedge.is_none() && r.budget.is_none());
    /// ```
    pub fn to_route(&self) -> crate::Route {
        use crate::{Hedge, HedgeDelay, Route, Target};
        let targets = self.targets.iter().map(|t| match &t.model {
            Some(m) => Target::to(&t.provider, m),
            None => Target::new(&t.provider),
        });
        let mut r = Route::new(targets).strategy(self.strategy.build());
        let delay = match (self.hedge_after_ms, self.hedge_percentile) {
            (Some(ms), _) => HedgeDelay::Fixed(Duration::from_millis(ms)),
            (None, Some(p)) => HedgeDelay::Percentile { p, min: Duration::from_millis(100) },
            (None, None) => Hedge::default().delay,
        };
        r = match self.hedge {
            true => r.hedge(Hedge::new(delay).max_ratio(self.hedge_max_ratio)),
            false => r.without_hedge(),
        };
        let budget = llm_tower_core::budget::BudgetConfig {
            ratio: self.retry_budget_ratio,
            min_per_sec: self.retry_budget_min_per_sec,
            ..Default::default()
        };
        r = r.budget(self.retry_budget.then_some(budget));
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
