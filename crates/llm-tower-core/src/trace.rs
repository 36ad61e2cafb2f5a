//! Distributed tracing without a tracing SDK in the layers: the W3C trace
//! context a request runs in ([`TraceContext`], the `traceparent` header),
//! carried in the request's extensions as a [`Traced`] with the
//! [`SpanExporter`] its spans go to.
//!
//! Whoever receives the request (the gateway) puts a `Traced` on it; the HTTP
//! service then makes one client span per upstream attempt, a child of it,
//! sends that span's context upstream as `traceparent`, and exports the span
//! when the attempt's answer ends. A request without `Traced` costs nothing.
//!
//! ```
//! use llm_tower_core::trace::TraceContext;
//! let parent = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
//! let child = parent.child();
//! assert_eq!(child.trace_id, parent.trace_id);
//! assert_ne!(child.span_id, parent.span_id);
//! assert!(child.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//! assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
//! ```

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A span's place in a trace: W3C `traceparent` (version 00).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace (16 bytes, never all zero).
    pub trace_id: [u8; 16],
    /// This span (8 bytes, never all zero).
    pub span_id: [u8; 8],
    /// Whether the trace is recorded (the `sampled` flag).
    pub sampled: bool,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// 64 bits nobody else in this process drew: a process-random hash of a
/// counter (unique, not secret: trace ids are not credentials).
fn draw() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    let seed = SEED.get_or_init(std::collections::hash_map::RandomState::new);
    loop {
        let v = seed.hash_one(N.fetch_add(1, Ordering::Relaxed));
        if v != 0 {
            return v;
        }
    }
}

fn hex_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    hex_into(&mut s, bytes);
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

impl TraceContext {
    /// A new trace's root span.
    pub fn root(sampled: bool) -> Self {
        let (a, b) = (draw(), draw());
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&a.to_be_bytes());
        trace_id[8..].copy_from_slice(&b.to_be_bytes());
        TraceContext { trace_id, span_id: draw().to_be_bytes(), sampled }
    }

    /// A new span in the same trace (its parent is `self`).
    pub fn child(&self) -> Self {
        TraceContext { span_id: draw().to_be_bytes(), ..*self }
    }

    /// Reads a `traceparent` header value (version 00; a later version's
    /// first four fields); `None` for anything malformed or all-zero ids.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        unhex::<1>(version)?;
        let trace_id = unhex::<16>(trace).filter(|t| t.iter().any(|&b| b != 0))?;
        let span_id = unhex::<8>(span).filter(|s| s.iter().any(|&b| b != 0))?;
        let flags = unhex::<1>(flags)?[0];
        Some(TraceContext { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The `traceparent` header value naming this span.
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex_into(&mut s, &self.trace_id);
        s.push('-');
        hex_into(&mut s, &self.span_id);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        s
    }
}

/// What kind of span (OpenTelemetry's span kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// Handles a request it received (the gateway's request span).
    Server,
    /// Makes a request to another service (an upstream attempt).
    Client,
    /// Work inside the process.
    Internal,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// Text.
    Str(Arc<str>),
    /// A whole number.
    Int(i64),
    /// A number.
    Float(f64),
    /// A flag.
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.into())
    }
}
impl From<Arc<str>> for AttrValue {
    fn from(v: Arc<str>) -> Self {
        AttrValue::Str(v)
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v.into())
    }
}
impl From<u64> for AttrValue {
    fn from(v: u64) -> Self {
        AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for AttrValue {
    fn from(v: u32) -> Self {
        AttrValue::Int(i64::from(v))
    }
}
impl From<u16> for AttrValue {
    fn from(v: u16) -> Self {
        AttrValue::Int(i64::from(v))
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

/// Nanoseconds since the Unix epoch, now (span times are wall-clock).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A span that has ended, as an exporter receives it.
#[derive(Clone, Debug)]
pub struct FinishedSpan {
    /// Its own context (trace and span id).
    pub context: TraceContext,
    /// Its parent span in the same trace, if any.
    pub parent: Option<[u8; 8]>,
    /// Its name (`chat gpt-4o-mini`, `POST /v1/chat/completions`).
    pub name: String,
    /// Its kind.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Attributes, by OpenTelemetry semantic-convention names where they exist.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// The operation failed (its status is an error), with a message.
    pub error: Option<String>,
}

impl FinishedSpan {
    /// A span named `name` that started at `start_unix_nanos` and ends now.
    pub fn ended_now(
        context: TraceContext,
        parent: Option<[u8; 8]>,
        name: String,
        kind: SpanKind,
        start_unix_nanos: u64,
    ) -> Self {
        FinishedSpan {
            context,
            parent,
            name,
            kind,
            start_unix_nanos,
            end_unix_nanos: unix_nanos(),
            attributes: Vec::new(),
            error: None,
        }
    }

    /// Adds an attribute.
    pub fn attr(&mut self, key: &'static str, value: impl Into<AttrValue>) -> &mut Self {
        self.attributes.push((key, value.into()));
        self
    }

    /// The attribute named `key`.
    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// Where finished spans go (an OTLP exporter, a test's list). `export` is
/// called on the request path: it must only hand the span off (a bounded
/// queue), never wait.
pub trait SpanExporter: Send + Sync + 'static {
    /// Takes a finished span.
    fn export(&self, span: FinishedSpan);
}

/// The trace context a request runs in, and where its spans go: put in the
/// request's extensions by whoever traces it.
#[derive(Clone)]
pub struct Traced {
    /// The span the request runs in (its upstream attempts are children of it).
    pub context: TraceContext,
    /// Where spans go.
    pub exporter: Arc<dyn SpanExporter>,
}

impl fmt::Debug for Traced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traced").field("context", &self.context).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parses_only_what_w3c_allows_and_round_trips() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceContext::parse(ok).unwrap().traceparent(), ok);
        assert!(
            !TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled
        );
        // A later version may add fields; version 00 may not.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some()
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn new_ids_are_distinct_and_never_zero() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let c = TraceContext::root(true);
            assert!(c.span_id.iter().any(|&b| b != 0) && c.trace_id.iter().any(|&b| b != 0));
            assert!(seen.insert(c.span_id), "a span id drawn twice");
        }
    }
}
