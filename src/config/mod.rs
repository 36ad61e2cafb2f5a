//! The configuration of a stack and of the gateway that serves it: one
//! serde document (TOML here; JSON or YAML through their serde crates), its
//! validation (every problem, each naming its field), and the embedded default.

use std::collections::BTreeMap;
use std::fmt;

mod build;
#[cfg(test)]
mod tests;
mod validate;

pub use build::{BuildError, Built};
use std::net::SocketAddr;
pub use validate::ResolvedProvider;

use llm_tower_core::Secret;
#[cfg(feature = "mock")]
use llm_tower_mock::MockConfig;
/// Without the `mock` feature a `[providers.mock]` table is read and the
/// `kind = "mock"` provider refused by validation.
#[cfg(not(feature = "mock"))]
type MockConfig = serde::de::IgnoredAny;
use serde::Deserialize;

pub use llm_tower_auth::section::{AuthMode, AuthSection, KeyConfig};
pub use llm_tower_cache::section::{CacheSection, ScopeKind, StrategyKind};
pub use llm_tower_circuit::section::{BreakerKey, BreakerSection};
/// A configuration problem, naming the field at fault.
///
/// ```
/// let errs = llm_tower::config::StackConfig::from_toml("[[providers]]\nname='a'\nkind='openai'\nmodels=['m']")
///     .unwrap()
///     .validate()
///     .unwrap_err();
/// assert!(errs.iter().any(|e| e.field == "providers[0].base_url"));
/// assert!(errs.iter().any(|e| e.field == "providers[0].api_key_env"));
/// ```
pub use llm_tower_core::config::ConfigError;
pub use llm_tower_failover::section::{FailoverSection, RouteConfig, TargetConfig};
pub use llm_tower_http::section::{ClientSection, ProviderKindConfig, TimeoutsSection};
pub use llm_tower_ratelimit::section::{LimitsSection, ModeKind};
pub use llm_tower_retry::section::{BackoffKind, JitterKind, RetrySection};
pub use llm_tower_tokens::section::{BudgetSection, PeriodKind, PreflightKind, PriceSection};

/// The configuration the gateway runs on when started without `--config`:
/// one in-process mock provider, so it works offline on a fresh machine.
pub const DEFAULT_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"
# A local demo on loopback: /stats without the admin token.
stats_public = true

[[providers]]
name = "mock"
kind = "mock"
models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-3-5-haiku-latest"]
aliases = { fast = "gpt-4o-mini" }

[providers.mock]
latency = { headers = 20, per_token = 5 }

# Deterministic requests (temperature 0 or a seed) answered from memory.
[cache]
strategy = "conservative"
"#;

/// The whole configuration: providers and their layers, routes, cache, tenants,
/// prices, and the gateway's own `[server]`.
///
/// ```
/// let cfg = llm_tower::config::StackConfig::from_toml(llm_tower::config::DEFAULT_CONFIG).unwrap();
/// assert_eq!(cfg.providers[0].name, "mock");
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// Listener and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// The shared upstream connection pool.
    #[serde(default)]
    pub client: ClientSection,
    /// Per-tenant limits and budgets.
    #[serde(default)]
    pub tenants: TenantsSection,
    /// Price overrides by exact model name, USD per million tokens.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceSection>,
    /// Upstream providers and the models each serves.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// The response cache (none when absent).
    #[serde(default)]
    pub cache: Option<CacheSection>,
    /// Logical models served by several providers, with failover.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Provider health checking.
    #[serde(default)]
    pub failover: FailoverSection,
    /// Whether requests need a virtual key.
    #[serde(default)]
    pub auth: AuthSection,
    /// Virtual keys (`[[keys]]`), with `[auth] mode = "keys"`.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Where keys, spend and usage persist (in memory when absent).
    #[serde(default)]
    pub state: Option<StateSection>,
    /// OpenTelemetry trace export (none when absent).
    #[serde(default)]
    pub traces: Option<TracesSection>,
}

/// `[traces]`: spans exported over OTLP/HTTP (JSON) to a collector: one per
/// gateway request and one per upstream attempt, W3C `traceparent` continued
/// from the client and sent upstream.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesSection {
    /// The collector's OTLP/HTTP base URL (spans go to `<it>/v1/traces`),
    /// e.g. `http://127.0.0.1:4318`.
    pub otlp_endpoint: String,
    /// `service.name` of the spans. Default `llm-tower-gateway`.
    #[serde(default = "service_name")]
    pub service_name: String,
    /// The share of new traces recorded, 0 to 1 (a client's `traceparent`
    /// decides for its own trace). Default 1.
    #[serde(default = "one_f64")]
    pub sample_ratio: f64,
    /// Headers sent to the collector (a vendor's API key). Never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

fn service_name() -> String {
    "llm-tower-gateway".into()
}

fn one_f64() -> f64 {
    1.0
}

impl fmt::Debug for TracesSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracesSection")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TracesSection {
    /// Problems, naming fields under `path`.
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let url = self.otlp_endpoint.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || llm_tower_http::Provider::openai_compatible("otlp", &format!("{url}/v1")).is_err()
        {
            errs.push(ConfigError::at(path, "otlp_endpoint", "an http:// or https:// URL"));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            errs.push(ConfigError::at(path, "sample_ratio", "from 0 to 1"));
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value.expose()).is_err()
            {
                errs.push(ConfigError::at(
                    path,
                    &format!("headers.{name}"),
                    "not a valid header name and value",
                ));
            }
        }
        errs
    }
}

/// `[state]`: where state outlives the process. `path`: a SQLite file keeping
/// keys created by the admin API, budget spend per period and the usage
/// ledger across restarts. `redis_url`: a Redis every gateway of a deployment
/// shares, holding the limiters' state (one quota and one concurrency limit
/// for all), the tenants' budget spend, the keys, and with `[cache] shared`
/// a second cache tier.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The SQLite file (created if absent), e.g. `llm-tower.db`.
    #[serde(default)]
    pub path: Option<std::path::PathBuf>,
    /// `redis://host:port/db` (or `rediss://` with TLS).
    #[serde(default)]
    pub redis_url: Option<Secret>,
    /// The environment variable holding the Redis URL, instead of `redis_url`.
    #[serde(default)]
    pub redis_url_env: Option<String>,
    /// Before every Redis key (one deployment apart from another). Default `llm-tower:`.
    #[serde(default = "redis_prefix")]
    pub redis_prefix: String,
    /// While Redis cannot be reached: `local` (default: each gateway limits
    /// and budgets on its own, with a warning and a metric) or `closed` (503
    /// with `retry-after`). The cache tier is a miss either way.
    #[serde(default)]
    pub on_redis_error: OnRedisErrorKind,
    /// The longest one Redis command may take. Default 50 ms.
    #[serde(default = "redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// For a `rediss://` URL: a PEM file with the CA that signed the
    /// server's certificate (a private CA), trusted instead of the system's
    /// roots. Needs the `redis-tls` feature (the gateway has it).
    #[serde(default)]
    pub redis_ca_file: Option<std::path::PathBuf>,
}

fn redis_prefix() -> String {
    "llm-tower:".into()
}

fn redis_timeout_ms() -> u64 {
    50
}

/// `[state] on_redis_error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisErrorKind {
    /// Each gateway limits on its own until Redis is back.
    #[default]
    Local,
    /// Requests are refused (503, `retry-after`) until Redis is back.
    Closed,
}

impl StateSection {
    /// The Redis URL: inline, or from the environment.
    pub fn redis_url_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<Secret> {
        self.redis_url.clone().or_else(|| {
            self.redis_url_env.as_deref().and_then(env).filter(|v| !v.is_empty()).map(Secret::new)
        })
    }

    /// Problems, naming fields under `path`.
    pub fn check(&self, path: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if self.path.is_none() && self.redis_url.is_none() && self.redis_url_env.is_none() {
            errs.push(ConfigError::at(path, "path", "give path (a SQLite file), redis_url or redis_url_env"));
        }
        if self.redis_url.is_some() && self.redis_url_env.is_some() {
            errs.push(ConfigError::at(path, "redis_url_env", "give redis_url or redis_url_env, not both"));
        }
        if let Some(var) = &self.redis_url_env
            && self.redis_url.is_none()
            && env(var).is_none_or(|v| v.is_empty())
        {
            errs.push(ConfigError::at(
                path,
                "redis_url_env",
                format!("environment variable {var} is not set"),
            ));
        }
        if let Some(url) = self.redis_url_with_env(env) {
            let u = url.expose();
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                errs.push(ConfigError::at(path, "redis_url", "a redis:// or rediss:// URL"));
            }
            if !cfg!(feature = "redis") {
                errs.push(ConfigError::at(path, "redis_url", "Redis needs llm-tower's `redis` feature"));
            }
        }
        if self.redis_timeout_ms == 0 {
            errs.push(ConfigError::at(path, "redis_timeout_ms", "must be at least 1"));
        }
        if let Some(url) = self.redis_url_with_env(env) {
            let tls = url.expose().starts_with("rediss://");
            if tls && !cfg!(feature = "redis-tls") {
                errs.push(ConfigError::at(
                    path,
                    "redis_url",
                    "rediss:// needs llm-tower's `redis-tls` feature",
                ));
            }
            if self.redis_ca_file.is_some() && !tls {
                errs.push(ConfigError::at(path, "redis_ca_file", "a CA is for a rediss:// URL"));
            }
        }
        if let Some(f) = &self.redis_ca_file
            && !f.is_file()
        {
            errs.push(ConfigError::at(
                path,
                "redis_ca_file",
                format!("{} is not a readable file", f.display()),
            ));
        }
        errs
    }
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Connections the kernel queues for the gateway to accept (capped by
    /// `net.core.somaxconn`). Beyond it a client's connect is dropped and
    /// retried a second later. Default 1024.
    pub listen_backlog: u32,
    /// Largest accepted request body. Default 4 MiB.
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight requests. Default 30 s.
    pub shutdown_grace_secs: u64,
    /// Requests that cannot fit their model's context window: refused with
    /// 400 `context_length_exceeded` (`enforce`, default), logged (`warn`), or
    /// not checked (`off`).
    pub context_preflight: PreflightKind,
    /// Bearer token for the `/admin/...` calls (cache invalidation). Unset:
    /// the admin calls are not served.
    pub admin_token: Option<Secret>,
    /// The environment variable holding the admin token, instead of `admin_token`.
    pub admin_token_env: Option<String>,
    /// The longest a client waits for an answer to start (its head; for a
    /// non-streamed answer, the whole answer), over every provider, attempt
    /// and wait; then 504. Default: the largest provider headers timeout.
    pub deadline_ms: Option<u64>,
    /// Who may read the gateway's Prometheus `/metrics`: `public` (default:
    /// a scraper on the private network), `admin` (the admin token) or `off`.
    pub metrics: MetricsAccess,
    /// Serve `/stats` (tenant names, spend, provider state) to anyone who
    /// can reach the gateway. Default false: it needs the admin token, and
    /// without one it is not served.
    pub stats_public: bool,
}

/// Who may read `/metrics` (`[server] metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsAccess {
    /// Anyone who can reach the gateway (a scraper on the private network).
    #[default]
    Public,
    /// Only with the admin token (`authorization: Bearer ...`).
    Admin,
    /// Not served, and no recorder installed.
    Off,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listen_backlog: 1024,
            max_body_bytes: 4 << 20,
            shutdown_grace_secs: 30,
            context_preflight: PreflightKind::Enforce,
            admin_token: None,
            admin_token_env: None,
            deadline_ms: None,
            metrics: MetricsAccess::Public,
            stats_public: false,
        }
    }
}

fn one() -> u32 {
    1
}

/// `[[providers]]`: one upstream.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name (stats, logs).
    pub name: String,
    /// Dialect / preset.
    pub kind: ProviderKindConfig,
    /// Base URL including the version path (`https://host/v1`); presets have one.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key, inline (prefer `api_key_env`).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Azure `api-version`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Anthropic `anthropic-version` (default `2023-06-01`).
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Model names served by this provider, as callers name them.
    #[serde(default)]
    pub models: Vec<String>,
    /// Extra public names: alias -> upstream model name.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Headers added to every upstream request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Forward callers' own credentials (bring your own key). Default false.
    #[serde(default)]
    pub forward_client_auth: bool,
    /// Phase time limits.
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// The largest non-streamed answer read from this provider, bytes (a
    /// larger one is a 502 `upstream_response_too_large`). Default 8 MiB.
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// Settings of the in-process mock (`kind = "mock"` only).
    #[serde(default)]
    pub mock: Option<MockConfig>,
    /// Retries of failed calls to this provider.
    #[serde(default)]
    pub retry: RetrySection,
    /// This provider's circuit breaker.
    #[serde(default)]
    pub circuit_breaker: BreakerSection,
    /// The provider's own limits (what it allows this gateway).
    #[serde(default)]
    pub rate_limit: LimitsSection,
    /// Weight for weighted routing. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

/// `[tenants]`: limits per tenant, the tenant taken from a request header.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsSection {
    /// The header naming the tenant. Default `x-tenant`.
    pub header: String,
    /// Limits for every tenant (each its own), when set.
    pub default: Option<LimitsSection>,
    /// Limits for named tenants, replacing the default for them.
    pub overrides: BTreeMap<String, LimitsSection>,
    /// Every tenant's spending budget, when set.
    pub default_budget: Option<BudgetSection>,
    /// Budgets of named tenants, replacing the default.
    pub budgets: BTreeMap<String, BudgetSection>,
}

impl Default for TenantsSection {
    fn default() -> Self {
        Self {
            header: "x-tenant".into(),
            default: None,
            overrides: BTreeMap::new(),
            default_budget: None,
            budgets: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("api_key_env", &self.api_key_env)
            .field("models", &self.models)
            .field("aliases", &self.aliases)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A parse error at `path` (`providers[0].timeouts.headers_ms`; empty: the
/// document itself), with the line when known.
fn field_error(path: String, line: usize, message: String) -> ConfigError {
    let field = match (path.as_str(), line) {
        ("" | ".", 0) => "config".to_owned(),
        ("" | ".", l) => format!("line {l}"),
        (p, _) => p.to_owned(),
    };
    let message = if line > 0 && field != format!("line {line}") {
        format!("{message} (line {line})")
    } else {
        message
    };
    ConfigError { field, message }
}

impl StackConfig {
    /// Parses JSON (the same document as the TOML form); errors name the
    /// field path and the line.
    ///
    /// ```
    /// let cfg = llm_tower::config::StackConfig::from_json(
    ///     r#"{"providers":[{"name":"m","kind":"mock","models":["gpt-4o-mini"]}],"cache":{"strategy":"aggressive"}}"#,
    /// ).unwrap();
    /// assert!(cfg.validate().is_ok());
    /// ```
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let line = e.inner().line();
            field_error(e.path().to_string(), line, e.inner().to_string())
        })
    }
    /// Parses TOML; syntax errors name the line, type errors the field path
    /// (`server.max_body_bytes: invalid type: string "big", expected usize (line 2)`).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let line_of = |e: &toml::de::Error| {
            e.span().map_or(0, |s| text[..s.start.min(text.len())].lines().count().max(1))
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| field_error(String::new(), line_of(&e), e.message().trim().to_owned()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let line = line_of(e.inner());
            field_error(e.path().to_string(), line, e.inner().message().trim().to_owned())
        })
    }

    /// Parses YAML (the same document as the TOML form); errors name the
    /// field path and the line. Needs the `yaml` feature.
    #[cfg(feature = "yaml")]
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let line = e.inner().location().map_or(0, |l| l.line());
            field_error(e.path().to_string(), line, e.inner().to_string())
        })
    }

    /// Reads a config file, by its extension: `.json`, `.yaml`/`.yml` (with
    /// the `yaml` feature), anything else TOML.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("llm-tower-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("gw.json");
    /// std::fs::write(&path, r#"{"server":{"max_body_bytes":"big"}}"#).unwrap();
    /// let err = llm_tower::config::StackConfig::from_file(&path).unwrap_err();
    /// assert_eq!(err.field, "server.max_body_bytes");
    /// ```
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            field: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("json") => Self::from_json(&text),
            #[cfg(feature = "yaml")]
            Some("yaml" | "yml") => Self::from_yaml(&text),
            #[cfg(not(feature = "yaml"))]
            Some("yaml" | "yml") => Err(ConfigError {
                field: path.display().to_string(),
                message: "YAML needs llm-tower's `yaml` feature".into(),
            }),
            _ => Self::from_toml(&text),
        }
    }
    /// The longest a client waits for an answer to start: `server.deadline_ms`,
    /// else the largest headers timeout of the providers (120 s by default),
    /// `None` only when every provider's headers timeout is off and no
    /// deadline is set.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cfg = llm_tower::config::StackConfig::from_toml(
    ///     "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\n[providers.timeouts]\nheaders_ms=30000",
    /// )
    /// .unwrap();
    /// assert_eq!(cfg.deadline(), Some(Duration::from_secs(30)));
    /// ```
    pub fn deadline(&self) -> Option<std::time::Duration> {
        if let Some(ms) = self.server.deadline_ms.filter(|&ms| ms > 0) {
            return Some(std::time::Duration::from_millis(ms));
        }
        self.providers.iter().filter_map(|p| p.timeouts.to_timeouts().headers).max()
    }

    /// The admin token: inline, or from the environment.
    pub fn admin_token(&self) -> Option<Secret> {
        self.admin_token_with_env(&|k| std::env::var(k).ok())
    }

    /// [`admin_token`](Self::admin_token) with an explicit environment lookup.
    pub fn admin_token_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<Secret> {
        let s = &self.server;
        s.admin_token
            .clone()
            .or_else(|| s.admin_token_env.as_deref().and_then(env).filter(|v| !v.is_empty()).map(Secret::new))
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        Self::from_toml(DEFAULT_CONFIG).expect("the embedded default parses")
    }
}
