//! [`AuthLayer`] and its service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, header};
use llm_tower_core::{BoxError, InvalidApiKey, ModelNotFound, RequestInfo};
use tower::Service;

use crate::future::ResponseFuture;
use crate::{Identity, Keys};

/// Authenticates every request by its virtual key. See the [crate docs](crate).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    keys: Keys,
}

impl AuthLayer {
    /// Requests need a key of `keys` (a registry shared with whatever adds
    /// and revokes keys: changes apply at the next request).
    pub fn new(keys: Keys) -> Self {
        AuthLayer { keys }
    }

    /// The registry.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, keys: self.keys.clone() }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    keys: Keys,
}

/// The key a request carries: `Authorization: Bearer <key>` (OpenAI SDKs),
/// else `x-api-key` (Anthropic SDKs) or `api-key` (Azure OpenAI SDKs).
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, key) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim()).filter(|k| !k.is_empty());
    }
    headers
        .get("x-api-key")
        .or_else(|| headers.get("api-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

fn refuse(reason: &'static str, err: BoxError) -> BoxError {
    tracing::debug!(reason, "request refused by authentication");
    metrics::counter!("llm_tower_auth_refused_total", "reason" => reason).increment(1);
    err
}

impl<S, B, R> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    B: 'static,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(key) = presented_key(req.headers()) else {
            return ResponseFuture::refused(refuse("missing", InvalidApiKey::Missing.into()));
        };
        let Some(id) = self.keys.authenticate(key) else {
            return ResponseFuture::refused(refuse("unknown", InvalidApiKey::Unknown.into()));
        };
        // The request's meaning (one shared parse): a body that is not an
        // LLM call has no model to check nor tenant to record, and the layers
        // that need them refuse it themselves.
        if RequestInfo::ensure_any(&mut req).is_some()
            && let Some(info) = req.extensions_mut().get_mut::<Arc<RequestInfo>>()
        {
            if !id.record().grant.allows(&info.model) {
                // The same 404 as a model nobody serves: a key does not learn
                // which models exist beyond its own.
                return ResponseFuture::refused(refuse("model", ModelNotFound::new(&*info.model).into()));
            }
            if info.tenant.as_deref() != Some(&**id.name()) {
                Arc::make_mut(info).tenant = Some(id.name().clone());
            }
        }
        req.extensions_mut().insert(id.clone());
        ResponseFuture::calling(self.inner.call(req), id)
    }
}

/// The identity of the request (or response) `ext` belongs to, when an
/// [`AuthLayer`] authenticated it.
pub fn identity(ext: &http::Extensions) -> Option<&Arc<Identity>> {
    ext.get::<Arc<Identity>>()
}
