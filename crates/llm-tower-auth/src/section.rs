//! The `[auth]` and `[[keys]]` configuration sections.

use serde::Deserialize;

use llm_tower_core::config::ConfigError;

use crate::{Grant, KeyBudget, KeyHash, KeyRecord, KeySource, valid_name};

/// `[auth]`: whether `/v1` requests need a key.
///
/// ```
/// use llm_tower_auth::section::{AuthMode, AuthSection};
/// let s: AuthSection = toml::from_str(r#"mode = "keys""#).unwrap();
/// assert_eq!(s.mode, AuthMode::Keys);
/// assert!(s.check("auth").is_empty());
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `keys`: every `/v1` request needs a key; `open` (default): none.
    pub mode: AuthMode,
    /// Open mode only: the tenant is the `[tenants] header` a client sends
    /// (unauthenticated: any client may name any tenant). Default false: in
    /// open mode every request is the anonymous tenant.
    pub trust_tenant_header: bool,
}

impl AuthSection {
    /// Problems, naming fields under `path`.
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if self.mode == AuthMode::Keys && self.trust_tenant_header {
            errs.push(ConfigError::at(
                path,
                "trust_tenant_header",
                "with mode = \"keys\" the tenant is the key's name; the header is never trusted",
            ));
        }
        errs
    }
}

/// `[auth] mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No keys (the offline default).
    #[default]
    Open,
    /// Every `/v1` request needs a key.
    Keys,
}

/// `[[keys]]`: one virtual key. The key itself is never in the file: it is
/// read from `key_env`, or only its `hash` is given.
///
/// ```
/// use llm_tower_auth::section::KeyConfig;
/// let k: KeyConfig = toml::from_str(r#"
/// name = "team-a"
/// hash = "sha256:6f1ed002ab5595859014ebf0951522d9b1fc2b2f40b9d97a9a2bb8e4ee45f1b8"
/// models = ["gpt-4o-mini"]
/// requests_per_minute = 60
/// budget = { usd = 5.0, period = "day" }
/// "#).unwrap();
/// assert!(k.check("keys[0]").is_empty());
/// let rec = k.to_record().unwrap();
/// assert_eq!(rec.grant.requests_per_minute, Some(60));
///
/// let bad: KeyConfig = toml::from_str(r#"name = "team-a""#).unwrap();
/// assert_eq!(bad.check("keys[0]")[0].field, "keys[0].key_env");
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The tenant it spends as.
    pub name: String,
    /// The environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// The key's SHA-256, `sha256:<hex>` (`printf %s "$KEY" | sha256sum`).
    #[serde(default)]
    pub hash: Option<KeyHash>,
    /// Allowed models (public names, aliases, routes); absent: all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Spending budget.
    #[serde(default)]
    pub budget: Option<KeyBudget>,
}

impl KeyConfig {
    /// What the key may do.
    pub fn grant(&self) -> Grant {
        Grant {
            models: self.models.clone(),
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            budget: self.budget,
        }
    }

    /// The key's hash: `hash`, or the SHA-256 of `key_env`'s value in `env`.
    pub fn key_hash_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<KeyHash> {
        self.hash.or_else(|| {
            let v = env(self.key_env.as_deref()?)?;
            (!v.is_empty()).then(|| KeyHash::of(&v))
        })
    }

    /// The key as a store record (`None`: no hash; [`check`](Self::check) says why).
    pub fn to_record(&self) -> Option<KeyRecord> {
        self.to_record_with_env(&|k| std::env::var(k).ok())
    }

    /// [`to_record`](Self::to_record) with an explicit environment lookup.
    pub fn to_record_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<KeyRecord> {
        Some(KeyRecord {
            name: self.name.clone(),
            hash: self.key_hash_with_env(env)?,
            grant: self.grant(),
            created_unix: 0,
            source: KeySource::Config,
        })
    }

    /// Problems, naming fields under `path` (e.g. `keys[0]`).
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        self.check_with_env(path, &|k| std::env::var(k).ok())
    }

    /// [`check`](Self::check) with an explicit environment lookup.
    pub fn check_with_env(&self, path: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if !valid_name(&self.name) {
            errs.push(ConfigError::at(path, "name", "1 to 64 characters from [A-Za-z0-9._:@-]"));
        }
        match (&self.key_env, &self.hash) {
            (Some(_), Some(_)) => errs.push(ConfigError::at(path, "hash", "give key_env or hash, not both")),
            (None, None) => errs.push(ConfigError::at(
                path,
                "key_env",
                "give key_env (the variable holding the key) or hash = \"sha256:<hex>\"",
            )),
            (Some(var), None) if env(var).is_none_or(|v| v.is_empty()) => {
                errs.push(ConfigError::at(path, "key_env", format!("environment variable {var} is not set")))
            }
            _ => {}
        }
        errs.extend(self.grant().check(path));
        errs
    }
}
