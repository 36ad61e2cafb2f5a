//! The token layers' sections of a configuration file (`server.context_preflight`,
//! budgets, `[prices.MODEL]`), behind the `serde` feature: serde types,
//! validation naming each field's path, and conversion to the layers' types.

use llm_tower_core::config::ConfigError;
use serde::Deserialize;

/// `server.context_preflight` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreflightKind {
    /// Refuse before sending.
    Enforce,
    /// Log and send.
    Warn,
    /// Do not check.
    Off,
}

impl PreflightKind {
    /// The layer's policy.
    pub fn to_preflight(self) -> crate::Preflight {
        match self {
            PreflightKind::Enforce => crate::Preflight::Enforce,
            PreflightKind::Warn => crate::Preflight::WarnOnly,
            PreflightKind::Off => crate::Preflight::Off,
        }
    }
}

/// A spending budget: `usd` per `period`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    /// Dollars per period.
    pub usd: f64,
    /// `day` (default), `month` or `total`.
    #[serde(default = "BudgetSection::default_period")]
    pub period: PeriodKind,
}

/// Budget periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// 24 hours.
    Day,
    /// 30 days.
    Month,
    /// Forever.
    Total,
}

impl BudgetSection {
    fn default_period() -> PeriodKind {
        PeriodKind::Day
    }

    /// Every problem of this budget, named under `path` (`tenants.default_budget`).
    ///
    /// ```
    /// let b: llm_tower_tokens::section::BudgetSection = serde_json::from_str(r#"{"usd": -1}"#).unwrap();
    /// assert_eq!(b.check("tenants.budgets.acme")[0].field, "tenants.budgets.acme.usd");
    /// ```
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        if self.usd.is_finite() && self.usd > 0.0 {
            return Vec::new();
        }
        vec![ConfigError::at(path, "usd", "must be a positive number of dollars")]
    }

    /// The budget this section describes.
    pub fn to_budget(self) -> crate::Budget {
        let period = match self.period {
            PeriodKind::Day => crate::Period::Day,
            PeriodKind::Month => crate::Period::Month,
            PeriodKind::Total => crate::Period::Total,
        };
        crate::Budget { limit_micros: (self.usd * 1e6).round() as u64, period }
    }
}

/// `[prices.MODEL]`: USD per million tokens.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSection {
    /// Input.
    pub input: f64,
    /// Cached input (default: the input price).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Output.
    pub output: f64,
    /// Reasoning output (default: the output price).
    #[serde(default)]
    pub reasoning: Option<f64>,
}

impl PriceSection {
    /// Every problem of these prices, named as `path` (`prices.gpt-4o`).
    ///
    /// ```
    /// let p: llm_tower_tokens::section::PriceSection =
    ///     serde_json::from_str(r#"{"input": 0.15, "output": -0.6}"#).unwrap();
    /// assert_eq!(p.check("prices.gpt-4o-mini")[0].field, "prices.gpt-4o-mini");
    /// ```
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        let all = [Some(self.input), self.cached_input, Some(self.output), self.reasoning];
        if all.iter().flatten().all(|v| v.is_finite() && *v >= 0.0) {
            return Vec::new();
        }
        vec![ConfigError::at(path, "", "prices must be non-negative numbers (USD per million tokens)")]
    }

    /// The prices in micro-dollars per million tokens.
    pub fn to_prices(self) -> crate::Prices {
        let m = |usd: f64| (usd * 1e6).round() as u64;
        crate::Prices {
            input: m(self.input),
            cached_input: m(self.cached_input.unwrap_or(self.input)),
            output: m(self.output),
            reasoning: m(self.reasoning.unwrap_or(self.output)),
        }
    }
}
