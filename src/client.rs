//! [`Client`]: typed calls (`chat`, `chat_stream`, `embeddings`) over any
//! LLM service, such as a built [`LlmStack`](crate::LlmStack).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use llm_tower_core::chat::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, EmbeddingsRequest, StreamOptions,
};
use llm_tower_core::sse::SseParser;
use llm_tower_core::{BoxError, LlmBody, ServedBy, Upstream, Usage};
use llm_tower_tokens::ModelInfo;
use tower::{Service, ServiceExt};

/// A chat answer with what it used and cost.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChatResponse {
    /// The answer.
    pub response: ChatCompletionResponse,
    /// Tokens used (zero if the provider reported none).
    pub usage: Usage,
    /// Its cost at the model's list prices, micro-dollars.
    pub cost_micros: u64,
    /// Who answered (a provider's name, or `cache`).
    pub served_by: Option<String>,
}

impl ChatResponse {
    /// The first choice's text.
    pub fn text(&self) -> Option<&str> {
        self.response.choices.first().and_then(|c| c.message.text())
    }
}

/// Embedding vectors with their usage.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EmbeddingsResponse {
    /// One vector per input, in order.
    pub embeddings: Vec<Vec<f32>>,
    /// The model that answered.
    pub model: String,
    /// Tokens used.
    pub usage: Usage,
}

/// Typed calls over any service taking `Request<LlmBody>`: the decorator
/// ergonomics of Python clients, with every layer of the stack beneath.
///
/// A non-2xx answer is an error ([`Upstream`], with its status and message);
/// the stack's own errors (rate limited, circuit open, budget, ...) come as
/// they are, downcastable.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
/// use llm_tower::core::chat::{ChatCompletionRequest, ChatMessage};
/// use llm_tower::{Client, LlmHttpService, Provider};
/// let mock = llm_tower::mock::MockServer::start(Default::default()).await?;
/// let client = Client::new(LlmHttpService::new(Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?));
/// let req = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")]);
/// let answer = client.chat(req.clone()).await?;
/// assert!(answer.usage.output > 0 && answer.cost_micros > 0);
/// let mut stream = client.chat_stream(req).await?;
/// let mut text = String::new();
/// while let Some(chunk) = stream.next().await {
///     if let Some(c) = chunk?.choices.first() {
///         text.push_str(c.delta.text().unwrap_or(""));
///     }
/// }
/// assert_eq!(Some(text.as_str()), answer.text());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client<S> {
    svc: S,
}

impl<S, B> Client<S>
where
    S: Service<Request<LlmBody>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// A client over `svc`.
    pub fn new(svc: S) -> Self {
        Client { svc }
    }

    async fn send(&self, path: &str, body: Vec<u8>) -> Result<Response<B>, BoxError> {
        let req = Request::post(path).header("content-type", "application/json").body(LlmBody::from(body))?;
        let res = self.svc.clone().oneshot(req).await.map_err(Into::into)?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status();
        let hint =
            llm_tower_core::hint::retry_hint(res.headers(), std::time::SystemTime::now()).map(|h| h.after);
        let body = res.into_body().collect().await.map_err(Into::into)?.to_bytes();
        Err(Box::new(Upstream::from_body(status, hint, &body)))
    }

    /// A chat completion (`stream` is turned off).
    pub async fn chat(&self, mut req: ChatCompletionRequest) -> Result<ChatResponse, BoxError> {
        req.stream = None;
        req.stream_options = None;
        let res = self.send("/v1/chat/completions", serde_json::to_vec(&req)?).await?;
        let served_by = ServedBy::of(&res).map(str::to_owned);
        let bytes = res.into_body().collect().await.map_err(Into::into)?.to_bytes();
        let response: ChatCompletionResponse = serde_json::from_slice(&bytes)?;
        let usage = response.usage.as_ref().map(Usage::from).unwrap_or_default();
        let cost_micros = if served_by.as_deref() == Some("cache") {
            0
        } else {
            ModelInfo::lookup(&response.model).prices.cost_micros(&usage)
        };
        Ok(ChatResponse { response, usage, cost_micros, served_by })
    }

    /// A streamed chat completion, chunk by chunk (with a final usage chunk).
    pub async fn chat_stream(&self, mut req: ChatCompletionRequest) -> Result<ChunkStream<B>, BoxError> {
        req.stream = Some(true);
        let opts = req
            .stream_options
            .get_or_insert(StreamOptions { include_usage: None, extra: Default::default() });
        opts.include_usage = Some(true);
        let res = self.send("/v1/chat/completions", serde_json::to_vec(&req)?).await?;
        Ok(ChunkStream {
            body: res.into_body(),
            parser: SseParser::default(),
            ready: VecDeque::new(),
            done: false,
        })
    }

    /// Embeddings.
    pub async fn embeddings(&self, req: EmbeddingsRequest) -> Result<EmbeddingsResponse, BoxError> {
        let res = self.send("/v1/embeddings", serde_json::to_vec(&req)?).await?;
        let bytes = res.into_body().collect().await.map_err(Into::into)?.to_bytes();
        #[derive(serde::Deserialize)]
        struct Raw {
            data: Vec<Item>,
            model: String,
            #[serde(default)]
            usage: Option<llm_tower_core::chat::CompletionUsage>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            index: usize,
            embedding: Vec<f32>,
        }
        let mut raw: Raw = serde_json::from_slice(&bytes)?;
        raw.data.sort_by_key(|i| i.index);
        Ok(EmbeddingsResponse {
            embeddings: raw.data.into_iter().map(|i| i.embedding).collect(),
            model: raw.model,
            usage: raw.usage.as_ref().map(Usage::from).unwrap_or_default(),
        })
    }
}

/// The chunks of a streamed chat completion, parsed as they arrive. Also a
/// [`futures_core::Stream`].
pub struct ChunkStream<B> {
    body: B,
    parser: SseParser,
    ready: VecDeque<Result<ChatCompletionChunk, BoxError>>,
    done: bool,
}

impl<B> std::fmt::Debug for ChunkStream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream").field("done", &self.done).finish()
    }
}

impl<B> ChunkStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The next chunk; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<ChatCompletionChunk, BoxError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_chunk(cx)).await
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ChatCompletionChunk, BoxError>>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    self.done = true;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let (ready, done) = (&mut self.ready, &mut self.done);
                    self.parser.feed(&data, |ev| {
                        if *done {
                            return;
                        }
                        if ev.data == b"[DONE]" {
                            *done = true;
                        } else if ev.event == Some("error") {
                            *done = true;
                            let e = Upstream::from_body(StatusCode::BAD_GATEWAY, None, ev.data);
                            ready.push_back(Err(Box::new(e)));
                        } else {
                            ready.push_back(serde_json::from_slice(ev.data).map_err(Into::into));
                        }
                    });
                }
            }
        }
    }
}

impl<B> futures_core::Stream for ChunkStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Item = Result<ChatCompletionChunk, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}
