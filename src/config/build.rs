//! Building a stack from a validated configuration.

use std::fmt;

#[cfg(feature = "mock")]
use llm_tower_http::Provider;

use super::{ConfigError, ModeKind, StackConfig};

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
    /// In-process mock providers (`kind = "mock"`), each with its provider's
    /// name, stopped when dropped.
    #[cfg(feature = "mock")]
    pub mocks: Vec<(String, llm_tower_mock::MockServer)>,
    /// The shared Redis (`[state] redis_url`), when configured.
    #[cfg(feature = "redis")]
    pub redis: Option<llm_tower_redis::Redis>,
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
        let resolved = self.validate().map_err(BuildError::Config)?;
        let client = llm_tower_http::HttpClient::new(self.client.to_client_config());
        let mut stack = LlmStack::new().client(client);
        #[cfg(feature = "redis")]
        let redis = match self
            .state
            .as_ref()
            .and_then(|s| Some((s, s.redis_url_with_env(&|k| std::env::var(k).ok())?)))
        {
            Some((st, url)) => {
                use llm_tower_redis::{OnRedisError, Redis, RedisConfig};
                let tls_ca_pem = match &st.redis_ca_file {
                    Some(f) => Some(std::fs::read(f).map_err(|e| {
                        BuildError::Io(std::io::Error::other(format!("state.redis_ca_file: {e}")))
                    })?),
                    None => None,
                };
                let cfg = RedisConfig {
                    prefix: st.redis_prefix.clone(),
                    command_timeout: std::time::Duration::from_millis(st.redis_timeout_ms),
                    tls_ca_pem,
                    ..Default::default()
                };
                // Redis must answer at start; after that an outage is handled
                // as `on_redis_error` says.
                let redis = Redis::connect(url.expose(), cfg)
                    .await
                    .map_err(|e| BuildError::Io(std::io::Error::other(format!("state.redis_url: {e}"))))?;
                let mode = match st.on_redis_error {
                    super::OnRedisErrorKind::Local => OnRedisError::Local,
                    super::OnRedisErrorKind::Closed => OnRedisError::Closed,
                };
                stack = stack.shared_limits(redis.clone(), mode);
                Some(redis)
            }
            None => None,
        };
        let mut models = Vec::new();
        #[cfg(feature = "mock")]
        let mut mocks = Vec::new();
        for r in resolved {
            let provider = match (r.provider, r.mock) {
                (Some(p), _) => p,
                #[cfg(feature = "mock")]
                (None, Some(mock_cfg)) => {
                    let mock = llm_tower_mock::MockServer::start(mock_cfg).await.map_err(BuildError::Io)?;
                    let mut p = Provider::openai_compatible(&r.name, &format!("{}/v1", mock.url()))
                        .expect("the mock's URL is valid");
                    for (a, t) in &r.aliases {
                        p = p.with_alias(a, t);
                    }
                    mocks.push((r.name.clone(), mock));
                    p
                }
                _ => unreachable!("validation yields a provider or a mock"),
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
        let mut tenants = TenantLimits::new(t.default.as_ref().map(|d| d.to_limits(ModeKind::Reject)));
        for (name, l) in &t.overrides {
            tenants = tenants.tenant(name.clone(), l.to_limits(ModeKind::Reject));
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
            #[cfg(feature = "redis")]
            if let (true, Some(r)) = (c.shared, &redis) {
                stack = stack.shared_cache(r.clone());
            }
        }
        let llm = stack.build().map_err(|errs| {
            BuildError::Config(
                errs.into_iter().map(|e| ConfigError { field: e.field, message: e.message }).collect(),
            )
        })?;
        Ok(Built {
            llm,
            models,
            #[cfg(feature = "mock")]
            mocks,
            #[cfg(feature = "redis")]
            redis,
        })
    }
}
