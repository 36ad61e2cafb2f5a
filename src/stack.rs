//! [`LlmStack`]: every layer in the recommended order, behind one builder.

use std::collections::HashMap;
use std::sync::Arc;

use http::{Request, Response};
use llm_tower_cache::{CacheConfig, CacheLayer};
use llm_tower_circuit::{CircuitBreaker, CircuitBreakerLayer, CircuitConfig, CircuitHandle};
use llm_tower_core::{BoxError, KeyFn, LlmBody};
use llm_tower_failover::{Backend, Failover, FailoverConfigError, HealthConfig, Route, Target};
use llm_tower_http::{HttpClient, LlmHttpService, Provider, Timeouts};
use llm_tower_ratelimit::{Limits, RateLimit, RateLimitLayer};
use llm_tower_retry::{Retry, RetryLayer, RetryPolicy};
use llm_tower_tokens::{AccountingConfig, Preflight, TokenAccountingLayer, TokenCountLayer};
use tower::Layer;
use tower::util::BoxCloneSyncService;

use crate::store::Stores;
use crate::{LimitStore, SpendStore};

/// One provider's stack: Retry → CircuitBreaker → RateLimit → LlmHttpService
/// (timeouts inside the HTTP service).
pub type ProviderStack = Retry<CircuitBreaker<RateLimit<LlmHttpService, LimitStore>>>;

/// The body of every response of a built stack (and of every layer): core's
/// observed, metered-once body.
pub use llm_tower_core::LlmResponseBody;

/// A built stack as one cloneable service, and the name for any stack of
/// llm-tower layers over an HTTP service: every layer answers with an
/// `LlmResponseBody` and a `BoxError`, so `LlmService::new(stack)` boxes a
/// hand-composed stack once, without mapping its body or errors.
///
/// ```
/// use llm_tower::ratelimit::{Limits, RateLimitLayer};
/// use llm_tower::retry::{RetryLayer, RetryPolicy};
/// use llm_tower::{LlmHttpService, LlmService, Provider};
/// let http = LlmHttpService::new(Provider::openai_compatible("local", "http://127.0.0.1:11434/v1")?);
/// let stack: LlmService = LlmService::new(
///     tower::ServiceBuilder::new()
///         .layer(RetryLayer::new(RetryPolicy::default()))
///         .option_layer(Some(RateLimitLayer::new(Limits::default().requests_per_minute(60))))
///         .service(http),
/// );
/// # let _ = stack;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LlmService = BoxCloneSyncService<Request<LlmBody>, Response<LlmResponseBody>, BoxError>;

/// A provider and how to call it: the models it serves and its own layers.
/// Defaults: retry with the default policy; one breaker per provider that
/// opens on 10 consecutive failures or a 50 % failure rate over 100 calls
/// (a provider answering a steady share of 429s and 5xx stays in use, retried;
/// an outage trips it within a few calls); no limits; the default timeouts;
/// weight 1.
///
/// ```
/// use llm_tower::{Provider, ProviderSpec};
/// use llm_tower::ratelimit::Limits;
/// let spec = ProviderSpec::new(Provider::openai_compatible("local", "http://127.0.0.1:11434/v1")?)
///     .models(["llama3.1"])
///     .limits(Limits::default().requests_per_minute(600))
///     .no_retry();
/// # let _ = spec;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    provider: Provider,
    models: Vec<String>,
    retry: RetryPolicy,
    breaker: CircuitConfig,
    breaker_per_model: bool,
    limits: Limits,
    timeouts: Timeouts,
    max_response_bytes: usize,
    weight: u32,
}

impl ProviderSpec {
    /// `provider` with the default layers.
    pub fn new(provider: Provider) -> Self {
        ProviderSpec {
            provider,
            models: Vec::new(),
            retry: RetryPolicy::default(),
            breaker: CircuitConfig::default().consecutive_failures(Some(10)),
            breaker_per_model: false,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            max_response_bytes: llm_tower_http::DEFAULT_MAX_RESPONSE_BYTES,
            weight: 1,
        }
    }

    /// The public model names it serves (each becomes a route to it, or joins
    /// the route of another provider serving the same name, after it).
    pub fn models<I: IntoIterator<Item = S>, S: Into<String>>(mut self, models: I) -> Self {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Its retry policy. A policy without a deadline gets the provider's
    /// headers timeout as its deadline (all attempts and waits together), so a
    /// hung provider is answered within that time, never after attempts ×
    /// timeout.
    pub fn retry(mut self, p: RetryPolicy) -> Self {
        self.retry = p;
        self
    }

    /// No retries (one attempt).
    pub fn no_retry(self) -> Self {
        self.retry(RetryPolicy::default().max_attempts(1))
    }

    /// Its breaker.
    pub fn breaker(mut self, c: CircuitConfig) -> Self {
        self.breaker = c;
        self
    }

    /// A breaker that never trips.
    pub fn no_breaker(self) -> Self {
        self.breaker(CircuitConfig::default().consecutive_failures(None).failure_rate(None))
    }

    /// One breaker per model instead of one for the provider.
    pub fn breaker_per_model(mut self, yes: bool) -> Self {
        self.breaker_per_model = yes;
        self
    }

    /// Its rate limits (what the provider allows you).
    pub fn limits(mut self, l: Limits) -> Self {
        self.limits = l;
        self
    }

    /// Its timeouts.
    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.timeouts = t;
        self
    }

    /// The largest non-streamed answer read from it, in bytes (default 8 MiB;
    /// see `LlmHttpService::max_response_bytes`).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Its weight for weighted routing.
    pub fn weight(mut self, w: u32) -> Self {
        self.weight = w;
        self
    }
}

/// What a built stack exposes of one provider, for stats and control.
#[derive(Clone, Debug)]
pub struct ProviderHandles {
    /// Its name.
    pub name: Arc<str>,
    /// Its retry layer (`stats()`).
    pub retry: RetryLayer,
    /// Its breaker (state per key, force open/closed, `stats()`).
    pub breaker: CircuitHandle,
    /// Its limiter (`stats()`, `wait_for`).
    pub limiter: RateLimitLayer<LimitStore>,
}

/// Per-tenant limits: every tenant (`RequestInfo::tenant`) its own quota
/// under the default limits, or under limits of its own. One rate limiter
/// keyed by tenant serves them all (its per-key limits), so a request pays
/// for one limiter, whichever its tenant.
///
/// ```
/// use llm_tower::TenantLimits;
/// use llm_tower::ratelimit::Limits;
/// let t = TenantLimits::new(Some(Limits::default().requests_per_minute(60)))
///     .tenant("acme", Limits::default().requests_per_minute(600));
/// let layer = t.layer();
/// let as_tenant = |name: &str| {
///     let mut info = llm_tower::RequestInfo::parse(llm_tower::core::Api::ChatCompletions, br#"{"model":"m","messages":[]}"#).unwrap();
///     info.tenant = Some(name.into());
///     let mut req = http::Request::new(());
///     req.extensions_mut().insert(std::sync::Arc::new(info));
///     req
/// };
/// assert_eq!(layer.limits_for(&as_tenant("acme")).requests_per_minute, Some(600));
/// assert_eq!(layer.limits_for(&as_tenant("globex")).requests_per_minute, Some(60));
/// ```
#[derive(Clone, Debug, Default)]
pub struct TenantLimits {
    default: Option<Limits>,
    overrides: Vec<(String, Limits)>,
}

impl TenantLimits {
    /// Every tenant limited by `default` (each its own quota), when set;
    /// unset, only the tenants named with [`tenant`](Self::tenant) are limited.
    pub fn new(default: Option<Limits>) -> Self {
        TenantLimits { default, overrides: Vec::new() }
    }

    /// `tenant` limited by its own `limits` instead.
    pub fn tenant(mut self, tenant: impl Into<String>, limits: Limits) -> Self {
        let tenant = tenant.into();
        self.overrides.retain(|(t, _)| *t != tenant);
        self.overrides.push((tenant, limits));
        self
    }

    /// The rate limiter, keyed by tenant, with each named tenant's limits,
    /// its state in this process.
    pub fn layer(&self) -> RateLimitLayer<LimitStore> {
        self.layer_in(LimitStore::default())
    }

    /// [`layer`](Self::layer), its state in `store`.
    pub fn layer_in(&self, store: LimitStore) -> RateLimitLayer<LimitStore> {
        // No default: the other tenants pass without touching the limiter.
        let default = self.default.unwrap_or_else(|| Limits::default().adaptive(false));
        RateLimitLayer::with_key_limits(default, self.overrides.iter().cloned(), store).keyed(KeyFn::tenant())
    }
}

/// A problem in an [`LlmStack`], naming where.
pub type StackError = FailoverConfigError;

/// Every problem [`LlmStack::build`] found (at least one): an error in its
/// own right (`?` works in a function returning `Box<dyn Error>`), and a
/// slice of [`StackError`]s to look at one by one.
///
/// ```
/// use llm_tower::failover::{Route, Target};
/// use llm_tower::{LlmStack, StackErrors};
/// let err: StackErrors = LlmStack::new().route("smart", Route::new([Target::new("nowhere")])).build().unwrap_err();
/// assert!(err.iter().any(|e| e.to_string().contains("nowhere")), "{err}");
/// let boxed: Box<dyn std::error::Error> = Box::new(err);
/// assert!(!boxed.to_string().is_empty());
/// ```
#[derive(Clone, Debug)]
pub struct StackErrors(pub Vec<StackError>);

impl std::ops::Deref for StackErrors {
    type Target = [StackError];
    fn deref(&self) -> &[StackError] {
        &self.0
    }
}

impl IntoIterator for StackErrors {
    type Item = StackError;
    type IntoIter = std::vec::IntoIter<StackError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl std::fmt::Display for StackErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StackErrors {}

/// Assembles the recommended order (see `docs/ARCHITECTURE.md`), each layer
/// optional:
///
/// ```text
/// TokenCount -> TokenAccounting -> Cache -> TenantLimits -> Failover
///   -> per provider: Retry -> CircuitBreaker -> RateLimit -> LlmHttpService (timeouts)
/// ```
///
/// Providers list the models they serve; each model becomes a route to the
/// providers serving it (in the order given), and [`route`](Self::route) adds
/// logical models with their own targets, strategy, hedging and
/// context-window fallback. The failover skips a provider whose breaker is
/// open or whose limiter would make the request wait longer than another's.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
/// use llm_tower::{LlmStack, Provider, ProviderSpec};
/// use llm_tower::cache::CacheConfig;
/// use llm_tower::tokens::AccountingConfig;
/// use tower::ServiceExt;
///
/// let mock = llm_tower::mock::MockServer::start(Default::default()).await?;
/// let llm = LlmStack::new()
///     .provider(ProviderSpec::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?).models(["gpt-4o-mini"]))
///     .accounting(AccountingConfig::default())
///     .cache(CacheConfig::default())
///     .build()
///     .map_err(|e| format!("{e:?}"))?;
/// let req = http::Request::post("/v1/chat/completions")
///     .body(llm_tower::LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#))?;
/// let res = llm.service().oneshot(req).await?;
/// assert_eq!(res.headers()["x-llm-backend"], "mock");
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct LlmStack {
    providers: Vec<ProviderSpec>,
    routes: Vec<(String, Route)>,
    count: Option<Preflight>,
    accounting: Option<AccountingConfig>,
    cache: Option<CacheConfig>,
    tenants: Option<TenantLimits>,
    health: HealthConfig,
    client: Option<HttpClient>,
    stores: Stores,
    /// The cache's shared second tier.
    #[cfg(feature = "redis")]
    cache_l2: Option<llm_tower_redis::Redis>,
}

impl std::fmt::Debug for LlmStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmStack").field("providers", &self.providers).field("routes", &self.routes).finish()
    }
}

impl LlmStack {
    /// An empty stack: add providers, then the layers wanted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider.
    pub fn provider(mut self, p: ProviderSpec) -> Self {
        self.providers.push(p);
        self
    }

    /// Serves logical model `model` by `route` (targets name providers).
    pub fn route(mut self, model: impl Into<String>, route: Route) -> Self {
        self.routes.push((model.into(), route));
        self
    }

    /// Counts input tokens exactly first (for limits and budgets) and checks
    /// the context window.
    pub fn count_tokens(mut self, preflight: Preflight) -> Self {
        self.count = Some(preflight);
        self
    }

    /// Records usage and cost, and enforces budgets.
    pub fn accounting(mut self, cfg: AccountingConfig) -> Self {
        self.accounting = Some(cfg);
        self
    }

    /// Answers repeated requests from memory.
    pub fn cache(mut self, cfg: CacheConfig) -> Self {
        self.cache = Some(cfg);
        self
    }

    /// Limits each tenant (below the cache: a hit spends no quota).
    pub fn tenant_limits(mut self, t: TenantLimits) -> Self {
        self.tenants = Some(t);
        self
    }

    /// Health checking and slow start of providers.
    pub fn health(mut self, h: HealthConfig) -> Self {
        self.health = h;
        self
    }

    /// Shares this connection pool (default: a new one).
    pub fn client(mut self, c: HttpClient) -> Self {
        self.client = Some(c);
        self
    }

    /// Keeps every limiter's state in `redis` (each provider's under its
    /// name, the tenants' under `tenants`) and the tenants' budget spend
    /// there too, so every gateway built on the same Redis and prefix holds
    /// one shared quota and one budget per tenant; `on_error` says what a
    /// limiter or the budget store does while Redis cannot be reached.
    /// (Concurrency limits stay per process.)
    #[cfg(feature = "redis")]
    pub fn shared_limits(
        mut self,
        redis: llm_tower_redis::Redis,
        on_error: llm_tower_redis::OnRedisError,
    ) -> Self {
        self.stores = Stores::Redis(redis, on_error);
        self
    }

    /// Gives the cache (if on) a second tier in `redis`, shared by every
    /// gateway on it: a miss in this process's memory asks Redis before the
    /// provider, and what one gateway stores the others answer from.
    /// Single flight stays per process (see `RedisCache`).
    #[cfg(feature = "redis")]
    pub fn shared_cache(mut self, redis: llm_tower_redis::Redis) -> Self {
        self.cache_l2 = Some(redis);
        self
    }

    /// Builds the stack. Every problem is reported, each naming where.
    ///
    /// # Errors
    ///
    /// [`StackErrors`], listing every problem (no provider, a route to an
    /// unknown provider, a model served twice in conflicting ways, ...).
    pub fn build(self) -> Result<Llm, StackErrors> {
        let client = self.client.unwrap_or_else(|| HttpClient::new(Default::default()));
        let mut builder = Failover::builder().health(self.health);
        let mut handles = Vec::new();
        let mut served: Vec<(String, Vec<Target>)> = Vec::new();
        // What each public name is priced as before the call (aliases, route targets).
        let mut price_as: HashMap<String, String> = HashMap::new();
        let mut providers_by_name: HashMap<Arc<str>, Provider> = HashMap::new();
        for p in self.providers {
            let name = p.provider.name_arc();
            for m in &p.models {
                let upstream = p.provider.upstream_model(m);
                if upstream != m {
                    price_as.entry(m.clone()).or_insert_with(|| upstream.to_owned());
                }
            }
            providers_by_name.insert(name.clone(), p.provider.clone());
            let http = LlmHttpService::with_client(p.provider.clone(), client.clone())
                .timeouts(p.timeouts)
                .max_response_bytes(p.max_response_bytes);
            let policy = match (p.retry.deadline, p.timeouts.headers) {
                (None, Some(headers)) => p.retry.deadline(headers),
                _ => p.retry,
            };
            let retry = RetryLayer::new(policy);
            let mut breaker = CircuitBreakerLayer::new(p.breaker);
            let key_fn = if p.breaker_per_model { KeyFn::model() } else { KeyFn::global() };
            if p.breaker_per_model {
                breaker = breaker.keyed(KeyFn::model());
            }
            let limiter = RateLimitLayer::with_store(p.limits, self.stores.make(&name));
            let h = ProviderHandles {
                name: name.clone(),
                retry: retry.clone(),
                breaker: breaker.handle(),
                limiter: limiter.clone(),
            };
            let stack = retry.layer(breaker.layer(limiter.layer(http)));
            let (open, busy) = (h.breaker.clone(), h.limiter.clone());
            builder = builder.backend(
                Backend::new(name.clone(), stack)
                    .weight(p.weight)
                    .available_when(move |r| open.is_available(key_fn.key(r).as_str()))
                    .wait_estimate(move |r| busy.wait_for(r)),
            );
            for m in p.models {
                match served.iter_mut().find(|(model, _)| *model == m) {
                    Some((_, targets)) => targets.push(Target::new(&*name)),
                    None => served.push((m, vec![Target::new(&*name)])),
                }
            }
            handles.push(h);
        }
        let explicit: Vec<String> = self.routes.iter().map(|(m, _)| m.clone()).collect();
        for (model, targets) in served {
            if !explicit.contains(&model) {
                builder = builder.route(model, Route::new(targets));
            }
        }
        for (model, route) in self.routes {
            if let Some(t) = route.targets.first() {
                let target = t.model.as_deref().unwrap_or(&model);
                let upstream =
                    providers_by_name.get(t.backend.as_str()).map_or(target, |p| p.upstream_model(target));
                if upstream != model {
                    price_as.insert(model.clone(), upstream.to_owned());
                }
            }
            builder = builder.route(model, route);
        }
        let failover = builder.build().map_err(StackErrors)?;
        let accounting = self.accounting.map(|mut cfg| {
            for (public, priced) in price_as {
                cfg.price_as.entry(public).or_insert(priced);
            }
            TokenAccountingLayer::with_store(cfg, self.stores.spend())
        });
        let cache = self.cache.map(CacheLayer::new);
        #[cfg(feature = "redis")]
        let cache = match (cache, self.cache_l2) {
            (Some(c), Some(r)) => Some(c.with_l2(r.cache())),
            (c, _) => c,
        };
        let tenant_overrides =
            self.tenants.as_ref().map(|t| t.overrides.iter().cloned().collect()).unwrap_or_default();
        let tenants = self.tenants.map(|t| t.layer_in(self.stores.make("tenants")));
        // Concrete types all the way down (each optional layer an `Either`),
        // boxed once here: one future box per request for the whole stack.
        let svc = tower::ServiceBuilder::new()
            .option_layer(self.count.map(TokenCountLayer::new))
            .option_layer(accounting.clone())
            .option_layer(cache.clone())
            .option_layer(tenants.clone())
            .service(failover.clone());
        Ok(Llm {
            service: BoxCloneSyncService::new(svc),
            failover,
            providers: handles,
            accounting,
            cache,
            tenants,
            tenant_overrides: std::sync::Arc::new(tenant_overrides),
            client,
        })
    }
}

/// A built [`LlmStack`]: the service, and handles to each part.
#[derive(Clone)]
pub struct Llm {
    service: LlmService,
    failover: Failover<ProviderStack>,
    providers: Vec<ProviderHandles>,
    accounting: Option<TokenAccountingLayer<SpendStore>>,
    cache: Option<CacheLayer>,
    tenants: Option<RateLimitLayer<LimitStore>>,
    /// The tenants' own limits as built (what a revoked grant returns to).
    pub(crate) tenant_overrides: std::sync::Arc<std::collections::HashMap<String, Limits>>,
    client: HttpClient,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm").field("models", &self.models()).finish()
    }
}

impl Llm {
    /// The whole stack as one service.
    pub fn service(&self) -> LlmService {
        self.service.clone()
    }

    /// A typed client over the stack.
    pub fn client(&self) -> crate::Client<LlmService> {
        crate::Client::new(self.service())
    }

    /// The failover (per backend stats).
    pub fn failover(&self) -> &Failover<ProviderStack> {
        &self.failover
    }

    /// Each provider's layers.
    pub fn providers(&self) -> &[ProviderHandles] {
        &self.providers
    }

    /// The accounting layer (ledger, budgets), if on.
    pub fn accounting(&self) -> Option<&TokenAccountingLayer<SpendStore>> {
        self.accounting.as_ref()
    }

    /// The cache (stats, invalidation), if on.
    pub fn cache(&self) -> Option<&CacheLayer> {
        self.cache.as_ref()
    }

    /// The tenant limiter (per tenant stats: `stats`, and `stats_for` a
    /// tenant with limits of its own), if on.
    pub fn tenant_limits(&self) -> Option<&RateLimitLayer<LimitStore>> {
        self.tenants.as_ref()
    }

    /// The shared connection pool.
    pub fn http_client(&self) -> &HttpClient {
        &self.client
    }

    /// The models served (logical routes included), sorted.
    pub fn models(&self) -> Vec<String> {
        self.failover.models()
    }
}
