//! [`LlmResponseBody`]: the one response body type of every llm-tower layer.
//!
//! Layers that need to see an answer as it passes (a limiter reconciling its
//! token reservation, accounting charging the cost, a cache recording the
//! bytes, a breaker reading gRPC trailers, failover counting a call in flight)
//! do not wrap the body in a type of their own. They attach a
//! [`BodyObserver`] to the one body, which calls each observer as the bytes
//! pass and once at the end. So:
//!
//! - every layer's `Service::Response` is `http::Response<LlmResponseBody>`,
//!   whatever it wraps: `ServiceBuilder::option_layer` and
//!   `tower::util::Either` work for every layer, and a stack has a short,
//!   nameable type;
//! - the usage in a body is parsed **once**, by the body's meter, however many
//!   observers want it (they receive the [`UsageReport`] at the end);
//! - a body that is already an `LlmResponseBody` is taken as it is
//!   ([`LlmResponseBody::new`] does not box it again); any other body
//!   (hyper's `Incoming`, a tonic body, `Full`) is boxed once.
//!
//! What the caller reads can differ from what observers see in two ways, both
//! asked for by a layer: [`guard_sse`](LlmResponseBody::guard_sse) ends an
//! event stream that fails with an SSE `error` event instead of an error, and
//! [`strip_usage_only_events`](LlmResponseBody::strip_usage_only_events) drops
//! the usage-only chunk a layer asked the upstream for. Observers always see
//! the upstream's bytes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::{Arc, Mutex};
//! use http_body_util::BodyExt;
//! use llm_tower_core::response::{BodyEnd, BodyObserver, LlmResponseBody};
//! use llm_tower_core::usage::BodyKind;
//!
//! // An observer that keeps the input tokens the answer reported.
//! struct Tokens(Arc<Mutex<Option<u64>>>);
//! impl BodyObserver for Tokens {
//!     fn wants_usage(&self) -> Option<BodyKind> { Some(BodyKind::Json) }
//!     fn on_end(self: Box<Self>, end: &mut BodyEnd) {
//!         *self.0.lock().unwrap() = end.report.as_ref().and_then(|r| r.usage).map(|u| u.input);
//!     }
//! }
//! let seen = Arc::new(Mutex::new(None));
//! let mut body = LlmResponseBody::full(r#"{"usage":{"prompt_tokens":7,"completion_tokens":1}}"#);
//! body.observe(Tokens(seen.clone()));
//! body.collect().await.unwrap();
//! assert_eq!(*seen.lock().unwrap(), Some(7));
//! # }
//! ```

use std::any::Any;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use crate::BoxError;
use crate::usage::{BodyKind, StreamEnd, UsageExtractor, UsageReport};

/// Sees an answer's bytes as they pass and is told once how it ended.
/// Attach it with [`LlmResponseBody::observe`]. See the [module docs](self).
///
/// An observer that is dropped without [`on_end`](Self::on_end) (it never
/// is, unless the process unwinds) should release what it holds in `Drop`.
pub trait BodyObserver: Send + 'static {
    /// Whether this observer wants the body's usage, and which kind of body
    /// to read it from (usually `BodyKind::from_headers` of the response).
    /// Asked once, when it is attached. The body then keeps one meter for
    /// all observers that want usage.
    fn wants_usage(&self) -> Option<BodyKind> {
        None
    }

    /// Whether the meter should also collect the generated text (for a
    /// fallback count when the upstream reports no usage). Implies usage.
    fn wants_text(&self) -> bool {
        false
    }

    /// Each data frame as it passes (in order; never the bytes a guard or a
    /// filter added or removed).
    fn on_data(&mut self, _data: &Bytes) {}

    /// The trailers, if the body has any.
    fn on_trailers(&mut self, _trailers: &HeaderMap) {}

    /// Once, when the body ends: read to its end (`Complete`), failed
    /// (`Failed`), or dropped before either (`EndedEarly`, the caller went
    /// away). Observers are told in the order they were attached (the
    /// innermost layer first) and may fill in what the report lacks, such
    /// as an estimate for a stream that reported no usage; those told later
    /// see it.
    fn on_end(self: Box<Self>, end: &mut BodyEnd);
}

/// How a body ended, with what its meter read, for [`BodyObserver::on_end`].
#[derive(Debug)]
#[non_exhaustive]
pub struct BodyEnd {
    /// How the body itself ended.
    pub end: StreamEnd,
    /// What the meter read (when an observer wanted usage). Its `end` can be
    /// more precise than [`end`](Self::end): a stream that closed without
    /// its terminator is `EndedEarly`.
    pub report: Option<UsageReport>,
    /// The generated text (when an observer wanted it).
    pub text: String,
}

enum Source {
    Empty,
    Full(Option<Bytes>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

/// The response body of every llm-tower layer. See the [module docs](self).
pub struct LlmResponseBody {
    source: Source,
    observers: Vec<Box<dyn BodyObserver>>,
    // Boxed, as the filter: a body stays small to move when nobody meters it.
    meter: Option<Box<UsageExtractor>>,
    /// `Some(at_boundary)` when the body is an event stream to end with an
    /// SSE error event on failure.
    guard: Option<bool>,
    filter: Option<Box<BytesMut>>,
    /// A guard's error event, or the filter's last bytes, still to send.
    tail: Option<Bytes>,
    ended: bool,
}

impl std::fmt::Debug for LlmResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Empty => "empty",
            Source::Full(_) => "full",
            Source::Boxed(_) => "stream",
        };
        f.debug_struct("LlmResponseBody")
            .field("source", &source)
            .field("observers", &self.observers.len())
            .field("metered", &self.meter.is_some())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Default for LlmResponseBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl LlmResponseBody {
    fn from_source(source: Source) -> Self {
        LlmResponseBody {
            source,
            observers: Vec::new(),
            meter: None,
            guard: None,
            filter: None,
            tail: None,
            ended: false,
        }
    }

    /// `body` as an `LlmResponseBody`: itself if it already is one (no new
    /// box), boxed once otherwise.
    ///
    /// ```
    /// use http_body::Body;
    /// use llm_tower_core::response::LlmResponseBody;
    /// let body = LlmResponseBody::new(http_body_util::Full::new(bytes::Bytes::from("hi")));
    /// assert_eq!(body.size_hint().exact(), Some(2));
    /// ```
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut slot = Some(body);
        if let Some(same) = (&mut slot as &mut dyn Any).downcast_mut::<Option<LlmResponseBody>>() {
            return same.take().expect("just set");
        }
        let body = slot.expect("just set");
        Self::from_source(Source::Boxed(body.map_err(Into::into).boxed_unsync()))
    }

    /// A body of `data` (a buffered answer, a cache hit, an error).
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() { Self::empty() } else { Self::from_source(Source::Full(Some(data))) }
    }

    /// A body with no bytes.
    pub fn empty() -> Self {
        Self::from_source(Source::Empty)
    }

    /// Attaches `observer` (after those already attached). An observer
    /// attached to a body that has already ended is told at once.
    pub fn observe(&mut self, observer: impl BodyObserver) {
        self.observe_boxed(Box::new(observer));
    }

    /// [`observe`](Self::observe) for an observer already boxed.
    pub fn observe_boxed(&mut self, observer: Box<dyn BodyObserver>) {
        if let Some(kind) = observer.wants_usage() {
            let meter = self.meter.get_or_insert_with(|| Box::new(UsageExtractor::new(kind)));
            if observer.wants_text() {
                meter.keep_text();
            }
        }
        if self.ended {
            let mut end = BodyEnd { end: StreamEnd::Complete, report: None, text: String::new() };
            observer.on_end(&mut end);
            return;
        }
        if self.observers.capacity() == 0 {
            // Room for a whole `LlmStack`'s (two limiters, accounting, the
            // cache, the failover) and one more: one allocation, no growth.
            self.observers.reserve_exact(6);
        }
        self.observers.push(observer);
    }

    /// How many observers wait for this body's end.
    pub fn observers(&self) -> usize {
        self.observers.len()
    }

    /// Ends this body, if it is an event stream and fails, with an SSE
    /// `event: error` carrying an OpenAI-format error object (OpenAI's SDKs
    /// raise it), after a blank line if the failure came mid-event; the
    /// caller never reads a stream that stops as if complete. A JSON body
    /// that fails keeps its error (the transfer is aborted).
    pub fn guard_sse(&mut self) {
        self.guard.get_or_insert(true);
    }

    /// Drops events that carry only usage (`"choices": []` with `usage`)
    /// from what the caller reads: for a layer that asked the upstream for
    /// usage the caller did not ask for. Observers still see them.
    pub fn strip_usage_only_events(&mut self) {
        self.filter.get_or_insert_with(Box::default);
    }

    fn finish(&mut self, end: StreamEnd) {
        if self.ended {
            return;
        }
        self.ended = true;
        let (report, text) = match self.meter.take() {
            Some(m) => {
                let (r, t) = (*m).finish_with_text(end);
                (Some(r), t)
            }
            None => (None, String::new()),
        };
        let mut out = BodyEnd { end, report, text };
        for o in self.observers.drain(..) {
            o.on_end(&mut out);
        }
    }

    fn saw(&mut self, data: &Bytes) {
        if let Some(m) = self.meter.as_mut() {
            m.feed(data);
        }
        for o in &mut self.observers {
            o.on_data(data);
        }
        if let Some(at) = self.guard.as_mut()
            && !data.is_empty()
        {
            *at = ends_event(data);
        }
    }

    /// What the usage filter still holds back (an event without its blank line).
    fn take_filtered_rest(&mut self) -> Option<Bytes> {
        self.filter.as_mut().map(|p| p.split().freeze()).filter(|t| !t.is_empty())
    }

    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.source {
            Source::Empty => Poll::Ready(None),
            Source::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Source::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn source_ended(&self) -> bool {
        match &self.source {
            Source::Empty => true,
            Source::Full(d) => d.is_none(),
            Source::Boxed(b) => b.is_end_stream(),
        }
    }
}

impl Drop for LlmResponseBody {
    fn drop(&mut self) {
        self.finish(StreamEnd::EndedEarly);
    }
}

/// Whether `chunk` ends with a blank line (`\n\n`, `\r\n\r\n`, `\r\r`).
fn ends_event(chunk: &[u8]) -> bool {
    chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\r") || chunk.ends_with(b"\n\r\n")
}

/// Where the first complete event in `p` ends: past its first blank line
/// (`\n\n` or `\r\n\r\n`). One `memchr` pass over the line feeds.
fn event_end(p: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &p[from..]) {
        let at = from + i;
        match p.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if at > 0 && p[at - 1] == b'\r' && p.get(at + 2) == Some(&b'\n') => {
                return Some(at + 3);
            }
            _ => from = at + 1,
        }
    }
    None
}

/// Whether an SSE event carries only usage: `"choices": []` and a `usage`.
/// Most events are told apart by a byte search alone.
fn is_usage_only(event: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct UsageOnly {
        choices: Vec<serde::de::IgnoredAny>,
        usage: Option<serde::de::IgnoredAny>,
    }
    // Built once: a searcher built per event cost more than the search.
    static USAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    if USAGE.find(event).is_none() {
        return false;
    }
    let mut found = false;
    crate::sse::SseParser::default().feed(event, |ev| {
        if let Ok(u) = serde_json::from_slice::<UsageOnly>(ev.data) {
            found = u.choices.is_empty() && u.usage.is_some();
        }
    });
    found
}

/// Appends `data` to `pending`; returns the complete events to send on.
fn filter_events(pending: &mut BytesMut, data: &Bytes) -> Bytes {
    if pending.is_empty() {
        // The common chunk: whole events, none of them usage only, perhaps
        // the start of another. Its events are passed on as they are (a
        // slice of the chunk, no copy); only the unfinished rest is held.
        let mut at = 0;
        let clean = loop {
            match event_end(&data[at..]) {
                None => break true,
                Some(end) if is_usage_only(&data[at..at + end]) => break false,
                Some(end) => at += end,
            }
        };
        if clean {
            pending.extend_from_slice(&data[at..]);
            return data.slice(..at);
        }
    }
    pending.extend_from_slice(data);
    let mut out = BytesMut::new();
    while let Some(end) = event_end(pending) {
        let event = pending.split_to(end);
        if !is_usage_only(&event) {
            out.extend_from_slice(&event);
        }
    }
    out.freeze()
}

impl Body for LlmResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(this.tail.take().map(|t| Ok(Frame::data(t))));
            }
            match ready!(this.poll_source(cx)) {
                Some(Ok(frame)) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            this.saw(&data);
                            let data = match this.filter.as_mut() {
                                Some(pending) => filter_events(pending, &data),
                                None => data,
                            };
                            if this.source_ended() {
                                this.finish(StreamEnd::Complete);
                                this.tail = this.take_filtered_rest();
                            }
                            if data.is_empty() {
                                continue;
                            }
                            Frame::data(data)
                        }
                        Err(frame) => {
                            if let Some(t) = frame.trailers_ref() {
                                for o in &mut this.observers {
                                    o.on_trailers(t);
                                }
                            }
                            if this.source_ended() {
                                this.finish(StreamEnd::Complete);
                            }
                            frame
                        }
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                None => {
                    this.finish(StreamEnd::Complete);
                    this.tail = this.take_filtered_rest();
                    continue;
                }
                Some(Err(e)) => {
                    this.finish(StreamEnd::Failed);
                    match this.guard {
                        Some(at_boundary) => {
                            let event = crate::sse::error_event(&*e);
                            this.tail = Some(if at_boundary {
                                event
                            } else {
                                let mut out = BytesMut::with_capacity(event.len() + 2);
                                out.extend_from_slice(b"\n\n");
                                out.extend_from_slice(&event);
                                out.freeze()
                            });
                            continue;
                        }
                        None => return Poll::Ready(Some(Err(e))),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.ended {
            return self.tail.is_none();
        }
        // The source's own end counts: readers that know the length (hyper
        // with content-length) stop at the last byte. Observers are then
        // told when the body is dropped, as `Complete` if nothing is left.
        self.tail.is_none() && self.filter.as_ref().is_none_or(|p| p.is_empty()) && self.source_ended()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            return SizeHint::with_exact(self.tail.as_ref().map_or(0, |t| t.len() as u64));
        }
        if self.guard.is_some() || self.filter.is_some() {
            return SizeHint::default();
        }
        match &self.source {
            Source::Empty => SizeHint::with_exact(0),
            Source::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Source::Boxed(b) => b.size_hint(),
        }
    }
}

impl From<Bytes> for LlmResponseBody {
    fn from(b: Bytes) -> Self {
        Self::full(b)
    }
}

impl From<String> for LlmResponseBody {
    fn from(s: String) -> Self {
        Self::full(s)
    }
}

impl From<&'static str> for LlmResponseBody {
    fn from(s: &'static str) -> Self {
        Self::full(s)
    }
}

/// Converts a response's body into an [`LlmResponseBody`] (see
/// [`LlmResponseBody::new`]) and attaches `observer` to it.
///
/// ```
/// use llm_tower_core::response::{BodyEnd, BodyObserver, observe};
/// struct Count;
/// impl BodyObserver for Count {
///     fn on_end(self: Box<Self>, _: &mut BodyEnd) {}
/// }
/// let res = observe(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()), Count);
/// assert_eq!(res.body().observers(), 1);
/// ```
pub fn observe<B>(res: http::Response<B>, observer: impl BodyObserver) -> http::Response<LlmResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut res = res.map(LlmResponseBody::new);
    res.body_mut().observe(observer);
    res
}

#[cfg(test)]
mod tests;
