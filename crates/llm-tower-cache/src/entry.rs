//! A stored answer: its body in the form it arrived (compressed above a
//! threshold), its usage, and when it was stored and expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use llm_tower_core::{Key, Usage};
use tokio::time::Instant;

use crate::convert;

/// The form of a stored body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// One JSON document.
    Json,
    /// A `text/event-stream`.
    Sse,
}

/// One cached answer. Immutable once stored; shared by every hit.
#[derive(Debug)]
pub struct Entry {
    pub(crate) scope: Key,
    pub(crate) form: Form,
    /// The body: as received, or lz4-compressed when `compressed`.
    pub(crate) body: Bytes,
    pub(crate) compressed: bool,
    /// The body's size before compression.
    pub(crate) raw_len: usize,
    pub(crate) usage: Option<Usage>,
    /// Whether the answer converts between JSON and SSE (chat completions).
    pub(crate) convertible: bool,
    pub(crate) stored_at: Instant,
    pub(crate) stored_at_unix_ms: u64,
    pub(crate) ttl: Duration,
}

/// Bookkeeping bytes counted per entry on top of its body: the entry itself
/// and its `Arc`, and what moka keeps per entry (its node, the key in its
/// hash table and in its access and write orders, the expiry timer). Measured
/// with `scripts/cache-bound.sh` (process RSS against the bound).
const OVERHEAD: usize = std::mem::size_of::<Entry>() + 16 + 288;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Entry {
    /// A new entry for `raw`, compressed when larger than `compress_above`.
    pub(crate) fn new(
        scope: Key,
        form: Form,
        raw: Bytes,
        usage: Option<Usage>,
        convertible: bool,
        ttl: Duration,
        compress_above: Option<usize>,
    ) -> Self {
        let raw_len = raw.len();
        let (body, compressed) = match compress_above {
            Some(limit) if raw_len > limit => {
                let packed = lz4_flex::compress_prepend_size(&raw);
                // Only worth it when it saves at least an eighth.
                if packed.len() < raw_len - raw_len / 8 { (Bytes::from(packed), true) } else { (raw, false) }
            }
            // Its own allocation of exactly its size: a slice of a larger
            // buffer (hyper's read buffer, often many KiB for a 600-byte
            // answer) would keep all of that alive, unweighed.
            _ => (Bytes::copy_from_slice(&raw), false),
        };
        Entry {
            scope,
            form,
            body,
            compressed,
            raw_len,
            usage,
            convertible,
            stored_at: Instant::now(),
            stored_at_unix_ms: unix_ms(),
            ttl,
        }
    }

    /// Memory it holds, for the byte bound.
    pub(crate) fn weight(&self) -> u32 {
        (self.body.len() + self.scope.as_str().len() + OVERHEAD).min(u32::MAX as usize) as u32
    }

    /// Whether it is still fresh at `now`, and no older than `max_age` if given.
    pub(crate) fn fresh(&self, now: Instant, max_age: Option<Duration>) -> bool {
        let age = now.saturating_duration_since(self.stored_at);
        age < self.ttl && max_age.is_none_or(|m| age <= m)
    }

    /// Whole seconds since it was stored (the `age` header).
    pub(crate) fn age(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.stored_at).as_secs()
    }

    /// The body as stored, decompressed.
    pub(crate) fn raw(&self) -> Option<Bytes> {
        if !self.compressed {
            return Some(self.body.clone());
        }
        lz4_flex::decompress_size_prepended(&self.body).ok().map(Bytes::from)
    }

    /// The body in the form a caller asked for: `None` when the forms
    /// differ and do not convert (or the body is damaged).
    pub(crate) fn render(&self, want: Form, include_usage: bool) -> Option<Bytes> {
        let raw = self.raw()?;
        match (self.form, want) {
            (Form::Json, Form::Json) => Some(raw),
            (Form::Sse, Form::Sse) if include_usage || self.usage.is_none() => Some(raw),
            (Form::Sse, Form::Sse) => Some(convert::strip_usage_chunks(&raw)),
            _ if !self.convertible => None,
            (Form::Sse, Form::Json) => convert::sse_to_json(&raw),
            (Form::Json, Form::Sse) => convert::json_to_sse(&raw, include_usage),
        }
    }

    /// The entry as bytes, for a second-level store shared by instances.
    ///
    /// Layout (little-endian): magic `LTC1`, form, compressed, convertible,
    /// usage flag + four u64, raw length u64, stored-at unix ms u64, TTL ms u64,
    /// scope (u32 length + bytes), body (u32 length + bytes).
    pub(crate) fn encode(&self) -> Bytes {
        let scope = self.scope.as_str();
        let mut b = BytesMut::with_capacity(self.body.len() + scope.len() + 80);
        b.put_slice(MAGIC);
        b.put_u8(matches!(self.form, Form::Sse) as u8);
        b.put_u8(self.compressed as u8);
        b.put_u8(self.convertible as u8);
        let u = self.usage.unwrap_or_default();
        b.put_u8(self.usage.is_some() as u8);
        for n in [u.input, u.output, u.cached_input, u.reasoning] {
            b.put_u64_le(n);
        }
        b.put_u64_le(self.raw_len as u64);
        b.put_u64_le(self.stored_at_unix_ms);
        b.put_u64_le(self.ttl.as_millis() as u64);
        b.put_u32_le(scope.len() as u32);
        b.put_slice(scope.as_bytes());
        b.put_u32_le(self.body.len() as u32);
        b.put_slice(&self.body);
        b.freeze()
    }

    /// Reads [`encode`](Self::encode)'s bytes; `None` for anything else. Its
    /// age carries over (from the wall clock), so its freshness does too.
    pub(crate) fn decode(mut b: Bytes) -> Option<Self> {
        if b.len() < 4 + 4 + 32 + 24 + 4 || &b[..4] != MAGIC {
            return None;
        }
        b.advance(4);
        let form = if b.get_u8() == 1 { Form::Sse } else { Form::Json };
        let compressed = b.get_u8() == 1;
        let convertible = b.get_u8() == 1;
        let has_usage = b.get_u8() == 1;
        let [input, output, cached_input, reasoning] =
            [b.get_u64_le(), b.get_u64_le(), b.get_u64_le(), b.get_u64_le()];
        let usage = has_usage.then_some(Usage { input, output, cached_input, reasoning });
        let raw_len = b.get_u64_le() as usize;
        let stored_at_unix_ms = b.get_u64_le();
        let ttl = Duration::from_millis(b.get_u64_le());
        let scope = take(&mut b)?;
        let scope = Key::from(std::str::from_utf8(&scope).ok()?.to_owned());
        let body = take(&mut b)?;
        if !b.is_empty() {
            return None;
        }
        let age = Duration::from_millis(unix_ms().saturating_sub(stored_at_unix_ms));
        let now = Instant::now();
        let stored_at = now.checked_sub(age).unwrap_or(now);
        Some(Entry {
            scope,
            form,
            body,
            compressed,
            raw_len,
            usage,
            convertible,
            stored_at,
            stored_at_unix_ms,
            ttl,
        })
    }
}

const MAGIC: &[u8; 4] = b"LTC1";

fn take(b: &mut Bytes) -> Option<Bytes> {
    if b.len() < 4 {
        return None;
    }
    let n = b.get_u32_le() as usize;
    (b.len() >= n).then(|| b.split_to(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(raw: &'static [u8], compress_above: Option<usize>) -> Entry {
        let usage = Some(Usage { input: 3, output: 4, cached_input: 1, reasoning: 0 });
        Entry::new(
            Key::from_static("tenant"),
            Form::Json,
            Bytes::from_static(raw),
            usage,
            true,
            Duration::from_secs(60),
            compress_above,
        )
    }

    #[test]
    fn an_answer_sliced_from_a_larger_buffer_gets_its_own_allocation() {
        // hyper hands out answers as slices of its read buffer: storing the
        // slice would keep the whole buffer alive, outside the weighed bound.
        let buffer = Bytes::from(vec![b'x'; 64 << 10]);
        let answer = buffer.slice(100..700);
        let e = Entry::new(
            Key::from_static("t"),
            Form::Json,
            answer.clone(),
            None,
            true,
            Duration::from_secs(60),
            None,
        );
        assert_eq!(e.body, answer);
        let inside = buffer.as_ptr_range();
        assert!(!inside.contains(&e.body.as_ptr()), "not a view into the 64 KiB buffer");
        assert!(e.weight() as usize >= 600 + std::mem::size_of::<Entry>());
    }

    #[test]
    fn large_bodies_are_compressed_and_come_back_whole() {
        let big: &'static [u8] = Box::leak(br#"{"choices":[{"message":{"content":"#.iter().chain(b"abc".repeat(10_000).iter()).chain(br#""}}]}"#.iter()).copied().collect::<Vec<u8>>().into_boxed_slice());
        let e = entry(big, Some(1024));
        assert!(e.compressed);
        assert!(e.body.len() < big.len() / 10, "{} of {}", e.body.len(), big.len());
        assert_eq!(&e.raw().unwrap()[..], big);
        assert_eq!(e.raw_len, big.len());
        // Small ones, or with compression off, are kept as they are.
        assert!(!entry(b"{}", Some(1024)).compressed);
        assert!(!entry(big, None).compressed);
    }

    #[test]
    fn incompressible_bodies_are_kept_as_they_are() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let noise: &'static [u8] = Box::leak(noise.into_boxed_slice());
        assert!(!entry(noise, Some(1024)).compressed);
    }

    #[tokio::test]
    async fn encoding_round_trips_and_rejects_damage() {
        let e = entry(br#"{"a":1}"#, None);
        let bytes = e.encode();
        let d = Entry::decode(bytes.clone()).unwrap();
        assert_eq!(
            (d.form, d.compressed, d.convertible, d.usage, d.ttl),
            (e.form, e.compressed, e.convertible, e.usage, e.ttl)
        );
        assert_eq!((d.scope.as_str(), &d.body[..]), (e.scope.as_str(), &e.body[..]));
        for cut in [0, 4, 10, bytes.len() - 1] {
            assert!(Entry::decode(bytes.slice(..cut)).is_none(), "cut at {cut}");
        }
        let mut extra = BytesMut::from(&bytes[..]);
        extra.put_u8(0);
        assert!(Entry::decode(extra.freeze()).is_none());
        assert!(
            Entry::decode(Bytes::from_static(
                b"LTC0 not an entry at all, but long enough to be read as one....."
            ))
            .is_none()
        );
    }
}
