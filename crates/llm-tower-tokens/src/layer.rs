//! [`TokenCountLayer`]: fills the request's token estimate and checks the context window.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use llm_tower_core::chat::EmbeddingsRequest;
use llm_tower_core::{Api, BoxError, InvalidRequest, LlmBody, RequestInfo};
use pin_project_lite::pin_project;
use serde_json::Value;

use crate::{Heuristic, ModelInfo, Tiktoken, TokenCounter};

/// What to do when a request cannot fit its model's context window.
///
/// ```
/// assert_eq!(llm_tower_tokens::Preflight::default(), llm_tower_tokens::Preflight::Enforce);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preflight {
    /// Answer 400 `context_length_exceeded` without calling upstream.
    #[default]
    Enforce,
    /// Log a warning and send it anyway.
    WarnOnly,
    /// Do not check.
    Off,
}

/// Counts each request's input tokens once, stores the count in its
/// [`RequestInfo`] (`estimated_input_tokens`, which limiters and budgets
/// read), and checks input + requested output against the model's context
/// window before anything is sent.
///
/// Chat requests are counted with OpenAI's framing, exactly for OpenAI
/// models and with the calibrated [`Heuristic`] for others; embeddings count
/// their inputs; other APIs (Responses, Anthropic Messages) are estimated from
/// the body's text. The window check applies to models in the built-in table
/// only (an unknown model's window is not guessed).
///
/// ```
/// use llm_tower_tokens::{Preflight, TokenCountLayer};
/// let stack = tower::ServiceBuilder::new().layer(TokenCountLayer::new(Preflight::Enforce));
/// # let _ = stack;
/// ```
///
/// # Reads and writes
///
/// Reads and writes the request's `Arc<RequestInfo>` (its
/// `estimated_input_tokens`); refuses with core's `InvalidRequest`
/// (`context_length_exceeded`, 400) under `Preflight::Enforce`. Responses
/// pass through untouched.
#[derive(Clone, Copy, Debug)]
pub struct TokenCountLayer {
    preflight: Preflight,
}

impl TokenCountLayer {
    /// A layer with the given pre-flight policy.
    pub fn new(preflight: Preflight) -> Self {
        Self { preflight }
    }
}

impl<S> tower::Layer<S> for TokenCountLayer {
    type Service = TokenCount<S>;

    fn layer(&self, inner: S) -> TokenCount<S> {
        TokenCount { inner, preflight: self.preflight }
    }
}

/// The service of [`TokenCountLayer`].
#[derive(Clone, Debug)]
pub struct TokenCount<S> {
    inner: S,
    preflight: Preflight,
}

/// Counts the input tokens of a request body for `info`'s API and model.
///
/// ```
/// use llm_tower_core::{Api, RequestInfo};
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there"}]}"#;
/// let info = RequestInfo::parse(Api::ChatCompletions, body).unwrap();
/// assert_eq!(llm_tower_tokens::count_input(&info, body), 3 + 1 + 2 + 3);
/// ```
pub fn count_input(info: &RequestInfo, body: &[u8]) -> u32 {
    count(info, body, None)
}

/// [`count_input`] of an [`LlmBody`]: when the request's parse kept where
/// its messages lie ([`LlmBody::chat_parts`]: the edge's parse, or
/// [`RequestInfo::ensure`]'s), a chat request is counted from them, with no
/// second parse of its body; the count is the same.
///
/// ```
/// use llm_tower_core::{LlmBody, RequestInfo};
/// let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there"}]}"#;
/// let mut req = http::Request::post("/v1/chat/completions").body(LlmBody::from(body)).unwrap();
/// let info = RequestInfo::ensure(&mut req).unwrap();
/// assert!(req.body().chat_parts().is_some());
/// assert_eq!(llm_tower_tokens::count_body(&info, req.body()), llm_tower_tokens::count_input(&info, body.as_bytes()));
/// ```
pub fn count_body(info: &RequestInfo, body: &LlmBody) -> u32 {
    count(info, body.as_bytes(), body.chat_parts())
}

fn count(info: &RequestInfo, body: &[u8], parts: Option<llm_tower_core::ChatParts<'_>>) -> u32 {
    // The model's counter on the stack (`counter_for` boxes it).
    let (exact, estimate);
    let counter: &dyn TokenCounter = match Tiktoken::new(ModelInfo::lookup(&info.model).family) {
        Some(t) => {
            exact = t;
            &exact
        }
        None => {
            estimate = Heuristic::default();
            &estimate
        }
    };
    match info.api {
        // The parts the request's parse kept, else one borrowed pass over
        // the body (no owned request, no JSON tree).
        Api::ChatCompletions => match parts {
            Some(parts) => Some(crate::view::count_chat_parts(counter, parts)),
            None => crate::view::count_chat_body(counter, body),
        }
        .unwrap_or_else(|| Heuristic::default().count_text(&String::from_utf8_lossy(body))),
        Api::Embeddings => match serde_json::from_slice::<EmbeddingsRequest>(body) {
            Ok(req) => req
                .inputs()
                .iter()
                .map(|v| match v {
                    Value::String(s) => counter.count_text(s),
                    Value::Array(ids) => ids.len() as u32,
                    other => counter.count_text(&other.to_string()),
                })
                .sum(),
            Err(_) => Heuristic::default().count_text(&String::from_utf8_lossy(body)),
        },
        _ => counter.count_text(&String::from_utf8_lossy(body)),
    }
}

impl<S> tower::Service<Request<LlmBody>> for TokenCount<S>
where
    S: tower::Service<Request<LlmBody>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<LlmBody>) -> Self::Future {
        let mut info = match RequestInfo::ensure(&mut req) {
            Ok(i) => i,
            Err(e) => return ResponseFuture::failed(e.into()),
        };
        let input = match info.estimated_input_tokens {
            Some(n) => n,
            None => {
                let n = count_body(&info, req.body());
                // Written into the extensions' info in place (copied only if
                // another holder shares it): no new `Arc`, no new entry.
                drop(info);
                info = match req.extensions_mut().get_mut::<Arc<RequestInfo>>() {
                    Some(slot) => {
                        Arc::make_mut(slot).estimated_input_tokens = Some(n);
                        slot.clone()
                    }
                    // Unreachable: `ensure` stored it just above.
                    None => {
                        return ResponseFuture::failed(InvalidRequest::new("request info missing").into());
                    }
                };
                n
            }
        };
        if self.preflight != Preflight::Off {
            let model = ModelInfo::lookup(&info.model);
            // u32 x u32 always fits in u64: a huge max_tokens with n > 1 cannot wrap.
            let output = u64::from(info.max_tokens.unwrap_or(0)) * u64::from(info.n.max(1));
            let need = u64::from(input) + output;
            if !model.prefix.is_empty() && need > u64::from(model.context_window) {
                let msg = format!(
                    "This model's maximum context length is {} tokens. However, you requested {need} tokens \
                     ({input} in the messages, {output} in the completion). Please reduce the length of the \
                     messages or completion.",
                    model.context_window
                );
                if self.preflight == Preflight::Enforce {
                    let err =
                        InvalidRequest::new(msg).with_param("messages").with_code("context_length_exceeded");
                    return ResponseFuture::failed(err.into());
                }
                tracing::warn!(
                    gen_ai.request.model = &*info.model,
                    need,
                    window = model.context_window,
                    "request exceeds the context window"
                );
            }
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}

pin_project! {
    /// Response future of [`TokenCount`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = Proj]
    enum State<F> {
        Inner { #[pin] fut: F },
        Failed { err: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    fn inner(fut: F) -> Self {
        Self { state: State::Inner { fut } }
    }
    fn failed(err: BoxError) -> Self {
        Self { state: State::Failed { err: Some(err) } }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Proj::Inner { fut } => fut.poll(cx).map_err(Into::into),
            Proj::Failed { err } => {
                Poll::Ready(Err(err.take().unwrap_or_else(|| "polled after completion".into())))
            }
        }
    }
}
