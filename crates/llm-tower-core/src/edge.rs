//! [`LlmEdgeLayer`]: the outermost layer of a stack that serves clients.
//!
//! The LLM-aware layers take `Request<LlmBody>` (a replayable body, parsed
//! once) and fail with typed `BoxError`s. A server speaks other types: axum's
//! `Router::route_service` wants `Service<Request<axum::body::Body>, Error =
//! Infallible>`, hyper hands over `Request<Incoming>`. The edge is the bridge,
//! with no glue of the user's own:
//!
//! - it accepts any request body `B: http_body::Body`, reads it whole up to
//!   a limit (over it: 413 `PayloadTooLarge`; unreadable: 400) and hands the
//!   stack an `LlmBody`;
//! - it parses the request's meaning once ([`RequestInfo`], in the
//!   extensions for every layer below; a chat body the upstream would refuse
//!   is a 400 here, without a call);
//! - with [`deadline`](LlmEdgeLayer::deadline), it sets the request's
//!   [`Deadline`] (every layer below bounds its waits by it) and answers 504
//!   when it passes;
//! - it turns every error of the stack into an OpenAI-format JSON response
//!   with the right status and `retry-after` ([`crate::error_response`]), and
//!   an upstream's non-JSON error page (a load balancer's HTML) into one too;
//! - it guards event streams: one that breaks mid-way ends with an SSE
//!   `error` event.
//!
//! Its service never fails (`Error = Infallible`) and answers with an
//! [`LlmResponseBody`]. Each response carries the request's
//! `Arc<RequestInfo>` in its extensions (when it parsed), and one the edge
//! made from an error carries that error's text ([`EdgeError`]), for an access
//! log outside.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use http_body_util::{BodyExt, Full};
//! use llm_tower_core::edge::LlmEdgeLayer;
//! use llm_tower_core::{LlmBody, RequestInfo};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! // The stack below the edge: here, one that echoes the model it was asked for.
//! let stack = tower::service_fn(|req: http::Request<LlmBody>| async move {
//!     let model = RequestInfo::get(&req).expect("parsed by the edge").model.clone();
//!     Ok::<_, tower::BoxError>(http::Response::new(LlmBody::from(model.to_string())))
//! });
//! let svc = ServiceBuilder::new().layer(LlmEdgeLayer::new().max_body_bytes(1 << 20)).service(stack);
//!
//! // Any body type in: here `Full<Bytes>`, as a test client or hyper would send.
//! let req = http::Request::post("/v1/chat/completions")
//!     .body(Full::new(bytes::Bytes::from(r#"{"model":"gpt-4o-mini","messages":[]}"#)))
//!     .unwrap();
//! let res = svc.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "gpt-4o-mini");
//!
//! // Bad input is an OpenAI-format error, never a failed service.
//! let bad = http::Request::post("/v1/chat/completions").body(Full::new(bytes::Bytes::from("{not json"))).unwrap();
//! let res = svc.oneshot(bad).await.unwrap();
//! assert_eq!(res.status(), 400);
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Timeout as TimeoutFuture, timeout_at};
use tower::Service;
use tower::util::Oneshot;

use crate::usage::BodyKind;
use crate::{
    BoxError, Deadline, InvalidRequest, LlmBody, LlmResponseBody, PayloadTooLarge, RequestInfo, Timeout,
    TimeoutPhase, Upstream, error_response,
};

/// The request body limit of an [`LlmEdgeLayer`] by default (4 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

/// Largest non-JSON upstream error page read to build an OpenAI-format error.
const MAX_ERROR_PAGE: usize = 64 << 10;

/// The outermost layer of a stack that serves clients. See the
/// [module docs](self).
#[derive(Clone, Copy, Debug)]
pub struct LlmEdgeLayer {
    max_body_bytes: usize,
    deadline: Option<Duration>,
}

impl Default for LlmEdgeLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl LlmEdgeLayer {
    /// An edge with a [`DEFAULT_MAX_BODY_BYTES`] request limit and no deadline
    /// of its own.
    pub fn new() -> Self {
        LlmEdgeLayer { max_body_bytes: DEFAULT_MAX_BODY_BYTES, deadline: None }
    }

    /// The largest request body accepted (over it: 413).
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// The longest a request may take, from the moment its body has been
    /// read to its response head (all attempts and waits below included):
    /// set as the request's [`Deadline`], answered 504 when it passes.
    pub fn deadline(mut self, limit: Duration) -> Self {
        self.deadline = Some(limit);
        self
    }
}

impl<S> tower::Layer<S> for LlmEdgeLayer {
    type Service = LlmEdge<S>;

    fn layer(&self, inner: S) -> LlmEdge<S> {
        LlmEdge { inner, cfg: *self }
    }
}

/// The service of [`LlmEdgeLayer`].
#[derive(Clone, Debug)]
pub struct LlmEdge<S> {
    inner: S,
    cfg: LlmEdgeLayer,
}

impl<S, B, R> Service<Request<B>> for LlmEdge<S>
where
    S: Service<Request<LlmBody>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<LlmResponseBody>;
    type Error = Infallible;
    type Future = EdgeFuture<S, B>;

    /// Always ready: the inner service's readiness is awaited in the call,
    /// once the body is read, and its error answered like any other.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let svc = self.inner.clone();
        EdgeFuture {
            info: None,
            state: State::Reading {
                collect: Limited::new(body, self.cfg.max_body_bytes).collect(),
                parts: Some(parts),
                svc: Some(svc),
                cfg: self.cfg,
            },
        }
    }
}

pin_project! {
    /// Response future of [`LlmEdge`].
    pub struct EdgeFuture<S, B>
    where
        S: Service<Request<LlmBody>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, B>,
        info: Option<Arc<RequestInfo>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<LlmBody>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        Reading {
            #[pin]
            collect: Collect<Limited<B>>,
            parts: Option<http::request::Parts>,
            svc: Option<S>,
            cfg: LlmEdgeLayer,
        },
        Calling { #[pin] call: Oneshot<S, Request<LlmBody>> },
        Bounded { #[pin] call: TimeoutFuture<Oneshot<S, Request<LlmBody>>>, limit: Duration },
        ErrorPage {
            #[pin]
            collect: Collect<Limited<LlmResponseBody>>,
            parts: Option<http::response::Parts>,
        },
        Done,
    }
}

fn answer(err: &(dyn std::error::Error + 'static)) -> Response<LlmResponseBody> {
    error_response(err).map(|b| LlmResponseBody::full(b.into_bytes()))
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"))
}

impl<S, B, R> Future for EdgeFuture<S, B>
where
    S: Service<Request<LlmBody>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<LlmResponseBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let outcome = match self.as_mut().project().state.project() {
                StateProj::Reading { collect, parts, svc, cfg } => {
                    let bytes = match ready!(collect.poll(cx)) {
                        Ok(c) => c.to_bytes(),
                        Err(e) => {
                            let err: BoxError = if e.downcast_ref::<LengthLimitError>().is_some() {
                                Box::new(PayloadTooLarge { limit: cfg.max_body_bytes })
                            } else {
                                Box::new(InvalidRequest::new("could not read the request body"))
                            };
                            let text = Arc::from(err.to_string());
                            return Poll::Ready(Ok(self.finish(answer(&*err), Some(text))));
                        }
                    };
                    let parts = parts.take().expect("polled after completion");
                    let svc = svc.take().expect("polled after completion");
                    let cfg = *cfg;
                    let mut req = Request::from_parts(parts, LlmBody::from(bytes));
                    let info = match RequestInfo::get(&req) {
                        Some(info) => info.clone(),
                        None => match RequestInfo::parse_into(&mut req) {
                            Ok(info) => info,
                            Err(e) => {
                                let text = Arc::from(e.to_string());
                                return Poll::Ready(Ok(self.finish(answer(&e), Some(text))));
                            }
                        },
                    };
                    *self.as_mut().project().info = Some(info);
                    let next = match cfg.deadline {
                        None => State::Calling { call: Oneshot::new(svc, req) },
                        Some(limit) => {
                            // Every layer below bounds its waits by the same instant.
                            let at = Deadline::tighten(&mut req, Instant::now() + limit);
                            State::Bounded { call: timeout_at(at, Oneshot::new(svc, req)), limit }
                        }
                    };
                    self.as_mut().project().state.set(next);
                    continue;
                }
                StateProj::Calling { call } => ready!(call.poll(cx)).map_err(Into::into),
                StateProj::Bounded { call, limit } => match ready!(call.poll(cx)) {
                    Ok(r) => r.map_err(Into::into),
                    Err(_) => Err(Timeout { phase: TimeoutPhase::Total, after: *limit }.into()),
                },
                StateProj::ErrorPage { collect, parts } => {
                    let text = ready!(collect.poll(cx)).map(|c| c.to_bytes()).unwrap_or_default();
                    let parts = parts.take().expect("polled after completion");
                    let hint = crate::hint::retry_hint(&parts.headers, SystemTime::now()).map(|h| h.after);
                    let mut out = answer(&Upstream::from_body(parts.status, hint, &text));
                    for (k, v) in parts.headers.iter() {
                        if k.as_str().starts_with("x-ratelimit-") || k == "x-request-id" {
                            out.headers_mut().insert(k.clone(), v.clone());
                        }
                    }
                    return Poll::Ready(Ok(self.finish(out, None)));
                }
                StateProj::Done => panic!("EdgeFuture polled after completion"),
            };
            let res = match outcome {
                Ok(res) => res.map(LlmResponseBody::new),
                Err(e) => {
                    let text = Arc::from(e.to_string());
                    return Poll::Ready(Ok(self.finish(answer(&*e), Some(text))));
                }
            };
            let kind = BodyKind::from_headers(res.headers());
            if !res.status().is_success() && kind != BodyKind::Sse && !is_json(res.headers()) {
                // A load balancer's HTML or plain-text error page: read its
                // start and answer an OpenAI-format error instead.
                let (parts, body) = res.into_parts();
                let collect = Limited::new(body, MAX_ERROR_PAGE).collect();
                self.as_mut().project().state.set(State::ErrorPage { collect, parts: Some(parts) });
                continue;
            }
            let mut res = res;
            if kind == BodyKind::Sse {
                res.body_mut().guard_sse();
            }
            return Poll::Ready(Ok(self.finish(res, None)));
        }
    }
}

impl<S, B> EdgeFuture<S, B>
where
    S: Service<Request<LlmBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    /// Ends the future with `res`, which carries the request's meaning and,
    /// when it was made from an error, that error's text.
    fn finish(
        mut self: Pin<&mut Self>,
        mut res: Response<LlmResponseBody>,
        error: Option<Arc<str>>,
    ) -> Response<LlmResponseBody> {
        let mut this = self.as_mut().project();
        this.state.set(State::Done);
        if let Some(info) = this.info.take() {
            res.extensions_mut().insert(info);
        }
        if let Some(text) = error {
            res.extensions_mut().insert(EdgeError(text));
        }
        res
    }
}

/// On a response the edge made from an error of the stack: that error's
/// text, for an access log (the body holds the OpenAI-format error).
#[derive(Clone, Debug)]
pub struct EdgeError(pub Arc<str>);
