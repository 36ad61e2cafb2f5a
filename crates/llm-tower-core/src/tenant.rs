//! [`TenantLayer`]: who a request spends as, set once for every layer below.
//!
//! The tenant is [`RequestInfo::tenant`]. Everything keyed per tenant reads it
//! from there: `KeyFn::tenant()` (limiter, breaker and cache keys), the
//! accounting layer's budgets and ledger, the cache's scope. The layer takes
//! it from a header, or from a function of the request (an extension an
//! authentication layer above put there, a path segment, a client
//! certificate's name), parses the request's meaning if no layer above did
//! (one shared parse), and writes the tenant into it.
//!
//! A header is whatever the client writes: use it only behind something that
//! authenticates the client, or where any tenant may speak for any other.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use llm_tower_core::tenant::TenantLayer;
//! use llm_tower_core::{LlmBody, RequestInfo};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let stack = ServiceBuilder::new()
//!     .layer(TenantLayer::header(http::HeaderName::from_static("x-tenant")))
//!     .service_fn(|req: http::Request<LlmBody>| async move {
//!         let tenant = RequestInfo::get(&req).and_then(|i| i.tenant.clone());
//!         Ok::<_, tower::BoxError>(http::Response::new(tenant.map_or("-".into(), |t| t.to_string())))
//!     });
//! let req = http::Request::post("/v1/chat/completions")
//!     .header("x-tenant", "acme")
//!     .body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[]}"#))
//!     .unwrap();
//! assert_eq!(stack.oneshot(req).await.unwrap().into_body(), "acme");
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Request};
use tower::Service;

use crate::RequestInfo;
use crate::key::RequestView;

type TenantFn = Arc<dyn Fn(&RequestView<'_>) -> Option<Arc<str>> + Send + Sync>;

/// Sets each request's tenant. See the [module docs](self).
#[derive(Clone)]
pub struct TenantLayer {
    of: TenantFn,
}

impl std::fmt::Debug for TenantLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantLayer")
    }
}

impl TenantLayer {
    /// The tenant is the value of header `name` (absent or not text: none).
    pub fn header(name: HeaderName) -> Self {
        Self::from_fn(move |r| r.headers.get(&name).and_then(|v| v.to_str().ok()).map(Arc::from))
    }

    /// The tenant is what `f` says (`None`: the request has none).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use llm_tower_core::tenant::TenantLayer;
    /// // An identity an authentication layer above stored in the extensions.
    /// #[derive(Clone)]
    /// struct Identity(Arc<str>);
    /// let layer = TenantLayer::from_fn(|r| r.extensions.get::<Identity>().map(|i| i.0.clone()));
    /// # let _ = layer;
    /// ```
    pub fn from_fn(f: impl Fn(&RequestView<'_>) -> Option<Arc<str>> + Send + Sync + 'static) -> Self {
        TenantLayer { of: Arc::new(f) }
    }
}

impl<S> tower::Layer<S> for TenantLayer {
    type Service = Tenant<S>;

    fn layer(&self, inner: S) -> Tenant<S> {
        Tenant { inner, of: self.of.clone() }
    }
}

/// The service of [`TenantLayer`].
#[derive(Clone)]
pub struct Tenant<S> {
    inner: S,
    of: TenantFn,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Tenant<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant").field("inner", &self.inner).finish()
    }
}

impl<S, B> Service<Request<B>> for Tenant<S>
where
    S: Service<Request<B>>,
    B: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let tenant = (self.of)(&RequestView::of(&req));
        // A body that is not an `LlmBody` (or does not parse) has no meaning
        // to record a tenant in: the layers that need one refuse it themselves.
        if RequestInfo::ensure_any(&mut req).is_some()
            && let Some(info) = req.extensions_mut().get_mut::<Arc<RequestInfo>>()
            && info.tenant != tenant
        {
            Arc::make_mut(info).tenant = tenant;
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::LlmBody;

    fn echo_tenant()
    -> impl Service<Request<LlmBody>, Response = Option<Arc<str>>, Error = tower::BoxError> + Clone {
        tower::service_fn(|req: Request<LlmBody>| async move {
            Ok::<_, tower::BoxError>(RequestInfo::get(&req).and_then(|i| i.tenant.clone()))
        })
    }

    fn chat() -> http::request::Builder {
        http::Request::post("/v1/chat/completions")
    }

    const BODY: &str = r#"{"model":"m","messages":[]}"#;

    #[tokio::test]
    async fn the_tenant_replaces_one_a_layer_above_wrote_and_parses_once() {
        let svc = TenantLayer::header(HeaderName::from_static("x-tenant")).layer(echo_tenant());
        let mut req = chat().header("x-tenant", "acme").body(LlmBody::from(BODY)).unwrap();
        let mut info = RequestInfo::ensure(&mut req).unwrap().as_ref().clone();
        info.tenant = Some("someone-else".into());
        req.extensions_mut().insert(Arc::new(info));
        assert_eq!(svc.clone().oneshot(req).await.unwrap().as_deref(), Some("acme"));
        // No header: no tenant.
        let req = chat().body(LlmBody::from(BODY)).unwrap();
        assert_eq!(svc.oneshot(req).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_function_reads_an_extension() {
        #[derive(Clone)]
        struct Identity(&'static str);
        let layer = TenantLayer::from_fn(|r| r.extensions.get::<Identity>().map(|i| Arc::from(i.0)));
        let mut req = chat().body(LlmBody::from(BODY)).unwrap();
        req.extensions_mut().insert(Identity("team-a"));
        assert_eq!(layer.layer(echo_tenant()).oneshot(req).await.unwrap().as_deref(), Some("team-a"));
    }
}
