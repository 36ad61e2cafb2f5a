//! [`CacheBody`]: a hit's bytes, or the upstream body passed through (and
//! recorded for the cache as it passes).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};
use pin_project_lite::pin_project;

use crate::entry::{Entry, Form};
use crate::layer::{Shared, log_l2};
use crate::service::{FlightGuard, Plan};

pin_project! {
    /// Response body of [`Cache`](crate::Cache).
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full { data: Option<Bytes> },
        Pass { #[pin] inner: B },
        Record { #[pin] inner: B, rec: Option<Box<Recorder>> },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn full(data: Bytes) -> Self {
        CacheBody { kind: Kind::Full { data: (!data.is_empty()).then_some(data) } }
    }

    pub(crate) fn pass(inner: B) -> Self {
        CacheBody { kind: Kind::Pass { inner } }
    }

    pub(crate) fn record(inner: B, rec: Recorder) -> Self {
        CacheBody { kind: Kind::Record { inner, rec: Some(Box::new(rec)) } }
    }
}

impl<B> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Full { .. } => "hit",
            Kind::Pass { .. } => "pass",
            Kind::Record { .. } => "recording",
        };
        f.debug_tuple("CacheBody").field(&kind).finish()
    }
}

impl<B: Body<Data = Bytes>> Body for CacheBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Pass { inner } => inner.poll_frame(cx),
            KindProj::Record { mut inner, rec } => {
                let out = ready!(inner.as_mut().poll_frame(cx));
                match &out {
                    Some(Ok(frame)) => {
                        if let (Some(r), Some(data)) = (rec.as_mut(), frame.data_ref()) {
                            r.push(data);
                        }
                        if inner.is_end_stream() {
                            if let Some(r) = rec.take() {
                                r.finish(StreamEnd::Complete);
                            }
                        }
                    }
                    Some(Err(_)) => {
                        if let Some(r) = rec.take() {
                            r.finish(StreamEnd::Failed);
                        }
                    }
                    None => {
                        if let Some(r) = rec.take() {
                            r.finish(StreamEnd::Complete);
                        }
                    }
                }
                Poll::Ready(out)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Pass { inner } | Kind::Record { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Pass { inner } | Kind::Record { inner, .. } => inner.size_hint(),
        }
    }
}

/// Records an upstream answer as it passes and stores it once complete.
/// Dropped before its end (the caller went away, the stream broke), it
/// stores nothing and ends the flight.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    plan: Plan,
    form: Form,
    chunks: Vec<Bytes>,
    len: usize,
    /// Over `max_entry_bytes`: passed on, no longer kept.
    overflow: bool,
    extractor: UsageExtractor,
    flight: Option<FlightGuard>,
    done: bool,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.done {
            // The caller went away before the end: nothing is stored.
            self.shared.counters.not_stored.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Finish reasons of an answer cut short by the token limit.
const TRUNCATED: [&str; 3] = ["length", "max_tokens", "max_output_tokens"];

impl Recorder {
    pub(crate) fn new(shared: Arc<Shared>, plan: Plan, kind: BodyKind, flight: Option<FlightGuard>) -> Self {
        let form = if kind == BodyKind::Sse { Form::Sse } else { Form::Json };
        Recorder {
            shared,
            plan,
            form,
            chunks: Vec::new(),
            len: 0,
            overflow: false,
            extractor: UsageExtractor::new(kind),
            flight,
            done: false,
        }
    }

    fn push(&mut self, data: &Bytes) {
        self.extractor.feed(data);
        if self.overflow {
            return;
        }
        self.len += data.len();
        if self.len > self.shared.cfg.max_entry_bytes {
            self.overflow = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(data.clone());
        }
    }

    /// Whether the recorded JSON body parses (a 200 can carry a broken body).
    fn valid_json(&self) -> bool {
        let whole;
        let b: &[u8] = match self.chunks.as_slice() {
            [one] => one,
            many => {
                whole = many.concat();
                &whole
            }
        };
        serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
    }

    /// Stores the answer if it is complete and clean.
    fn finish(mut self: Box<Self>, end: StreamEnd) {
        self.done = true;
        let report = std::mem::replace(&mut self.extractor, UsageExtractor::new(BodyKind::Json)).finish(end);
        let truncated = report.finish_reason.as_deref().is_some_and(|r| TRUNCATED.contains(&r));
        let why_not = if report.end != StreamEnd::Complete {
            Some("incomplete")
        } else if report.error.is_some() {
            Some("error in body")
        } else if self.overflow {
            Some("too large")
        } else if truncated && !self.shared.cfg.store_truncated {
            Some("truncated")
        } else if self.form == Form::Json && !self.valid_json() {
            Some("not JSON")
        } else {
            None
        };
        let c = &self.shared.counters;
        if let Some(why) = why_not {
            c.not_stored.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(key = %self.plan.key, why, "answer not cached");
            return;
        }
        let raw = match self.chunks.len() {
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut b = BytesMut::with_capacity(self.len);
                self.chunks.iter().for_each(|c| b.extend_from_slice(c));
                b.freeze()
            }
        };
        let p = &self.plan;
        let entry = Entry::new(
            p.scope.clone(),
            self.form,
            raw,
            report.usage,
            p.convertible,
            p.ttl,
            self.shared.cfg.compress_above,
        );
        c.stored.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = %p.key, bytes = self.len, "answer cached");
        if let Some(l2) = self.shared.l2.clone() {
            let (key, scope, bytes, ttl) = (p.key, p.scope.clone(), entry.encode(), p.ttl);
            tokio::spawn(async move { log_l2(l2.put(key, scope.as_str(), bytes, ttl).await) });
        }
        // Insert now if moka answers at once (it nearly always does); else in a
        // task that keeps the flight open until the entry is in.
        let shared = self.shared.clone();
        let (key, flight) = (p.key, self.flight.take());
        let mut insert = Box::pin(async move {
            shared.cache.insert(key, Arc::new(entry)).await;
            drop(flight);
        });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if insert.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(insert);
        }
    }
}
