//! The [`Recorder`]: observes an upstream answer as it passes and stores it
//! once it ended complete and clean.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use llm_tower_core::response::{BodyEnd, BodyObserver};
use llm_tower_core::usage::{BodyKind, StreamEnd};
use smallvec::SmallVec;

use crate::entry::{Entry, Form};
use crate::layer::{Shared, log_l2};
use crate::service::{FlightGuard, Plan};

/// Records an upstream answer as it passes and stores it once complete.
/// Dropped before its end (the caller went away, the stream broke), it
/// stores nothing and ends the flight.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    plan: Plan,
    form: Form,
    /// The answer's chunks (a JSON answer mostly arrives in one: inline).
    chunks: SmallVec<[Bytes; 1]>,
    len: usize,
    /// Over `max_entry_bytes`: passed on, no longer kept.
    overflow: bool,
    kind: BodyKind,
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
            chunks: SmallVec::new(),
            len: 0,
            overflow: false,
            kind,
            flight,
            done: false,
        }
    }

    fn push(&mut self, data: &Bytes) {
        if self.overflow {
            return;
        }
        self.len += data.len();
        if self.len > self.shared.cfg.max_entry_bytes {
            self.overflow = true;
            self.chunks = SmallVec::new();
        } else {
            self.chunks.push(data.clone());
        }
    }

    /// Stores the answer if it is complete and clean.
    fn finish(mut self: Box<Self>, end: &BodyEnd) {
        self.done = true;
        let Some(report) = end.report.as_ref() else { return };
        let truncated = report.finish_reason.as_deref().is_some_and(|r| TRUNCATED.contains(&r));
        let why_not = if report.end != StreamEnd::Complete {
            Some("incomplete")
        } else if report.error.is_some() {
            Some("error in body")
        } else if self.overflow {
            Some("too large")
        } else if truncated && !self.shared.cfg.store_truncated {
            Some("truncated")
        } else if self.form == Form::Json && report.json_valid != Some(true) {
            // Read by the body's meter in its one pass (a 200 can carry a broken body).
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
        // moka's synchronous insert (its housekeeping, when due, is bounded
        // work); the flight ends once the entry is in.
        self.shared.cache.insert(p.key, Arc::new(entry));
        drop(self.flight.take());
    }
}

impl BodyObserver for Recorder {
    fn wants_usage(&self) -> Option<BodyKind> {
        Some(self.kind)
    }

    fn on_data(&mut self, data: &Bytes) {
        self.push(data);
    }

    fn on_end(self: Box<Self>, end: &mut BodyEnd) {
        self.finish(end);
    }
}
