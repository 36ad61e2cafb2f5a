//! [`TokenAccountingLayer`]: budgets before the call, usage and cost after it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use llm_tower_core::response::{BodyEnd, BodyObserver, LlmResponseBody};
use llm_tower_core::usage::BodyKind;
use llm_tower_core::{Api, BoxError, Key, LlmBody, RequestInfo, ServedBy, ServedModel, Usage};
use pin_project_lite::pin_project;

use crate::budget::{Budget, BudgetStore, MemoryBudgets, Reservation};
use crate::ledger::Ledger;
use crate::meters::UsageMeters;
use crate::{ModelInfo, Prices, count_body, counter_for};

/// What the accounting layer does.
///
/// ```
/// use llm_tower_tokens::{AccountingConfig, Budget, Period};
/// let cfg = AccountingConfig {
///     default_budget: Some(Budget { limit_micros: 20_000_000, period: Period::Day }),
///     ..Default::default()
/// };
/// assert!(cfg.inject_stream_usage);
/// ```
#[derive(Clone, Debug)]
pub struct AccountingConfig {
    /// Price overrides by exact model name (else the built-in table).
    pub prices: HashMap<String, Prices>,
    /// Public names priced as another model before the call (an alias, or a
    /// route's first target): `fast` -> `gpt-4o-mini`. After the call, the
    /// answer is priced at the model that served it (core's `ServedModel`,
    /// set by the HTTP service) whenever its price is known. `LlmStack` fills
    /// this from its providers' aliases and routes.
    pub price_as: HashMap<String, String>,
    /// Output tokens assumed for a request without `max_tokens`. Default 256.
    pub default_output_tokens: u32,
    /// Ask streams for usage (`stream_options.include_usage`) when the caller
    /// did not, and remove that extra chunk from what the caller receives.
    /// Default on.
    pub inject_stream_usage: bool,
    /// Every tenant's budget, when set.
    pub default_budget: Option<Budget>,
    /// Budgets of named tenants, replacing the default.
    pub budgets: HashMap<String, Budget>,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self {
            prices: HashMap::new(),
            price_as: HashMap::new(),
            default_output_tokens: 256,
            inject_stream_usage: true,
            default_budget: None,
            budgets: HashMap::new(),
        }
    }
}

struct Shared<St> {
    cfg: AccountingConfig,
    ledger: Ledger,
    budgets: St,
    /// Tenants' own budgets (`cfg.budgets`, then [`TokenAccountingLayer::set_budget`]).
    own: std::sync::RwLock<HashMap<String, Budget>>,
    /// The token and cost counters, per model and provider.
    meters: UsageMeters,
    /// The provider label of a call that named none (`-`).
    no_provider: Arc<str>,
}

impl<St> Shared<St> {
    fn budget_for(&self, tenant: &str) -> Option<Budget> {
        let own = self.own.read().unwrap_or_else(|e| e.into_inner());
        own.get(tenant).or(self.cfg.default_budget.as_ref()).copied()
    }
}

impl AccountingConfig {
    /// The known prices of `model`: an override, else the built-in table's
    /// entry (`None` for a model neither knows).
    ///
    /// ```
    /// let cfg = llm_tower_tokens::AccountingConfig::default();
    /// assert!(cfg.known_prices("gpt-4o-mini").is_some());
    /// assert!(cfg.known_prices("fast").is_none());
    /// ```
    pub fn known_prices(&self, model: &str) -> Option<Prices> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        let info = ModelInfo::lookup(model);
        (!info.prefix.is_empty()).then_some(info.prices)
    }

    /// The prices a request for the public name `model` is estimated at.
    fn request_prices(&self, model: &str) -> Prices {
        self.known_prices(model)
            .or_else(|| self.price_as.get(model).and_then(|m| self.known_prices(m)))
            .unwrap_or_default()
    }
}

/// Token accounting: before a call, reserves its estimated cost against the
/// tenant's budget (refusing with `BudgetExceeded` when it does not fit);
/// after it, reads the real usage from the JSON body or the SSE stream as it
/// passes, prices it, records it in a [`Ledger`] per tenant and model, and
/// settles the budget with the real cost. A failed call (an error, or a
/// non-2xx answer) costs nothing; a call whose caller left after it was sent
/// and before its answer is charged its estimate (the provider may bill it);
/// a stream dropped mid-way is charged its usage so far, or its estimate.
/// The answer is priced at the model that served it (an alias or a route
/// target's model; see [`AccountingConfig::price_as`]). All token and cost
/// arithmetic is `u64`/`u128`, saturating; costs round up to the micro-dollar.
///
/// Settling happens when the response body ends (read to its end, failed, or
/// dropped), not at the response head.
///
/// A streamed chat request without `stream_options.include_usage` is sent
/// with it, and the extra usage chunk is removed from the caller's stream, so
/// streams never escape accounting. A provider that reports no usage at all
/// is charged what this layer counts: the request's input tokens and the
/// generated text (message content, text deltas, tool-call arguments) with
/// the model's counter (exact for OpenAI models, the heuristic otherwise).
///
/// An answer from a response cache below (core's `ServedBy::cache()`) is
/// recorded with its usage at cost 0, under provider `cache`. The model's
/// [`Prices`] are put in the request's extensions for the layers below.
///
/// The tenant is `RequestInfo::tenant` (`-` when none). Counters go to the
/// `metrics` facade: `llm_tower_tokens_total{model, provider, kind=input|output}`
/// and `llm_tower_cost_microusd_total{model, provider}` (the model as the
/// request names it: put a model check in front, as the gateway does, so
/// clients cannot make up labels).
///
/// ```
/// use llm_tower_tokens::{AccountingConfig, TokenAccountingLayer};
/// let accounting = TokenAccountingLayer::new(AccountingConfig::default());
/// let stack = tower::ServiceBuilder::new().layer(accounting.clone());
/// # let _ = stack;
/// assert!(accounting.ledger().entries().is_empty());
/// ```
///
/// # Reads and writes
///
/// - Reads the request's `Arc<RequestInfo>` (parsing it once when no layer
///   above did) and its tenant; refuses with core's `BudgetExceeded` (an
///   error: 429 `insufficient_quota`) before the call.
/// - Writes the model's `Prices` into the request's extensions (for a cache
///   below) and, for a stream whose client did not ask for usage, injects
///   `stream_options.include_usage` into the body and strips the usage-only
///   chunk from what the caller reads.
/// - Reads core's `ServedBy` (a cache hit costs 0) and `ServedModel` (the
///   price of the model that answered) from the response.
/// - Settles when the response body ends (an `LlmResponseBody` observer):
///   the reported usage, or the counted input and generated text when none
///   was reported; a caller that leaves before the head is charged the
///   estimate. Observers outside it see the usage it recorded.
pub struct TokenAccountingLayer<St = MemoryBudgets> {
    shared: Arc<Shared<St>>,
}

impl<St> Clone for TokenAccountingLayer<St> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<St> std::fmt::Debug for TokenAccountingLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAccountingLayer").field("config", &self.shared.cfg).finish()
    }
}

impl TokenAccountingLayer<MemoryBudgets> {
    /// Accounting with budgets kept in memory.
    pub fn new(cfg: AccountingConfig) -> Self {
        Self::with_store(cfg, MemoryBudgets::default())
    }
}

impl<St: BudgetStore> TokenAccountingLayer<St> {
    /// Accounting with budgets kept in `store`.
    pub fn with_store(cfg: AccountingConfig, store: St) -> Self {
        let own = cfg.budgets.clone().into();
        let shared = Shared {
            cfg,
            ledger: Ledger::default(),
            budgets: store,
            own,
            meters: UsageMeters::default(),
            no_provider: Arc::from("-"),
        };
        Self { shared: Arc::new(shared) }
    }

    /// The budget `tenant` is held to: its own, else the default.
    pub fn budget_for(&self, tenant: &str) -> Option<Budget> {
        self.shared.budget_for(tenant)
    }

    /// Gives `tenant` a budget of its own from now on (`None`: back to its
    /// budget in the config this layer was made with, else the default), as
    /// a virtual key is created or changed at run time. What it
    /// spent in its current period stays spent. Every clone of the layer sees
    /// the change at the next request.
    ///
    /// ```
    /// use llm_tower_tokens::{AccountingConfig, Budget, Period, TokenAccountingLayer};
    /// let layer = TokenAccountingLayer::new(AccountingConfig::default());
    /// assert_eq!(layer.budget_for("acme"), None);
    /// let b = Budget { limit_micros: 5_000_000, period: Period::Day };
    /// layer.set_budget("acme", Some(b));
    /// assert_eq!(layer.budget_for("acme"), Some(b));
    /// ```
    pub fn set_budget(&self, tenant: &str, budget: Option<Budget>) {
        let mut own = self.shared.own.write().unwrap_or_else(|e| e.into_inner());
        match budget.or_else(|| self.shared.cfg.budgets.get(tenant).copied()) {
            Some(b) => own.insert(tenant.to_owned(), b),
            None => own.remove(tenant),
        };
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.shared.ledger
    }

    /// The budget store.
    pub fn budgets(&self) -> &St {
        &self.shared.budgets
    }
}

impl<S, St> tower::Layer<S> for TokenAccountingLayer<St> {
    type Service = TokenAccounting<S, St>;

    fn layer(&self, inner: S) -> TokenAccounting<S, St> {
        TokenAccounting { inner, shared: self.shared.clone() }
    }
}

/// The service of [`TokenAccountingLayer`].
pub struct TokenAccounting<S, St = MemoryBudgets> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S: Clone, St> Clone for TokenAccounting<S, St> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), shared: self.shared.clone() }
    }
}

/// The cost bookkeeping of one call, settled exactly once.
struct Settle<St: BudgetStore> {
    shared: Arc<Shared<St>>,
    tenant: Key,
    model: Arc<str>,
    prices: Prices,
    budget: Option<Budget>,
    estimate: u64,
    /// What the budget store reserved (with a budget, once reserved).
    reservation: Reservation,
    /// Input tokens counted here (used when the provider reports no usage).
    input: u64,
    /// Output tokens the estimate assumed (`max_tokens` x `n`).
    est_output: u64,
    /// Who answered (core's `ServedBy`), once known.
    provider: Option<Arc<str>>,
    /// Answered by a response cache: the usage is recorded, at no cost.
    free: bool,
    done: bool,
}

impl<St: BudgetStore> Settle<St> {
    /// Records the call's usage: the reported one, or when the provider
    /// reported none, the counted input and the counted generated `text`.
    /// Returns what was recorded.
    fn finish(&mut self, reported: Option<Usage>, text: &str) -> Option<Usage> {
        if self.done {
            return None;
        }
        self.done = true;
        let (usage, source) = match reported {
            Some(u) => (u, "reported"),
            None => {
                let output = u64::from(counter_for(&self.model).count_text(text));
                (Usage { input: self.input, output, ..Default::default() }, "counted")
            }
        };
        let cost = if self.free { 0 } else { self.prices.cost_micros(&usage) };
        if let Some(b) = &self.budget {
            self.shared.budgets.settle(&self.tenant, b, self.reservation, cost);
        }
        let provider = self.provider.as_ref().unwrap_or(&self.shared.no_provider);
        self.shared.ledger.record(self.tenant.as_str(), &self.model, provider, &usage, cost);
        self.shared.meters.record(&self.model, provider, &usage, cost);
        // Debug: the gateway's access line already carries usage (one info line per request).
        tracing::debug!(
            gen_ai.request.model = &*self.model,
            gen_ai.usage.input_tokens = usage.input,
            gen_ai.usage.output_tokens = usage.output,
            cost_micros = cost,
            tenant = self.tenant.as_str(),
            usage_source = source,
            "usage recorded"
        );
        Some(usage)
    }

    /// The call failed before any answer: it costs nothing.
    fn release(&mut self) {
        if !self.done {
            self.done = true;
            if let Some(b) = &self.budget {
                self.shared.budgets.settle(&self.tenant, b, self.reservation, 0);
            }
        }
    }

    /// The request was sent and its caller left before the answer: the
    /// provider may well bill it, so it is charged its estimate (the counted
    /// input and `max_tokens` x `n` of output) rather than nothing.
    fn charge_estimate(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let usage = Usage { input: self.input, output: self.est_output, ..Default::default() };
        if let Some(b) = &self.budget {
            self.shared.budgets.settle(&self.tenant, b, self.reservation, self.estimate);
        }
        let provider = self.provider.as_deref().unwrap_or("-");
        self.shared.ledger.record(self.tenant.as_str(), &self.model, provider, &usage, self.estimate);
        tracing::debug!(
            gen_ai.request.model = &*self.model,
            cost_micros = self.estimate,
            tenant = self.tenant.as_str(),
            "caller left before the answer: charged the estimate"
        );
    }
}

impl<St: BudgetStore> Drop for Settle<St> {
    fn drop(&mut self) {
        // The call was made and nothing settled it: the caller went away.
        self.charge_estimate();
    }
}

impl<S, R, St> tower::Service<Request<LlmBody>> for TokenAccounting<S, St>
where
    S: tower::Service<Request<LlmBody>, Response = Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    St: BudgetStore,
{
    type Response = Response<LlmResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, St>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<LlmBody>) -> Self::Future {
        let info = match RequestInfo::ensure(&mut req) {
            Ok(i) => i,
            Err(e) => return ResponseFuture::failed(e.into()),
        };
        let cfg = &self.shared.cfg;
        let prices = cfg.request_prices(&info.model);
        let input = info.estimated_input_tokens.unwrap_or_else(|| count_body(&info, req.body()));
        // u32 x u32 always fits in u64.
        let output =
            u64::from(info.max_tokens.unwrap_or(cfg.default_output_tokens)) * u64::from(info.n.max(1));
        let estimate = prices.cost_micros(&Usage { input: u64::from(input), output, ..Default::default() });
        // For the layers below (a response cache reports the cost it saved).
        req.extensions_mut().insert(prices);
        let tenant = info.tenant.clone().map_or(Key::from_static("-"), Key::from);
        let budget = self.shared.budget_for(tenant.as_str());
        let strip =
            cfg.inject_stream_usage && info.api == Api::ChatCompletions && info.stream && !info.include_usage;
        if strip {
            // A byte splice, like the model rewrite: no JSON tree.
            if let Some(b) = llm_tower_core::info::with_include_usage(req.body().as_bytes()) {
                *req.body_mut() = LlmBody::from(b);
            }
        }
        // `done` until the reservation is made: dropping it before then settles nothing.
        let mut settle = Settle {
            shared: self.shared.clone(),
            tenant,
            model: info.model.clone(),
            prices,
            budget,
            estimate,
            reservation: Reservation::local(0),
            input: u64::from(input),
            est_output: output,
            provider: None,
            free: false,
            done: true,
        };
        let Some(b) = budget else {
            settle.done = false;
            return ResponseFuture::calling(self.inner.call(req), settle, strip);
        };
        let mut reserve = self.shared.budgets.reserve(&settle.tenant, &b, estimate);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut reserve).poll(&mut cx) {
            Poll::Ready(Ok(r)) => {
                settle.reservation = r;
                settle.done = false;
                ResponseFuture::calling(self.inner.call(req), settle, strip)
            }
            Poll::Ready(Err(e)) => ResponseFuture::failed(e),
            Poll::Pending => {
                // A shared store answers after a round trip: the call waits
                // for it, made by the service that was polled ready.
                let ready = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, ready);
                let call: CallLater<S::Future> = Box::new(move || inner.call(req));
                ResponseFuture {
                    state: State::Reserving { reserve, call: Some(call), settle: Some(settle), strip },
                }
            }
        }
    }
}

/// The call a reservation that is not decided at once waits to make.
type CallLater<F> = Box<dyn FnOnce() -> F + Send>;

pin_project! {
    /// Response future of [`TokenAccounting`].
    pub struct ResponseFuture<F, St: BudgetStore> {
        #[pin]
        state: State<F, St>,
    }
}

pin_project! {
    #[project = Proj]
    enum State<F, St: BudgetStore> {
        Reserving { reserve: St::Reserve, call: Option<CallLater<F>>, settle: Option<Settle<St>>, strip: bool },
        Calling { #[pin] fut: F, settle: Option<Settle<St>>, strip: bool },
        Failed { err: Option<BoxError> },
    }
}

impl<F, St: BudgetStore> ResponseFuture<F, St> {
    fn failed(err: BoxError) -> Self {
        Self { state: State::Failed { err: Some(err) } }
    }

    fn calling(fut: F, settle: Settle<St>, strip: bool) -> Self {
        Self { state: State::Calling { fut, settle: Some(settle), strip } }
    }
}

impl<F, R, E, St> Future for ResponseFuture<F, St>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    St: BudgetStore,
{
    type Output = Result<Response<LlmResponseBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                Proj::Failed { err } => {
                    return Poll::Ready(Err(err.take().unwrap_or_else(|| "polled after completion".into())));
                }
                Proj::Reserving { reserve, call, settle, strip } => {
                    let reserved = ready!(Pin::new(reserve).poll(cx));
                    let (mut settle, strip) = (settle.take().expect("polled after completion"), *strip);
                    let call = call.take().expect("polled after completion");
                    let next = match reserved {
                        Ok(r) => {
                            settle.reservation = r;
                            settle.done = false;
                            ResponseFuture::calling(call(), settle, strip)
                        }
                        Err(e) => ResponseFuture::failed(e),
                    };
                    self.set(next);
                }
                Proj::Calling { fut, settle, strip } => {
                    let out = ready!(fut.poll(cx));
                    let mut settle = settle.take().expect("polled after completion");
                    return Poll::Ready(match out {
                        Err(e) => {
                            settle.release();
                            Err(e.into())
                        }
                        Ok(res) => Ok(answered(res, settle, *strip)),
                    });
                }
            }
        }
    }
}

/// The answer as the caller gets it, its cost settled as its body ends.
fn answered<R, St>(res: Response<R>, mut settle: Settle<St>, strip: bool) -> Response<LlmResponseBody>
where
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    St: BudgetStore,
{
    if !res.status().is_success() {
        // Providers do not bill failed calls.
        settle.release();
    }
    if let Some(by) = res.extensions().get::<ServedBy>() {
        settle.provider = Some(by.0.clone());
        settle.free = by.is_cache();
    }
    // Priced at the model that served it, when its price is known.
    if let Some(p) = ServedModel::of(&res).and_then(|m| settle.shared.cfg.known_prices(m)) {
        settle.prices = p;
    }
    let kind = BodyKind::from_headers(res.headers());
    let strip = strip && kind == BodyKind::Sse;
    let mut res = res.map(LlmResponseBody::new);
    if strip {
        res.body_mut().strip_usage_only_events();
    }
    // A failure was released above: nothing to charge.
    if res.status().is_success() {
        res.body_mut().observe(Charge { settle, kind });
    }
    res
}

/// Observes the answer's body and settles its cost when it ends, with the
/// usage the body reported, or, when it reported none, the counted input
/// and the generated text counted so far. A body dropped before its end (the
/// caller went away) is charged the same way: the provider bills the
/// generation either way. Observers told after it (the gateway's access
/// log) see the usage it recorded.
struct Charge<St: BudgetStore> {
    settle: Settle<St>,
    kind: BodyKind,
}

impl<St: BudgetStore> BodyObserver for Charge<St> {
    fn wants_usage(&self) -> Option<BodyKind> {
        Some(self.kind)
    }

    fn wants_text(&self) -> bool {
        true
    }

    fn on_end(mut self: Box<Self>, end: &mut BodyEnd) {
        let reported = end.report.as_ref().and_then(|r| r.usage);
        if let Some(u) = self.settle.finish(reported, &end.text)
            && let Some(r) = end.report.as_mut()
        {
            r.usage = Some(u);
        }
    }
}
