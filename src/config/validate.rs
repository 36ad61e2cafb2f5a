//! Validation: every problem of a document at once, each naming its field.

use std::collections::BTreeMap;

use llm_tower_circuit::CircuitConfig;
use llm_tower_core::Secret;
use llm_tower_http::{Provider, ProviderKind, Timeouts};
use llm_tower_ratelimit::Limits;
use llm_tower_retry::RetryPolicy;

use super::{BreakerKey, ConfigError, MockConfig, ModeKind, ProviderConfig, ProviderKindConfig, StackConfig};

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
        let mut sections = Vec::new();
        if let Some(d) = &self.tenants.default {
            sections.extend(d.check("tenants.default"));
        }
        for (name, o) in &self.tenants.overrides {
            sections.extend(o.check(&format!("tenants.overrides.{name}")));
        }
        if let Some(b) = &self.tenants.default_budget {
            sections.extend(b.check("tenants.default_budget"));
        }
        for (name, b) in &self.tenants.budgets {
            sections.extend(b.check(&format!("tenants.budgets.{name}")));
        }
        for (model, p) in &self.prices {
            sections.extend(p.check(&format!("prices.{model}")));
        }
        if let Some(c) = &self.cache {
            sections.extend(c.check("cache"));
        }
        sections.extend(self.check_identity(env));
        if let Some(t) = &self.traces {
            sections.extend(t.check("traces"));
        }
        if let Some(st) = &self.state {
            sections.extend(st.check("state", env));
        }
        for e in sections {
            err(e.field, e.message);
        }
        let has_redis =
            self.state.as_ref().is_some_and(|s| s.redis_url.is_some() || s.redis_url_env.is_some());
        if self.cache.as_ref().is_some_and(|c| c.shared) && !has_redis {
            err(
                "cache.shared".into(),
                "a shared cache tier needs [state] redis_url (or redis_url_env)".into(),
            );
        }
        if self.server.admin_token.is_some() && self.server.admin_token_env.is_some() {
            err("server.admin_token_env".into(), "set admin_token or admin_token_env, not both".into());
        }
        if let Some(var) = &self.server.admin_token_env {
            if env(var).is_none_or(|v| v.is_empty()) {
                err("server.admin_token_env".into(), format!("environment variable {var} is not set"));
            }
        }
        if self.server.listen_backlog == 0 {
            err("server.listen_backlog".into(), "must be greater than 0".into());
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
            let checks = [
                p.retry.check(&at("retry")),
                p.rate_limit.check(&at("rate_limit")),
                p.circuit_breaker.check(&at("circuit_breaker")),
            ];
            for e in checks.into_iter().flatten() {
                err(e.field, e.message);
            }
            if p.mock.is_some() && p.kind != ProviderKindConfig::Mock {
                err(at("mock"), "only allowed with kind = \"mock\"".into());
            }
            let provider = upstream(p, &at, env, &mut err);
            let mut models = p.models.clone();
            models.extend(p.aliases.keys().filter(|a| !p.models.contains(a)).cloned());
            out.push(ResolvedProvider {
                provider,
                timeouts: p.timeouts.to_timeouts(),
                max_response_bytes: p
                    .max_response_bytes
                    .unwrap_or(llm_tower_http::DEFAULT_MAX_RESPONSE_BYTES),
                models,
                mock: (p.kind == ProviderKindConfig::Mock).then(|| p.mock.clone().unwrap_or_default()),
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
            for e in r.check(&format!("routes[{i}]")) {
                err(e.field, e.message);
            }
            if !r.model.is_empty() {
                if let Some(j) = route_names.insert(&r.model, i) {
                    err(at("model"), format!("route {:?} is defined twice (also routes[{j}])", r.model));
                }
            }
            for (k, t) in r.targets.iter().enumerate() {
                if !names.contains_key(t.provider.as_str()) {
                    err(at(&format!("targets[{k}].provider")), format!("no provider named {:?}", t.provider));
                }
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

/// The upstream `p` describes (`None` for the in-process mock, or when it is
/// invalid: then its problems are in `err`), with its key, aliases and headers.
fn upstream(
    p: &ProviderConfig,
    at: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
    err: &mut dyn FnMut(String, String),
) -> Option<Provider> {
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
        K::Openai | K::Azure | K::Anthropic | K::Gemini | K::Groq | K::Together | K::Openrouter | K::Mistral
    ) && !(p.kind == K::Openai && p.base_url.is_some());
    if needs_key && key.is_none() && p.api_key_env.is_none() && !p.forward_client_auth {
        err(at("api_key_env"), "this provider needs an API key (api_key_env or api_key)".into());
    }
    let base = |default: Option<&'static str>| p.base_url.as_deref().or(default);
    let built: Result<Option<Provider>, (String, String)> = match p.kind {
        #[cfg(not(feature = "mock"))]
        K::Mock => Err((at("kind"), "the mock provider needs llm-tower's `mock` feature".into())),
        #[cfg(feature = "mock")]
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
            (_, None) => Err((at("api_version"), "Azure needs an api_version (e.g. \"2024-10-21\")".into())),
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
                K::Gemini => (ProviderKind::Gemini, Some("https://generativelanguage.googleapis.com/v1beta")),
                K::Openai => (ProviderKind::OpenAi, None),
                K::Ollama => (ProviderKind::OpenAi, Some("http://127.0.0.1:11434/v1")),
                K::Vllm => (ProviderKind::OpenAi, None),
                K::Groq => (ProviderKind::OpenAi, Some("https://api.groq.com/openai/v1")),
                K::Together => (ProviderKind::OpenAi, Some("https://api.together.xyz/v1")),
                K::Openrouter => (ProviderKind::OpenAi, Some("https://openrouter.ai/api/v1")),
                K::Mistral => (ProviderKind::OpenAi, Some("https://api.mistral.ai/v1")),
                K::Mock | K::Azure => unreachable!("handled above"),
            };
            let default_url = if kind == K::Openai && p.base_url.is_none() { None } else { default_url };
            match base(default_url) {
                None if kind == K::Openai => Err((
                    at("base_url"),
                    "set base_url (https://api.openai.com/v1 for OpenAI itself, or your endpoint's)".into(),
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
    provider.map(|mut prov| {
        if let Some(k) = key.clone() {
            prov = prov.with_key(k);
        }
        for (a, t) in &p.aliases {
            prov = prov.with_alias(a, t);
        }
        for (k, v) in &p.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_ok() && http::HeaderValue::from_str(v).is_ok() {
                prov = prov.with_header(k, v);
            }
        }
        prov.forward_client_auth(p.forward_client_auth)
    })
}

impl StackConfig {
    /// `[auth]`, `[[keys]]` and how they fit the tenants and the admin token.
    fn check_identity(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigError> {
        use super::AuthMode;
        let mut errs = self.auth.check("auth");
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            let path = format!("keys[{i}]");
            errs.extend(k.check_with_env(&path, env));
            if !names.insert(k.name.as_str()) {
                errs.push(ConfigError::at(&path, "name", format!("another key is named {}", k.name)));
            }
            if let Some(h) = k.key_hash_with_env(env)
                && let Some(other) = hashes.insert(h, k.name.as_str())
            {
                errs.push(ConfigError::at(&path, "key_env", format!("the same key as {other}")));
            }
        }
        match self.auth.mode {
            AuthMode::Keys if self.keys.is_empty() && self.admin_token_with_env(env).is_none() => {
                errs.push(ConfigError::at(
                    "auth",
                    "mode",
                    "no [[keys]] and no server.admin_token to create them: nobody could call the gateway",
                ));
            }
            AuthMode::Open if !self.keys.is_empty() => errs.push(ConfigError::at(
                "auth",
                "mode",
                "[[keys]] are given but mode is \"open\": set mode = \"keys\" to require them",
            )),
            AuthMode::Open
                if !self.auth.trust_tenant_header
                    && (!self.tenants.overrides.is_empty() || !self.tenants.budgets.is_empty()) =>
            {
                errs.push(ConfigError::at(
                    "auth",
                    "trust_tenant_header",
                    "tenants are named in [tenants] but no request can name one: use mode = \"keys\", \
                     or trust_tenant_header = true (any client may then spend as any tenant)",
                ));
            }
            _ => {}
        }
        errs
    }
}
