//! [`KeyRecord`]: a virtual key as stores keep it, and its [`Grant`].

use serde::{Deserialize, Serialize};

use crate::KeyHash;

/// What a key may do: the models it may call and the limits and budget it
/// spends under. The auth layer enforces `models`; the rest is applied by the
/// layers that own it (a tenant limiter's per-key limits, the accounting
/// layer's budgets), keyed by the key's name.
///
/// ```
/// use llm_tower_auth::Grant;
/// let g: Grant = serde_json::from_str(
///     r#"{"models": ["gpt-4o-mini"], "requests_per_minute": 60, "budget": {"usd": 5.0, "period": "day"}}"#,
/// ).unwrap();
/// assert!(g.allows("gpt-4o-mini"));
/// assert!(!g.allows("gpt-4o"));
/// assert_eq!(g.budget.unwrap().micros(), 5_000_000);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The models (public names, aliases, routes) it may call; `None`: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute (estimated at the request, settled with the real usage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
    /// Its spending budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<KeyBudget>,
}

impl Grant {
    /// Whether it may call `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// Problems with its values, each naming its field under `path`.
    pub fn check(&self, path: &str) -> Vec<llm_tower_core::config::ConfigError> {
        use llm_tower_core::config::ConfigError;
        let mut errs = Vec::new();
        if self.requests_per_minute == Some(0) {
            errs.push(ConfigError::at(
                path,
                "requests_per_minute",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if self.tokens_per_minute == Some(0) {
            errs.push(ConfigError::at(
                path,
                "tokens_per_minute",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if let Some(b) = &self.budget
            && !(b.usd.is_finite() && b.usd >= 0.0 && b.usd <= 1e12)
        {
            errs.push(ConfigError::at(path, "budget.usd", "must be a number of dollars from 0 to 10^12"));
        }
        if self.models.as_ref().is_some_and(|m| m.is_empty()) {
            errs.push(ConfigError::at(
                path,
                "models",
                "an empty list allows nothing: leave it out to allow every model",
            ));
        }
        errs
    }
}

/// A key's budget: dollars per period.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBudget {
    /// Dollars.
    pub usd: f64,
    /// The period it renews over.
    pub period: BudgetPeriod,
}

impl KeyBudget {
    /// The budget in micro-dollars (rounded; negative and non-finite are 0).
    pub fn micros(&self) -> u64 {
        let m = (self.usd * 1e6).round();
        if m.is_finite() && m > 0.0 { m.min(u64::MAX as f64) as u64 } else { 0 }
    }
}

/// How often a key's budget renews.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// Every 24 hours.
    Day,
    /// Every 30 days.
    Month,
    /// Never.
    Total,
}

/// Where a key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The configuration file (`[[keys]]`): changed by editing it.
    Config,
    /// The admin API: kept in the state store.
    Admin,
}

/// A virtual key as a [`KeyStore`](crate::KeyStore) keeps it: never the key
/// itself, only its hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Its name: the tenant it spends as (limits, budget, cache scope, ledger).
    pub name: String,
    /// The key's SHA-256.
    pub hash: KeyHash,
    /// What it may do.
    #[serde(default)]
    pub grant: Grant,
    /// When it was created, seconds since the Unix epoch.
    #[serde(default)]
    pub created_unix: u64,
    /// Where it came from.
    pub source: KeySource,
}
