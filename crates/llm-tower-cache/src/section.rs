//! The cache's section of a configuration file (`[cache]`), behind the
//! `serde` feature: serde types, validation naming each field's path, and
//! conversion to a [`CacheConfig`](crate::CacheConfig).

use std::time::Duration;

use llm_tower_core::config::ConfigError;
use serde::Deserialize;

/// `[cache]`: the exact-match response cache, in front of the providers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// `conservative` (default: only temperature 0 or a seed, and embeddings),
    /// `aggressive` (every request), `selective` (requests with the header
    /// `x-llm-cache: on`), or `disabled`.
    pub strategy: StrategyKind,
    /// Memory bound, MiB. Default 256.
    pub max_mb: u64,
    /// Time to live, seconds. Default 3600.
    pub ttl_secs: u64,
    /// Longest TTL a request may ask for, seconds. Default 86400.
    pub max_ttl_secs: u64,
    /// Largest answer stored, KiB. Default 8192.
    pub max_entry_kb: u64,
    /// Answers larger than this are stored compressed, KiB; 0: never. Default 64.
    pub compress_above_kb: u64,
    /// Top-level request fields that do not change the answer.
    pub ignored_fields: Vec<String>,
    /// Store answers cut at `max_tokens`. Default false.
    pub store_truncated: bool,
    /// Identical concurrent misses make one upstream call. Default true.
    pub coalesce: bool,
    /// `tenant` (default: tenants never share entries) or `global`.
    pub scope: ScopeKind,
    /// Also keep entries in the gateway's `[state]` Redis, a second tier
    /// every gateway on it answers from (needs `[state] redis_url`).
    /// Default false.
    pub shared: bool,
}

/// `cache.strategy` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Only requests with one right answer.
    Conservative,
    /// Every request.
    Aggressive,
    /// Requests that opt in.
    Selective,
    /// Nothing.
    Disabled,
}

/// `cache.scope` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    /// One partition per virtual key. A key's name is the tenant it spends
    /// as, so this is the `tenant` partition, named for gateways with keys.
    Key,
    /// One partition per tenant.
    Tenant,
    /// One partition for everyone.
    Global,
}

impl Default for CacheSection {
    fn default() -> Self {
        let d = crate::CacheConfig::default();
        CacheSection {
            strategy: StrategyKind::Conservative,
            max_mb: d.max_bytes >> 20,
            ttl_secs: d.ttl.as_secs(),
            max_ttl_secs: d.max_ttl.as_secs(),
            max_entry_kb: (d.max_entry_bytes >> 10) as u64,
            compress_above_kb: d.compress_above.map_or(0, |n| (n >> 10) as u64),
            ignored_fields: d.ignored_fields,
            store_truncated: d.store_truncated,
            coalesce: d.coalesce,
            scope: ScopeKind::Tenant,
            shared: false,
        }
    }
}

impl CacheSection {
    /// Every problem of this section, its fields named under `path` (`cache`).
    ///
    /// ```
    /// let s: llm_tower_cache::section::CacheSection =
    ///     serde_json::from_str(r#"{"ttl_secs": 600, "max_ttl_secs": 60}"#).unwrap();
    /// assert_eq!(s.check("cache")[0].field, "cache.max_ttl_secs");
    /// ```
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut err = |field: &str, message: &str| errs.push(ConfigError::at(path, field, message));
        for (field, v) in
            [("max_mb", self.max_mb), ("ttl_secs", self.ttl_secs), ("max_entry_kb", self.max_entry_kb)]
        {
            if v == 0 {
                err(field, "must be greater than 0");
            }
        }
        if self.max_ttl_secs < self.ttl_secs {
            err("max_ttl_secs", &format!("must be at least {path}.ttl_secs"));
        }
        if self.max_entry_kb.saturating_mul(1024) > self.max_mb.saturating_mul(1 << 20) {
            err("max_entry_kb", &format!("must fit in {path}.max_mb"));
        }
        errs
    }

    /// The cache layer's configuration.
    pub fn to_config(&self) -> crate::CacheConfig {
        use crate::{CacheConfig, Strategy};
        let strategy = match self.strategy {
            StrategyKind::Conservative => Strategy::Conservative,
            StrategyKind::Aggressive => Strategy::Aggressive,
            StrategyKind::Selective => Strategy::Selective(None),
            StrategyKind::Disabled => Strategy::Disabled,
        };
        let scope = match self.scope {
            ScopeKind::Key | ScopeKind::Tenant => llm_tower_core::KeyFn::tenant(),
            ScopeKind::Global => llm_tower_core::KeyFn::global(),
        };
        CacheConfig::default()
            .strategy(strategy)
            .max_bytes(self.max_mb << 20)
            .ttl(Duration::from_secs(self.ttl_secs))
            .max_ttl(Duration::from_secs(self.max_ttl_secs))
            .max_entry_bytes((self.max_entry_kb << 10) as usize)
            .compress_above((self.compress_above_kb > 0).then_some((self.compress_above_kb << 10) as usize))
            .ignored_fields(self.ignored_fields.iter().cloned())
            .store_truncated(self.store_truncated)
            .coalesce(self.coalesce)
            .scope(scope)
    }
}
