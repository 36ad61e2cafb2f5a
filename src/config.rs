//! The configuration of a stack and of the gateway that serves it: one
//! serde document (TOML here; JSON or YAML through their serde crates), its
//! validation (every problem, each naming its field), and the embedded default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use llm_tower_circuit::{CircuitConfig, RateRule, SlowRule, Window};
use llm_tower_core::Secret;
use llm_tower_http::{ClientConfig, Provider, ProviderKind, Timeouts};
use llm_tower_mock::MockConfig;
use llm_tower_ratelimit::{Limits, Mode};
use llm_tower_retry::{Backoff, BudgetConfig, Jitter, RetryPolicy};
use serde::Deserialize;

/// The configuration the gateway runs on when started without `--config`:
/// one in-process mock provider, so it works offline on a fresh machine.
pub const DEFAULT_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"

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
}

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
    /// One partition per tenant.
    Tenant,
    /// One partition for everyone.
    Global,
}

impl Default for CacheSection {
    fn default() -> Self {
        let d = llm_tower_cache::CacheConfig::default();
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
        }
    }
}

impl CacheSection {
    fn check(&self, err: &mut dyn FnMut(String, String)) {
        for (field, v) in
            [("max_mb", self.max_mb), ("ttl_secs", self.ttl_secs), ("max_entry_kb", self.max_entry_kb)]
        {
            if v == 0 {
                err(format!("cache.{field}"), "must be greater than 0".into());
            }
        }
        if self.max_ttl_secs < self.ttl_secs {
            err("cache.max_ttl_secs".into(), "must be at least cache.ttl_secs".into());
        }
        if self.max_entry_kb.saturating_mul(1024) > self.max_mb.saturating_mul(1 << 20) {
            err("cache.max_entry_kb".into(), "must fit in cache.max_mb".into());
        }
    }

    /// The cache layer's configuration.
    pub fn to_config(&self) -> llm_tower_cache::CacheConfig {
        use llm_tower_cache::{CacheConfig, Strategy};
        let strategy = match self.strategy {
            StrategyKind::Conservative => Strategy::Conservative,
            StrategyKind::Aggressive => Strategy::Aggressive,
            StrategyKind::Selective => Strategy::Selective(None),
            StrategyKind::Disabled => Strategy::Disabled,
        };
        let scope = match self.scope {
            ScopeKind::Tenant => llm_tower_core::KeyFn::tenant(),
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

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
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
}

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
    pub fn to_preflight(self) -> llm_tower_tokens::Preflight {
        match self {
            PreflightKind::Enforce => llm_tower_tokens::Preflight::Enforce,
            PreflightKind::Warn => llm_tower_tokens::Preflight::WarnOnly,
            PreflightKind::Off => llm_tower_tokens::Preflight::Off,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 << 20,
            shutdown_grace_secs: 30,
            context_preflight: PreflightKind::Enforce,
            admin_token: None,
            admin_token_env: None,
            deadline_ms: None,
        }
    }
}

/// `[client]`: the upstream connection pool shared by all providers.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSection {
    /// Connect timeout (TCP + TLS), ms. Default 10000.
    pub connect_timeout_ms: Option<u64>,
    /// Idle pooled connections are closed after this long, s. Default 90.
    pub pool_idle_timeout_secs: Option<u64>,
    /// Idle connections kept per host. Default 64.
    pub pool_max_idle_per_host: Option<usize>,
    /// Connections per upstream host at most. Default unlimited.
    pub max_connections_per_host: Option<usize>,
    /// DNS cache TTL, s. Default 30.
    pub dns_ttl_secs: Option<u64>,
    /// Speak HTTP/2 only (also cleartext h2c). Default false.
    pub http2_only: Option<bool>,
}

impl ClientSection {
    /// The client configuration this section describes.
    pub fn to_client_config(&self) -> ClientConfig {
        let d = ClientConfig::default();
        ClientConfig {
            connect_timeout: self.connect_timeout_ms.map_or(d.connect_timeout, Duration::from_millis),
            pool_idle_timeout: self.pool_idle_timeout_secs.map_or(d.pool_idle_timeout, Duration::from_secs),
            pool_max_idle_per_host: self.pool_max_idle_per_host.unwrap_or(d.pool_max_idle_per_host),
            max_connections_per_host: self.max_connections_per_host.or(d.max_connections_per_host),
            dns_ttl: self.dns_ttl_secs.map_or(d.dns_ttl, Duration::from_secs),
            http2_only: self.http2_only.unwrap_or(d.http2_only),
            ..d
        }
    }
}

/// The kind of a provider entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKindConfig {
    /// OpenAI, or any OpenAI-compatible endpoint given by `base_url`.
    Openai,
    /// Azure OpenAI: `base_url` is the resource endpoint, `api_version` required.
    Azure,
    /// Anthropic.
    Anthropic,
    /// The built-in mock provider, started in-process.
    Mock,
    /// Ollama (default `http://127.0.0.1:11434/v1`).
    Ollama,
    /// vLLM (`base_url` required).
    Vllm,
    /// Groq.
    Groq,
    /// Together AI.
    Together,
    /// OpenRouter.
    Openrouter,
    /// Mistral.
    Mistral,
}

fn one() -> u32 {
    1
}

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
    pub strategy: llm_tower_failover::StrategyKind,
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
    fn default_strategy() -> llm_tower_failover::StrategyKind {
        llm_tower_failover::StrategyKind::Priority
    }

    fn default_hedge_ratio() -> f64 {
        0.1
    }

    /// The failover route this section describes.
    pub fn to_route(&self) -> llm_tower_failover::Route {
        use llm_tower_failover::{Hedge, HedgeDelay, Route, Target};
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
    pub fn to_health(&self) -> llm_tower_failover::HealthConfig {
        let h = llm_tower_failover::HealthConfig::default()
            .failures_to_down(self.failures_to_down)
            .down_for(Duration::from_secs(self.down_secs))
            .slow_start(Duration::from_secs(self.slow_start_secs));
        match self.probe_interval_secs {
            Some(s) => h.probe_every(Duration::from_secs(s.max(1))),
            None => h,
        }
    }
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
        }
    }
}

impl LimitsSection {
    fn check(&self, at: &str, err: &mut dyn FnMut(String, String)) {
        for (name, v) in [
            ("requests_per_minute", self.requests_per_minute),
            ("requests_per_day", self.requests_per_day),
            ("tokens_per_minute", self.tokens_per_minute),
            ("max_concurrent", self.max_concurrent),
            ("burst", self.burst),
        ] {
            if v == Some(0) {
                err(format!("{at}.{name}"), "must be greater than 0 (leave it out for no limit)".into());
            }
        }
    }

    /// The limits this section describes; `default_mode` when `mode` is unset.
    pub fn to_limits(&self, default_mode: ModeKind) -> Limits {
        let mode = match self.mode.unwrap_or(default_mode) {
            ModeKind::Reject => Mode::Reject,
            ModeKind::Wait => {
                Mode::Wait { max_wait: Duration::from_millis(self.max_wait_ms), max_queue: self.max_queue }
            }
        };
        let mut l = Limits::default().mode(mode).adaptive(self.adaptive);
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

    /// The budget this section describes.
    pub fn to_budget(self) -> llm_tower_tokens::Budget {
        let period = match self.period {
            PeriodKind::Day => llm_tower_tokens::Period::Day,
            PeriodKind::Month => llm_tower_tokens::Period::Month,
            PeriodKind::Total => llm_tower_tokens::Period::Total,
        };
        llm_tower_tokens::Budget { limit_micros: (self.usd * 1e6).round() as u64, period }
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
    /// The prices in micro-dollars per million tokens.
    pub fn to_prices(self) -> llm_tower_tokens::Prices {
        let m = |usd: f64| (usd * 1e6).round() as u64;
        llm_tower_tokens::Prices {
            input: m(self.input),
            cached_input: m(self.cached_input.unwrap_or(self.input)),
            output: m(self.output),
            reasoning: m(self.reasoning.unwrap_or(self.output)),
        }
    }
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
    fn check(&self, at: &dyn Fn(&str) -> String, err: &mut dyn FnMut(String, String)) {
        if self.max_attempts == 0 {
            err(at("retry.max_attempts"), "must be at least 1".into());
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            err(at("retry.factor"), "must be a number >= 1".into());
        }
        if !(0.0..=10.0).contains(&self.budget_ratio) {
            err(at("retry.budget_ratio"), "must be between 0 and 10".into());
        }
        if self.budget_window_secs == 0 {
            err(at("retry.budget_window_secs"), "must be at least 1".into());
        }
        if self.cap_ms < self.base_ms {
            err(at("retry.cap_ms"), "must be at least base_ms".into());
        }
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
            p = p.attempt_timeout(llm_tower_retry::AttemptTimeout::Fixed(Duration::from_millis(ms)));
        }
        p
    }
}

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
    fn check(&self, at: &dyn Fn(&str) -> String, err: &mut dyn FnMut(String, String)) {
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if !rate_ok(self.failure_rate) {
            err(at("circuit_breaker.failure_rate"), "must be between 0 and 1".into());
        }
        if !rate_ok(self.slow_call_rate) || self.slow_call_rate == 0.0 {
            err(at("circuit_breaker.slow_call_rate"), "must be greater than 0 and at most 1".into());
        }
        if self.window_calls.is_some() && self.window_secs.is_some() {
            err(at("circuit_breaker.window_secs"), "set window_calls or window_secs, not both".into());
        }
        if self.window_calls == Some(0) || self.window_secs == Some(0) {
            err(at("circuit_breaker.window_calls"), "the window must not be empty".into());
        }
        if self.half_open_probes == 0 {
            err(at("circuit_breaker.half_open_probes"), "must be at least 1".into());
        }
        if self.half_open_successes == 0 || self.half_open_successes > self.half_open_probes {
            err(at("circuit_breaker.half_open_successes"), "must be between 1 and half_open_probes".into());
        }
        if !(self.open_backoff >= 1.0 && self.open_backoff.is_finite()) {
            err(at("circuit_breaker.open_backoff"), "must be a number >= 1".into());
        }
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

/// `[providers.timeouts]`, milliseconds; `0` disables a limit.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    /// Until the response head (and, for a non-streamed answer, until it is
    /// read whole). Also the provider's default retry deadline. Default 120000.
    pub headers_ms: Option<u64>,
    /// Between body chunks. Default 120000.
    pub idle_ms: Option<u64>,
    /// Whole call. Default 600000.
    pub total_ms: Option<u64>,
}

impl TimeoutsSection {
    /// The timeouts this section describes.
    pub fn to_timeouts(self) -> Timeouts {
        let d = Timeouts::default();
        let pick = |v: Option<u64>, def: Option<Duration>| match v {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => def,
        };
        Timeouts {
            headers: pick(self.headers_ms, d.headers),
            idle: pick(self.idle_ms, d.idle),
            total: pick(self.total_ms, d.total),
        }
    }
}

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the field (`providers[1].base_url`).
    pub field: String,
    /// What is wrong.
    pub message: String,
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

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A validated provider, ready to be turned into a service.
#[derive(Clone, Debug)]
pub struct ResolvedProvider {
    /// The provider (for `kind = "mock"`, its URL is set when the mock starts).
    pub provider: Option<Provider>,
    /// Its timeouts.
    pub timeouts: Timeouts,
    /// The largest non-streamed answer read from it.
    pub max_response_bytes: usize,
    /// Public model names it serves.
    pub models: Vec<String>,
    /// The mock to start, for `kind = "mock"`.
    pub mock: Option<MockConfig>,
    /// Aliases to apply once the mock provider exists.
    pub aliases: BTreeMap<String, String>,
    /// Its name.
    pub name: String,
    /// Its retry policy.
    pub retry: RetryPolicy,
    /// Its breaker configuration.
    pub breaker: CircuitConfig,
    /// One breaker per model (else one for the provider).
    pub breaker_per_model: bool,
    /// The provider's limits.
    pub limits: Limits,
    /// Its weight for weighted routing.
    pub weight: u32,
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

    /// Checks everything that can be checked without the network, returning
    /// every problem found (not only the first).
    pub fn validate(&self) -> Result<Vec<ResolvedProvider>, Vec<ConfigError>> {
        self.validate_with_env(&|k| std::env::var(k).ok())
    }

    /// [`validate`](Self::validate) with an explicit environment lookup.
    pub fn validate_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<ResolvedProvider>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |field: String, message: String| errors.push(ConfigError { field, message });
        if self.providers.is_empty() {
            err("providers".into(), "at least one provider is required".into());
        }
        if http::HeaderName::from_bytes(self.tenants.header.as_bytes()).is_err() {
            err("tenants.header".into(), "not a valid header name".into());
        }
        if let Some(d) = &self.tenants.default {
            d.check("tenants.default", &mut err);
        }
        for (name, o) in &self.tenants.overrides {
            o.check(&format!("tenants.overrides.{name}"), &mut err);
        }
        let budgets = self.tenants.default_budget.iter().map(|b| ("tenants.default_budget".to_string(), b));
        let named = self.tenants.budgets.iter().map(|(n, b)| (format!("tenants.budgets.{n}"), b));
        for (at, b) in budgets.chain(named) {
            if !(b.usd.is_finite() && b.usd > 0.0) {
                err(format!("{at}.usd"), "must be a positive number of dollars".into());
            }
        }
        for (model, p) in &self.prices {
            let all = [Some(p.input), p.cached_input, Some(p.output), p.reasoning];
            if all.iter().flatten().any(|v| !(v.is_finite() && *v >= 0.0)) {
                err(
                    format!("prices.{model}"),
                    "prices must be non-negative numbers (USD per million tokens)".into(),
                );
            }
        }
        if let Some(c) = &self.cache {
            c.check(&mut err);
        }
        if self.server.admin_token.is_some() && self.server.admin_token_env.is_some() {
            err("server.admin_token_env".into(), "set admin_token or admin_token_env, not both".into());
        }
        if let Some(var) = &self.server.admin_token_env {
            if env(var).is_none_or(|v| v.is_empty()) {
                err("server.admin_token_env".into(), format!("environment variable {var} is not set"));
            }
        }
        if self.server.max_body_bytes == 0 {
            err("server.max_body_bytes".into(), "must be greater than 0".into());
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut served: BTreeMap<&str, &str> = BTreeMap::new();
        let mut out = Vec::new();
        for (i, p) in self.providers.iter().enumerate() {
            let at = |f: &str| format!("providers[{i}].{f}");
            if p.name.trim().is_empty() {
                err(at("name"), "must not be empty".into());
            } else if let Some(j) = names.insert(&p.name, i) {
                err(at("name"), format!("duplicate provider name {:?} (also providers[{j}])", p.name));
            }
            if p.models.is_empty() && p.aliases.is_empty() {
                err(at("models"), "list at least one model this provider serves".into());
            }
            for (k, m) in p.models.iter().enumerate() {
                if m.is_empty() {
                    err(at(&format!("models[{k}]")), "model names must not be empty".into());
                } else if let Some(other) = served.insert(m, &p.name) {
                    err(
                        at(&format!("models[{k}]")),
                        format!("model {m:?} is already served by provider {other:?}"),
                    );
                }
            }
            for alias in p.aliases.keys() {
                if let Some(other) = served.insert(alias, &p.name) {
                    if other != p.name {
                        err(
                            at(&format!("aliases.{alias}")),
                            format!("model {alias:?} is already served by provider {other:?}"),
                        );
                    }
                }
            }
            for (k, v) in &p.headers {
                if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    err(at(&format!("headers.{k}")), "not a valid header name".into());
                }
                if http::HeaderValue::from_str(v).is_err() {
                    err(at(&format!("headers.{k}")), "not a valid header value".into());
                }
            }
            p.retry.check(&at, &mut err);
            p.rate_limit.check(&at("rate_limit"), &mut err);
            p.circuit_breaker.check(&at, &mut err);
            if p.mock.is_some() && p.kind != ProviderKindConfig::Mock {
                err(at("mock"), "only allowed with kind = \"mock\"".into());
            }
            // The key: inline, or from the environment.
            let key = match (&p.api_key, &p.api_key_env) {
                (Some(_), Some(_)) => {
                    err(at("api_key_env"), "set api_key or api_key_env, not both".into());
                    None
                }
                (Some(k), None) => Some(k.clone()),
                (None, Some(var)) => match env(var).filter(|v| !v.is_empty()) {
                    Some(v) => Some(Secret::new(v)),
                    None => {
                        err(at("api_key_env"), format!("environment variable {var} is not set"));
                        None
                    }
                },
                (None, None) => None,
            };
            use ProviderKindConfig as K;
            let needs_key = matches!(
                p.kind,
                K::Openai | K::Azure | K::Anthropic | K::Groq | K::Together | K::Openrouter | K::Mistral
            ) && !(p.kind == K::Openai && p.base_url.is_some());
            if needs_key && key.is_none() && p.api_key_env.is_none() && !p.forward_client_auth {
                err(at("api_key_env"), "this provider needs an API key (api_key_env or api_key)".into());
            }
            let base = |default: Option<&'static str>| p.base_url.as_deref().or(default);
            let built: Result<Option<Provider>, (String, String)> = match p.kind {
                K::Mock => {
                    if p.base_url.is_some() {
                        Err((at("base_url"), "the mock provider runs in-process; remove base_url".into()))
                    } else {
                        Ok(None)
                    }
                }
                K::Azure => match (base(None), &p.api_version) {
                    (None, _) => Err((
                        at("base_url"),
                        "Azure needs the resource endpoint (https://NAME.openai.azure.com)".into(),
                    )),
                    (_, None) => {
                        Err((at("api_version"), "Azure needs an api_version (e.g. \"2024-10-21\")".into()))
                    }
                    (Some(url), Some(v)) => {
                        Provider::new(&p.name, ProviderKind::Azure { api_version: v.clone() }, url)
                            .map(Some)
                            .map_err(|e| (at("base_url"), e.to_string()))
                    }
                },
                kind => {
                    let (dialect, default_url) = match kind {
                        K::Anthropic => (
                            ProviderKind::Anthropic {
                                version: p
                                    .anthropic_version
                                    .clone()
                                    .unwrap_or_else(|| llm_tower_http::ANTHROPIC_VERSION.into()),
                            },
                            Some("https://api.anthropic.com/v1"),
                        ),
                        K::Openai => (ProviderKind::OpenAi, None),
                        K::Ollama => (ProviderKind::OpenAi, Some("http://127.0.0.1:11434/v1")),
                        K::Vllm => (ProviderKind::OpenAi, None),
                        K::Groq => (ProviderKind::OpenAi, Some("https://api.groq.com/openai/v1")),
                        K::Together => (ProviderKind::OpenAi, Some("https://api.together.xyz/v1")),
                        K::Openrouter => (ProviderKind::OpenAi, Some("https://openrouter.ai/api/v1")),
                        K::Mistral => (ProviderKind::OpenAi, Some("https://api.mistral.ai/v1")),
                        K::Mock | K::Azure => unreachable!("handled above"),
                    };
                    let default_url =
                        if kind == K::Openai && p.base_url.is_none() { None } else { default_url };
                    match base(default_url) {
                        None if kind == K::Openai => Err((
                            at("base_url"),
                            "set base_url (https://api.openai.com/v1 for OpenAI itself, or your endpoint's)"
                                .into(),
                        )),
                        None => Err((at("base_url"), "this provider kind needs a base_url".into())),
                        Some(url) => Provider::new(&p.name, dialect, url)
                            .map(Some)
                            .map_err(|e| (at("base_url"), e.to_string())),
                    }
                }
            };
            let provider = match built {
                Ok(p) => p,
                Err((f, m)) => {
                    err(f, m);
                    None
                }
            };
            let provider = provider.map(|mut prov| {
                if let Some(k) = key.clone() {
                    prov = prov.with_key(k);
                }
                for (a, t) in &p.aliases {
                    prov = prov.with_alias(a, t);
                }
                for (k, v) in &p.headers {
                    if http::HeaderName::from_bytes(k.as_bytes()).is_ok()
                        && http::HeaderValue::from_str(v).is_ok()
                    {
                        prov = prov.with_header(k, v);
                    }
                }
                prov.forward_client_auth(p.forward_client_auth)
            });
            let mut models = p.models.clone();
            models.extend(p.aliases.keys().filter(|a| !p.models.contains(a)).cloned());
            out.push(ResolvedProvider {
                provider,
                timeouts: p.timeouts.to_timeouts(),
                max_response_bytes: p
                    .max_response_bytes
                    .unwrap_or(llm_tower_http::DEFAULT_MAX_RESPONSE_BYTES),
                models,
                mock: (p.kind == K::Mock).then(|| p.mock.clone().unwrap_or_default()),
                aliases: p.aliases.clone(),
                name: p.name.clone(),
                retry: p.retry.to_policy(),
                breaker: p.circuit_breaker.to_config(),
                breaker_per_model: p.circuit_breaker.key == BreakerKey::Model,
                limits: p.rate_limit.to_limits(ModeKind::Wait),
                weight: p.weight,
            });
        }
        let mut route_names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = |f: &str| format!("routes[{i}].{f}");
            if r.model.is_empty() {
                err(at("model"), "must not be empty".into());
            } else if let Some(j) = route_names.insert(&r.model, i) {
                err(at("model"), format!("route {:?} is defined twice (also routes[{j}])", r.model));
            }
            if r.targets.is_empty() {
                err(at("targets"), "list at least one provider".into());
            }
            for (k, t) in r.targets.iter().enumerate() {
                if !names.contains_key(t.provider.as_str()) {
                    err(at(&format!("targets[{k}].provider")), format!("no provider named {:?}", t.provider));
                }
            }
            if let (Some(_), Some(_)) = (r.hedge_after_ms, r.hedge_percentile) {
                err(at("hedge_percentile"), "set hedge_after_ms or hedge_percentile, not both".into());
            }
            if r.hedge_percentile.is_some_and(|p| !(p > 0.0 && p < 1.0)) {
                err(at("hedge_percentile"), "must be between 0 and 1".into());
            }
            if !(0.0..=1.0).contains(&r.hedge_max_ratio) {
                err(at("hedge_max_ratio"), "must be between 0 and 1".into());
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(f) = &r.context_fallback {
                if !route_names.contains_key(f.as_str()) && !served.contains_key(f.as_str()) {
                    err(
                        format!("routes[{i}].context_fallback"),
                        format!("no route or provider serves {f:?}"),
                    );
                }
            }
        }
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }
}

/// Why a stack could not be built from its configuration.
#[derive(Debug)]
pub enum BuildError {
    /// The configuration is invalid (every problem found).
    Config(Vec<ConfigError>),
    /// An in-process mock provider could not start.
    Io(std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(errs) => {
                writeln!(f, "invalid configuration:")?;
                for e in errs {
                    writeln!(f, "  {e}")?;
                }
                Ok(())
            }
            BuildError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// A stack built from a [`StackConfig`], with what it needs kept alive.
#[derive(Debug)]
#[non_exhaustive]
pub struct Built {
    /// The stack.
    pub llm: crate::Llm,
    /// The public models, with the provider that owns each (`llm-tower` for routes).
    pub models: Vec<llm_tower_core::chat::Model>,
    /// In-process mock providers (`kind = "mock"`), stopped when dropped.
    pub mocks: Vec<llm_tower_mock::MockServer>,
}

impl StackConfig {
    /// Validates, starts the in-process mock providers, and builds the stack
    /// with [`LlmStack`](crate::LlmStack) in the recommended order: token
    /// count and context pre-flight, accounting and budgets, the cache (if
    /// configured), tenant limits, failover over each provider's retry,
    /// breaker, limits and timeouts.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let built = llm_tower::config::StackConfig::embedded_default().build().await?;
    /// assert!(built.llm.models().contains(&"gpt-4o-mini".to_string()));
    /// # Ok(()) }
    /// ```
    pub async fn build(&self) -> Result<Built, BuildError> {
        use crate::{LlmStack, ProviderSpec, TenantLimits};
        use llm_tower_core::chat::Model;
        use llm_tower_ratelimit::RateLimitLayer;
        let resolved = self.validate().map_err(BuildError::Config)?;
        let client = llm_tower_http::HttpClient::new(self.client.to_client_config());
        let mut stack = LlmStack::new().client(client);
        let mut models = Vec::new();
        let mut mocks = Vec::new();
        for r in resolved {
            let provider = match (r.provider, r.mock) {
                (Some(p), _) => p,
                (None, Some(mock_cfg)) => {
                    let mock = llm_tower_mock::MockServer::start(mock_cfg).await.map_err(BuildError::Io)?;
                    let mut p = Provider::openai_compatible(&r.name, &format!("{}/v1", mock.url()))
                        .expect("the mock's URL is valid");
                    for (a, t) in &r.aliases {
                        p = p.with_alias(a, t);
                    }
                    mocks.push(mock);
                    p
                }
                (None, None) => unreachable!("validation yields a provider or a mock"),
            };
            for m in &r.models {
                models.push(Model::new(m.clone(), provider.name()));
            }
            stack = stack.provider(
                ProviderSpec::new(provider)
                    .models(r.models)
                    .retry(r.retry)
                    .breaker(r.breaker)
                    .breaker_per_model(r.breaker_per_model)
                    .limits(r.limits)
                    .timeouts(r.timeouts)
                    .max_response_bytes(r.max_response_bytes)
                    .weight(r.weight),
            );
        }
        for route in &self.routes {
            stack = stack.route(route.model.clone(), route.to_route());
            if !models.iter().any(|m| m.id == route.model) {
                models.push(Model::new(route.model.clone(), "llm-tower"));
            }
        }
        models.sort_by(|a, b| a.id.cmp(&b.id));
        let t = &self.tenants;
        let mut tenants =
            TenantLimits::new(t.default.as_ref().map(|d| RateLimitLayer::new(d.to_limits(ModeKind::Reject))));
        for (name, l) in &t.overrides {
            tenants = tenants.tenant(name.clone(), RateLimitLayer::new(l.to_limits(ModeKind::Reject)));
        }
        stack = stack
            .count_tokens(self.server.context_preflight.to_preflight())
            .accounting(llm_tower_tokens::AccountingConfig {
                prices: self.prices.iter().map(|(m, p)| (m.clone(), p.to_prices())).collect(),
                default_budget: t.default_budget.map(|b| b.to_budget()),
                budgets: t.budgets.iter().map(|(n, b)| (n.clone(), b.to_budget())).collect(),
                ..Default::default()
            })
            .tenant_limits(tenants)
            .health(self.failover.to_health());
        if let Some(c) = &self.cache {
            stack = stack.cache(c.to_config());
        }
        let llm = stack.build().map_err(|errs| {
            BuildError::Config(
                errs.into_iter().map(|e| ConfigError { field: e.field, message: e.message }).collect(),
            )
        })?;
        Ok(Built { llm, models, mocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(toml: &str) -> Vec<String> {
        let env = |k: &str| (k == "SET_KEY").then(|| "sk-env".to_string());
        match StackConfig::from_toml(toml) {
            Err(e) => vec![e.to_string()],
            Ok(c) => {
                c.validate_with_env(&env).err().unwrap_or_default().iter().map(|e| e.to_string()).collect()
            }
        }
    }

    #[test]
    fn embedded_default_is_valid() {
        let resolved = StackConfig::embedded_default().validate().unwrap();
        assert_eq!(resolved.len(), 1);
        assert!(resolved[0].mock.is_some());
        assert!(resolved[0].models.contains(&"fast".to_string()));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("", "providers: at least one provider is required"),
            ("[server]\nlisten = 'nope'", "line 2"),
            ("[server]\nbogus = 1", "unknown field `bogus`"),
            ("[[providers]]\nname='a'\nkind='openai'\nmodels=['m']", "providers[0].base_url"),
            ("[[providers]]\nname='a'\nkind='warp'\nmodels=['m']", "unknown variant `warp`"),
            (
                "[[providers]]\nname='a'\nkind='openai'\nbase_url='ftp://x'\nmodels=['m']",
                "providers[0].base_url: invalid base URL",
            ),
            (
                "[[providers]]\nname='a'\nkind='groq'\nmodels=['m']",
                "providers[0].api_key_env: this provider needs an API key",
            ),
            (
                "[[providers]]\nname='a'\nkind='groq'\napi_key_env='UNSET_KEY'\nmodels=['m']",
                "UNSET_KEY is not set",
            ),
            (
                "[[providers]]\nname='a'\nkind='azure'\napi_key_env='SET_KEY'\nbase_url='https://x.openai.azure.com'\nmodels=['m']",
                "providers[0].api_version",
            ),
            ("[[providers]]\nname='a'\nkind='mock'\nmodels=[]", "providers[0].models"),
            (
                "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\n[[providers]]\nname='a'\nkind='mock'\nmodels=['m']",
                "providers[1].models[0]: model \"m\" is already served by provider \"a\"",
            ),
            (
                "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\nheaders={'bad name'='x'}",
                "providers[0].headers.bad name",
            ),
            (
                "[[providers]]\nname='a'\nkind='ollama'\nmodels=['m']\n[providers.mock]\nseed=1",
                "providers[0].mock",
            ),
            (
                "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\n[providers.rate_limit]\ntokens_per_minute=0",
                "providers[0].rate_limit.tokens_per_minute",
            ),
            (
                "[tenants.default]\nrequests_per_minute=0\n[[providers]]\nname='a'\nkind='mock'\nmodels=['m']",
                "tenants.default.requests_per_minute",
            ),
            (
                "[tenants]\nheader='bad header'\n[[providers]]\nname='a'\nkind='mock'\nmodels=['m']",
                "tenants.header",
            ),
            (
                "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\n[providers.rate_limit]\nmode='maybe'",
                "unknown variant `maybe`",
            ),
        ];
        for (toml, needle) in cases {
            let errs = errors(toml);
            assert!(errs.iter().any(|e| e.contains(needle)), "{toml:?}: {errs:?} lacks {needle:?}");
        }
    }

    #[test]
    fn reports_every_problem_at_once() {
        let errs = errors("[[providers]]\nname=''\nkind='openai'\nmodels=[]");
        assert!(errs.len() >= 3, "{errs:?}");
    }

    #[test]
    fn keys_from_env_never_print() {
        let cfg = StackConfig::from_toml(
            "[[providers]]\nname='g'\nkind='groq'\napi_key_env='SET_KEY'\nmodels=['m']\n[[providers]]\nname='i'\nkind='openai'\nbase_url='http://127.0.0.1:1/v1'\napi_key='sk-inline'\nmodels=['n']",
        )
        .unwrap();
        let resolved = cfg.validate_with_env(&|k| (k == "SET_KEY").then(|| "sk-env".to_string())).unwrap();
        let dump = format!("{cfg:?} {resolved:?}");
        assert!(!dump.contains("sk-env") && !dump.contains("sk-inline"), "{dump}");
    }

    #[test]
    fn retry_and_breaker_sections_map_to_policies() {
        let cfg = StackConfig::from_toml(
            "[[providers]]\nname='a'\nkind='mock'\nmodels=['m']\n[providers.retry]\nmax_attempts=5\nbackoff='fixed'\nbase_ms=250\njitter='none'\ndeadline_ms=9000\n[providers.circuit_breaker]\nkey='model'\nconsecutive_failures=0\nwindow_secs=30\nopen_secs=5",
        )
        .unwrap();
        let r = &cfg.validate().unwrap()[0];
        assert_eq!(r.retry.max_attempts, 5);
        assert_eq!(r.retry.backoff, Backoff::Fixed(Duration::from_millis(250)));
        assert_eq!(r.retry.jitter, Jitter::None);
        assert_eq!(r.retry.deadline, Some(Duration::from_secs(9)));
        assert!(r.breaker_per_model);
        assert_eq!(r.breaker.consecutive_failures, None);
        assert_eq!(r.breaker.window, Window::Time { buckets: 30, bucket: Duration::from_secs(1) });
        assert_eq!(r.breaker.open_duration, Duration::from_secs(5));
        let off = RetrySection { enabled: false, ..Default::default() }.to_policy();
        assert_eq!(off.max_attempts, 1);
        let never = BreakerSection { enabled: false, ..Default::default() }.to_config();
        assert!(
            never.consecutive_failures.is_none()
                && never.failure_rate.is_none()
                && never.slow_calls.is_none()
        );
    }

    #[test]
    fn timeouts_zero_disables() {
        let t = TimeoutsSection { headers_ms: Some(0), idle_ms: Some(500), total_ms: None }.to_timeouts();
        assert_eq!(t.headers, None);
        assert_eq!(t.idle, Some(Duration::from_millis(500)));
        assert_eq!(t.total, Timeouts::default().total);
    }
}
