//! Sending one chat request and reading its answer: status, error code,
//! usage, time to first token and the gaps between tokens of a stream.

use std::time::Duration;

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// What one request came to.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outcome {
    /// Why it failed: `"<status> <code>"` from an OpenAI-format error body,
    /// `"stream: <code>"` for an SSE error event, or a transport error.
    pub error: Option<String>,
    /// Time to the first content token (streams), from the request's start.
    pub ttft: Option<Duration>,
    /// Gaps between content tokens (streams).
    pub gaps: Vec<Duration>,
    /// Usage: prompt tokens.
    pub prompt_tokens: u64,
    /// Usage: completion tokens.
    pub completion_tokens: u64,
    /// `x-llm-cache`: `Some(true)` for a hit, `Some(false)` for a miss.
    pub cache_hit: Option<bool>,
    /// `x-llm-backend`: who served it.
    pub backend: Option<String>,
}

/// What to ask for.
#[derive(Clone)]
pub struct Ask {
    /// The model name sent.
    pub model: String,
    /// `max_tokens` of each request.
    pub max_tokens: u32,
    /// Stream (SSE, with `include_usage`).
    pub stream: bool,
    /// Longest wait for a whole answer.
    pub timeout: Duration,
    /// Extra request headers, `(name, value)`; `{i}` in a value becomes the
    /// request's index (e.g. `x-tenant: t{i}` for a tenant per request).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Ask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header names only: a value may be a credential.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Ask")
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("stream", &self.stream)
            .field("timeout", &self.timeout)
            .field("headers", &names)
            .finish()
    }
}

/// A validated extra header: a fixed value, or one with the request index
/// spliced in at `{i}`.
#[derive(Clone, Debug)]
enum Extra {
    Fixed(HeaderName, HeaderValue),
    Indexed(HeaderName, String, String),
}

fn extra(name: &str, value: &str) -> Result<Extra, String> {
    let n = HeaderName::try_from(name).map_err(|_| format!("{name:?} is not a header name"))?;
    match value.split_once("{i}") {
        Some((pre, post)) => {
            // Checked once with a digit where the index goes.
            HeaderValue::try_from(format!("{pre}0{post}"))
                .map_err(|_| format!("header {name}: not a valid value"))?;
            Ok(Extra::Indexed(n, pre.to_owned(), post.to_owned()))
        }
        None => {
            let v = HeaderValue::try_from(value).map_err(|_| format!("header {name}: not a valid value"))?;
            Ok(Extra::Fixed(n, v))
        }
    }
}

/// Sends chat requests to one OpenAI-compatible base URL over pooled
/// keep-alive connections with `TCP_NODELAY`.
#[derive(Clone)]
pub(crate) struct Shooter {
    client: Client<HttpConnector, Full<Bytes>>,
    chat: Uri,
    auth: Option<HeaderValue>,
    extra: Vec<Extra>,
    ask: Ask,
}

impl std::fmt::Debug for Shooter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Shooter").field("chat", &self.chat).field("ask", &self.ask).finish()
    }
}

/// A hyper client with keep-alive and `TCP_NODELAY`.
pub(crate) fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4096).build(connector)
}

impl Shooter {
    /// Requests go to `{base}/chat/completions` (`base` ends in `/v1`).
    pub fn new(base: &str, api_key: Option<&str>, ask: Ask) -> Result<Self, String> {
        let chat: Uri = format!("{}/chat/completions", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| format!("{base}: not a URL ({e})"))?;
        let auth = match api_key {
            Some(k) => Some(
                HeaderValue::try_from(format!("Bearer {k}"))
                    .map_err(|_| "the API key is not a valid header value".to_owned())?,
            ),
            None => None,
        };
        let extra = ask.headers.iter().map(|(n, v)| extra(n, v)).collect::<Result<_, _>>()?;
        Ok(Self { client: http_client(), chat, auth, extra, ask })
    }

    /// Sends request `i` with `prompt`; times are measured from `from`
    /// (the intended send time in open-loop runs).
    pub async fn send(&self, from: Instant, i: u64, prompt: &str) -> Outcome {
        match tokio::time::timeout(self.ask.timeout, self.exchange(from, i, prompt)).await {
            Ok(o) => o,
            Err(_) => Outcome { error: Some("timeout".into()), ..Outcome::default() },
        }
    }

    fn body(&self, prompt: &str) -> Bytes {
        let mut body = serde_json::json!({
            "model": self.ask.model,
            "messages": [{ "role": "user", "content": prompt }],
            "max_tokens": self.ask.max_tokens,
            // Deterministic, so a cache may answer repeats.
            "temperature": 0,
        });
        if self.ask.stream {
            body["stream"] = Value::Bool(true);
            body["stream_options"] = serde_json::json!({ "include_usage": true });
        }
        Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes"))
    }

    async fn exchange(&self, from: Instant, i: u64, prompt: &str) -> Outcome {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.chat.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        for e in &self.extra {
            req = match e {
                Extra::Fixed(n, v) => req.header(n, v.clone()),
                Extra::Indexed(n, pre, post) => req.header(n, format!("{pre}{i}{post}")),
            };
        }
        let req = req.body(Full::new(self.body(prompt))).expect("a valid request");
        let res = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return Outcome { error: Some(transport(&e)), ..Outcome::default() },
        };
        let status = res.status().as_u16();
        let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut out = Outcome {
            cache_hit: header("x-llm-cache").map(|v| v.eq_ignore_ascii_case("hit")),
            backend: header("x-llm-backend"),
            ..Outcome::default()
        };
        let sse = header("content-type").is_some_and(|c| c.starts_with("text/event-stream"));
        let mut body = res.into_body();
        if sse && status < 300 {
            let mut events = Events::default();
            loop {
                match body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            events.feed(&data, from, &mut out);
                        }
                    }
                    Some(Err(e)) => {
                        out.error.get_or_insert_with(|| format!("stream: {}", cause(&e)));
                        break;
                    }
                    None => break,
                }
            }
            if out.error.is_none() && !events.done {
                out.error = Some("stream: ended without [DONE]".into());
            }
            return out;
        }
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                out.error = Some(format!("body: {}", cause(&e)));
                return out;
            }
        };
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 300 {
            out.error = Some(format!("{status} {}", error_code(&json)));
        } else if json.is_null() {
            out.error = Some(format!("{status} unparsable body"));
        } else {
            usage(&json, &mut out);
        }
        out
    }
}

/// An OpenAI-format error's code (or type), else `unknown`.
fn error_code(json: &Value) -> String {
    let e = &json["error"];
    e["code"].as_str().or_else(|| e["type"].as_str()).unwrap_or("unknown").to_owned()
}

fn usage(json: &Value, out: &mut Outcome) {
    let u = &json["usage"];
    out.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
    out.completion_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
}

fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s = inner.to_string();
        src = inner.source();
    }
    s
}

fn transport(e: &hyper_util::client::legacy::Error) -> String {
    if e.is_connect() { format!("connect: {}", cause(e)) } else { format!("transport: {}", cause(e)) }
}

/// Splits SSE data into events across frame boundaries (bounded: an event
/// longer than 1 MiB is an error).
#[derive(Default)]
struct Events {
    buf: BytesMut,
    last_token: Option<Instant>,
    done: bool,
}

impl Events {
    fn feed(&mut self, data: &[u8], from: Instant, out: &mut Outcome) {
        self.buf.extend_from_slice(data);
        while let Some(end) = find_blank_line(&self.buf) {
            let event = self.buf.split_to(end.0 + end.1);
            self.event(&event[..end.0], from, out);
        }
        if self.buf.len() > 1 << 20 {
            out.error.get_or_insert_with(|| "stream: an event over 1 MiB".into());
            self.buf.clear();
        }
    }

    fn event(&mut self, event: &[u8], from: Instant, out: &mut Outcome) {
        for line in event.split(|b| *b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else { continue };
            let data = data.trim_ascii();
            if data == b"[DONE]" {
                self.done = true;
                continue;
            }
            let Ok(json) = serde_json::from_slice::<Value>(data) else {
                out.error.get_or_insert_with(|| "stream: unparsable event".into());
                continue;
            };
            if !json["error"].is_null() {
                out.error.get_or_insert_with(|| format!("stream: {}", error_code(&json)));
                continue;
            }
            if !json["usage"].is_null() {
                usage(&json, out);
            }
            let content = json["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty());
            if content {
                let now = Instant::now();
                match self.last_token {
                    None => out.ttft = Some(now.saturating_duration_since(from)),
                    Some(prev) => out.gaps.push(now.saturating_duration_since(prev)),
                }
                self.last_token = Some(now);
            }
        }
    }
}

/// The first blank line: its start and its length (`\n\n` or `\r\n\r\n`).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_frames_give_tokens_usage_and_done() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        );
        let from = Instant::now();
        for cut in 1..stream.len() {
            let (a, b) = stream.as_bytes().split_at(cut);
            let (mut ev, mut out) = (Events::default(), Outcome::default());
            ev.feed(a, from, &mut out);
            ev.feed(b, from, &mut out);
            assert!(ev.done && out.error.is_none(), "cut at {cut}: {:?}", out.error);
            assert_eq!((out.prompt_tokens, out.completion_tokens), (9, 2));
            assert!(out.ttft.is_some());
            assert_eq!(out.gaps.len(), 1, "two content tokens, one gap");
        }
    }

    #[test]
    fn an_error_event_is_a_failure_by_its_code() {
        let (mut ev, mut out) = (Events::default(), Outcome::default());
        ev.feed(b"data: {\"error\":{\"code\":\"upstream_stream_error\"}}\n\n", Instant::now(), &mut out);
        assert_eq!(out.error.as_deref(), Some("stream: upstream_stream_error"));
    }
}
