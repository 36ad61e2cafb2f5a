//! Canonical request keys: a 128-bit hash of what changes the answer.
//!
//! The request JSON is walked once by a serde visitor that hashes as it reads
//! (no `Value` tree, no allocation for unescaped strings):
//!
//! - object members are hashed pair by pair and combined with a commutative
//!   sum, so key order does not matter;
//! - arrays are hashed in order (message order matters);
//! - numbers are hashed by value: `1`, `1.0` and `1e0` are the same number;
//! - whitespace between tokens never reaches the visitor;
//! - top-level members that do not change the answer are skipped: `stream`
//!   and `stream_options` (for chat completions, whose streamed and plain
//!   answers convert into each other), `null` members (the same as absent),
//!   and the configured ignored fields (`user`, `metadata`, ... by default).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_seed};

/// A cache key: 128 bits, collision-free in practice.
///
/// ```
/// use llm_tower_cache::CacheKey;
/// let a = CacheKey::of("tenant-a", "/v1/chat/completions", br#"{"model":"m","messages":[]}"#, &[]).unwrap();
/// let b = CacheKey::of("tenant-a", "/v1/chat/completions", br#"{ "messages": [], "model": "m" }"#, &[]).unwrap();
/// assert_eq!(a, b);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub u128);

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({:032x})", self.0)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for CacheKey {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(CacheKey)
    }
}

/// A request body that is not a JSON object cannot be keyed.
#[derive(Debug)]
pub struct NotJson(serde_json::Error);

impl fmt::Display for NotJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body is not a JSON object: {}", self.0)
    }
}

impl std::error::Error for NotJson {}

impl CacheKey {
    /// The key of a request: its scope (tenant), its endpoint, and the
    /// canonical hash of its JSON body without the `ignored` top-level fields.
    pub fn of(scope: &str, endpoint: &str, body: &[u8], ignored: &[String]) -> Result<Self, NotJson> {
        let convertible = endpoint.ends_with("/chat/completions");
        Ok(Self::from_parts(scope, endpoint, canonical_hash(body, ignored, convertible)?))
    }

    /// The key of a body's canonical hash in a scope and endpoint.
    pub(crate) fn from_parts(scope: &str, endpoint: &str, body: u128) -> Self {
        let mut buf = [0u8; 256];
        let need = 16 + scope.len() + endpoint.len() + 16;
        let mut heap = Vec::new();
        let out: &mut [u8] = if need <= buf.len() {
            &mut buf[..need]
        } else {
            heap.resize(need, 0);
            &mut heap
        };
        let (a, rest) = out.split_at_mut(8);
        a.copy_from_slice(&(scope.len() as u64).to_le_bytes());
        let (b, rest) = rest.split_at_mut(scope.len());
        b.copy_from_slice(scope.as_bytes());
        let (c, rest) = rest.split_at_mut(8);
        c.copy_from_slice(&(endpoint.len() as u64).to_le_bytes());
        let (d, rest) = rest.split_at_mut(endpoint.len());
        d.copy_from_slice(endpoint.as_bytes());
        rest.copy_from_slice(&body.to_le_bytes());
        CacheKey(xxh3_128(out))
    }
}

/// Domain tags, so that values of different types never hash alike.
const NULL: u64 = 1;
const FALSE: u64 = 2;
const TRUE: u64 = 3;
const INT: u64 = 4;
const FLOAT: u64 = 5;
const STR: u64 = 6;
const SEQ: u64 = 7;
const MAP: u64 = 8;
const PAIR: u64 = 9;

/// The canonical hash of a JSON object body. `stream` and `stream_options`
/// are skipped when `skip_stream` (the answer's form does not matter).
///
/// ```
/// use llm_tower_cache::key::canonical_hash;
/// let a = canonical_hash(br#"{"temperature":1,"user":"x","n":2}"#, &["user".into()], false).unwrap();
/// let b = canonical_hash(br#"{"n":2.0,"temperature":1e0}"#, &["user".into()], false).unwrap();
/// assert_eq!(a, b);
/// ```
pub fn canonical_hash(body: &[u8], ignored: &[String], skip_stream: bool) -> Result<u128, NotJson> {
    analyze(body, ignored, skip_stream).map(|(h, _)| h)
}

/// What the cache needs to know of a request, read in the same pass as its hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `"stream": true`.
    pub(crate) stream: bool,
    /// `"stream_options": {"include_usage": true}`.
    pub(crate) include_usage: bool,
    /// `temperature` 0 or a `seed`: one right answer.
    pub(crate) deterministic: bool,
}

/// The canonical hash of a JSON object body and its [`Facts`].
///
/// A UTF-8 body (any real one) is checked once and walked as a `str`, with
/// no check per string; other bytes are walked as `serde_json::from_slice`
/// would, to refuse or accept them as before (see `llm_tower_core::json`).
pub(crate) fn analyze(body: &[u8], ignored: &[String], skip_stream: bool) -> Result<(u128, Facts), NotJson> {
    match std::str::from_utf8(body) {
        Ok(s) => walk(serde_json::Deserializer::from_str(s), ignored, skip_stream),
        Err(_) => walk(serde_json::Deserializer::from_slice(body), ignored, skip_stream),
    }
}

fn walk<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    ignored: &[String],
    skip_stream: bool,
) -> Result<(u128, Facts), NotJson> {
    let mut facts = Facts::default();
    let top = Top { ignored, skip_stream, facts: &mut facts };
    let h = de.deserialize_map(top).map_err(NotJson)?;
    de.end().map_err(NotJson)?;
    Ok((h, facts))
}

fn leaf(tag: u64, bytes: &[u8]) -> u128 {
    xxh3_128_with_seed(bytes, tag)
}

fn int(v: i128) -> u128 {
    leaf(INT, &v.to_le_bytes())
}

/// Hashes two hashes into one (ordered).
fn join(tag: u64, a: u128, b: u128) -> u128 {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&a.to_le_bytes());
    bytes[16..].copy_from_slice(&b.to_le_bytes());
    leaf(tag, &bytes)
}

/// A value's hash, and what the top level wants to know of it.
#[derive(Clone, Copy)]
struct Out {
    hash: u128,
    scalar: Scalar,
}

#[derive(Clone, Copy, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Num(f64),
    /// An object, and whether it has `"include_usage": true`.
    Map {
        include_usage: bool,
    },
    Other,
}

/// Member names the cache reads facts from.
#[derive(Clone, Copy, PartialEq)]
enum Name {
    Stream,
    StreamOptions,
    Temperature,
    Seed,
    IncludeUsage,
    Other,
}

/// A member name: hashed where it lies (no allocation), `None` when skipped.
struct KeySeed<F>(F);

impl<'de, F: Fn(&str) -> bool> DeserializeSeed<'de> for KeySeed<F> {
    type Value = (Name, Option<u128>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<F: Fn(&str) -> bool> Visitor<'_> for KeySeed<F> {
    type Value = (Name, Option<u128>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        let name = match v {
            "stream" => Name::Stream,
            "stream_options" => Name::StreamOptions,
            "temperature" => Name::Temperature,
            "seed" => Name::Seed,
            "include_usage" => Name::IncludeUsage,
            _ => Name::Other,
        };
        Ok((name, (!(self.0)(v)).then(|| leaf(STR, v.as_bytes()))))
    }
}

/// An object: its members hashed pair by pair and summed (order-free), with
/// the member count. `skip` drops members by name. At the top (`facts`),
/// `null` members count as absent and the request's facts are read.
fn hash_map<'de, A: MapAccess<'de>>(
    mut map: A,
    skip: impl Fn(&str) -> bool,
    mut facts: Option<&mut Facts>,
) -> Result<Out, A::Error> {
    let mut sum = 0u128;
    let mut count = 0u64;
    let mut include_usage = false;
    while let Some((name, key)) = map.next_key_seed(KeySeed(&skip))? {
        let v = map.next_value_seed(Node)?;
        match (&mut facts, name, v.scalar) {
            (Some(f), Name::Stream, Scalar::Bool(b)) => f.stream = b,
            (Some(f), Name::StreamOptions, Scalar::Map { include_usage }) => f.include_usage = include_usage,
            (Some(f), Name::Temperature, Scalar::Num(t)) => f.deterministic |= t == 0.0,
            (Some(f), Name::Seed, s) => f.deterministic |= s != Scalar::Null,
            (None, Name::IncludeUsage, Scalar::Bool(b)) => include_usage = b,
            _ => {}
        }
        let Some(key) = key else { continue };
        if facts.is_some() && v.scalar == Scalar::Null {
            continue;
        }
        sum = sum.wrapping_add(join(PAIR, key, v.hash));
        count += 1;
    }
    let mut bytes = [0u8; 24];
    bytes[..16].copy_from_slice(&sum.to_le_bytes());
    bytes[16..].copy_from_slice(&count.to_le_bytes());
    Ok(Out { hash: leaf(MAP, &bytes), scalar: Scalar::Map { include_usage } })
}

/// The top-level object: members may be skipped; facts are read.
struct Top<'a> {
    ignored: &'a [String],
    skip_stream: bool,
    facts: &'a mut Facts,
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = u128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<u128, A::Error> {
        let (ignored, skip_stream) = (self.ignored, self.skip_stream);
        let skips = |k: &str| {
            (skip_stream && (k == "stream" || k == "stream_options")) || ignored.iter().any(|i| i == k)
        };
        hash_map(map, skips, Some(self.facts)).map(|o| o.hash)
    }
}

/// Any JSON value below the top.
#[derive(Clone, Copy)]
struct Node;

impl<'de> DeserializeSeed<'de> for Node {
    type Value = Out;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Out, D::Error> {
        d.deserialize_any(self)
    }
}

fn out(hash: u128, scalar: Scalar) -> Out {
    Out { hash, scalar }
}

impl<'de> Visitor<'de> for Node {
    type Value = Out;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Out, E> {
        Ok(out(leaf(NULL, &[]), Scalar::Null))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Out, E> {
        Ok(out(leaf(if v { TRUE } else { FALSE }, &[]), Scalar::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Out, E> {
        Ok(out(int(i128::from(v)), Scalar::Num(v as f64)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Out, E> {
        Ok(out(int(i128::from(v)), Scalar::Num(v as f64)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Out, E> {
        // Integral values hash as integers (1.0 == 1); -0.0 == 0.0.
        let hash = if v.fract() == 0.0 && v.abs() < 9.0e18 {
            int(v as i128)
        } else {
            leaf(FLOAT, &v.to_bits().to_le_bytes())
        };
        Ok(out(hash, Scalar::Num(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Out, E> {
        Ok(out(leaf(STR, v.as_bytes()), Scalar::Other))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Out, A::Error> {
        // Chained: each element's hash folded into the running one, in order.
        let mut h = leaf(SEQ, &[]);
        while let Some(v) = seq.next_element_seed(Node)? {
            h = join(SEQ, h, v.hash);
        }
        Ok(out(h, Scalar::Other))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Out, A::Error> {
        hash_map(map, |_| false, None)
    }
}

/// Remembers the canonical hash and facts of byte-identical bodies, so that
/// a repeated request (the usual hit) is keyed by one pass of xxh3 over its
/// bytes instead of a JSON walk. Bounded: a full shard is cleared.
pub(crate) struct Memo {
    shards: Box<[Mutex<MemoShard>]>,
    per_shard: usize,
}

/// Raw body hash -> canonical hash and facts.
type MemoShard = HashMap<u128, (u128, Facts), BuildHasherDefault<Identity>>;

const MEMO_SHARDS: usize = 16;
const MEMO_PER_SHARD: usize = 4096;

/// Bytes one memo entry holds (key, value and the table's slot), rounded up.
pub(crate) const MEMO_ENTRY_BYTES: usize = 64;

impl Default for Memo {
    fn default() -> Self {
        Self::with_capacity(MEMO_SHARDS * MEMO_PER_SHARD)
    }
}

impl Memo {
    /// A memo of at most `entries` entries (cleared a shard at a time when full).
    pub(crate) fn with_capacity(entries: usize) -> Self {
        let per_shard = (entries / MEMO_SHARDS).clamp(1, MEMO_PER_SHARD);
        Memo { shards: (0..MEMO_SHARDS).map(|_| Mutex::default()).collect(), per_shard }
    }

    /// The most memory it can hold, for the cache's byte bound. A hashbrown
    /// table may hold up to twice its entries in capacity.
    pub(crate) fn max_bytes(&self) -> u64 {
        (MEMO_SHARDS * self.per_shard * MEMO_ENTRY_BYTES * 2) as u64
    }
}

impl Memo {
    /// The canonical hash and facts of `body` sent to endpoint number `tag`.
    pub(crate) fn analyze(
        &self,
        body: &[u8],
        tag: u64,
        ignored: &[String],
        skip_stream: bool,
    ) -> Result<(u128, Facts), NotJson> {
        let raw = xxh3_128_with_seed(&[], tag) ^ xxh3_128(body);
        let shard = &self.shards[(raw >> 124) as usize % MEMO_SHARDS];
        if let Some(hit) = shard.lock().unwrap_or_else(|e| e.into_inner()).get(&raw) {
            return Ok(*hit);
        }
        let found = analyze(body, ignored, skip_stream)?;
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.per_shard {
            map.clear();
        }
        map.insert(raw, found);
        Ok(found)
    }
}

/// The memo's keys are hashes already.
#[derive(Default)]
pub(crate) struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(body: &str) -> u128 {
        canonical_hash(body.as_bytes(), &["user".to_owned(), "metadata".to_owned()], true).unwrap()
    }

    #[test]
    fn order_whitespace_and_number_forms_do_not_matter() {
        let base = h(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(
            base,
            h(r#"{ "messages" : [ { "content":"hi", "role":"user" } ], "temperature":0.0, "model":"m" }"#)
        );
        assert_eq!(base, h(r#"{"model":"m","temperature":0e5,"messages":[{"role":"user","content":"hi"}]}"#));
        assert_eq!(
            base,
            h(r#"{"model":"m","temperature":-0.0,"messages":[{"role":"user","content":"h\u0069"}]}"#)
        );
    }

    #[test]
    fn ignored_stream_and_null_members_do_not_matter() {
        let base = h(r#"{"model":"m","messages":[]}"#);
        assert_eq!(base, h(r#"{"model":"m","messages":[],"user":"u1","metadata":{"a":1}}"#));
        assert_eq!(
            base,
            h(r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#)
        );
        assert_eq!(base, h(r#"{"model":"m","messages":[],"seed":null}"#));
        // Only at the top: a nested "user" is content.
        assert_ne!(h(r#"{"model":"m","messages":[{"user":1}]}"#), h(r#"{"model":"m","messages":[{}]}"#));
        // Without skip_stream (an endpoint whose forms do not convert), stream counts.
        let keep = |b: &str| canonical_hash(b.as_bytes(), &[], false).unwrap();
        assert_ne!(keep(r#"{"stream":true}"#), keep("{}"));
    }

    #[test]
    fn anything_that_changes_the_answer_changes_the_key() {
        let base = h(
            r#"{"model":"m","temperature":0.5,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#,
        );
        for other in [
            r#"{"model":"n","temperature":0.5,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#,
            r#"{"model":"m","temperature":0.6,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#,
            r#"{"model":"m","temperature":0.5,"messages":[{"role":"assistant","content":"b"},{"role":"user","content":"a"}]}"#,
            r#"{"model":"m","temperature":0.5,"messages":[{"role":"user","content":"a "},{"role":"assistant","content":"b"}]}"#,
            r#"{"model":"m","temperature":0.5,"seed":1,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#,
            r#"{"model":"m","temperature":"0.5","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#,
        ] {
            assert_ne!(base, h(other), "{other}");
        }
        // Values never collide across types or nesting.
        assert_ne!(h(r#"{"a":[1,2]}"#), h(r#"{"a":[[1,2]]}"#));
        assert_ne!(h(r#"{"a":{"b":1}}"#), h(r#"{"a":[["b",1]]}"#));
        assert_ne!(h(r#"{"a":1,"b":2}"#), h(r#"{"a":2,"b":1}"#));
    }

    #[test]
    fn scope_and_endpoint_are_part_of_the_key() {
        let body = br#"{"model":"m","input":"x"}"#;
        let a = CacheKey::of("a", "/v1/embeddings", body, &[]).unwrap();
        assert_ne!(a, CacheKey::of("b", "/v1/embeddings", body, &[]).unwrap());
        assert_ne!(a, CacheKey::of("a", "/v1/responses", body, &[]).unwrap());
        assert_eq!(a, a.to_string().parse().unwrap());
    }

    #[test]
    fn facts_are_read_in_the_same_pass() {
        let f = |b: &str| analyze(b.as_bytes(), &[], true).unwrap().1;
        assert_eq!(f("{}"), Facts::default());
        let streamed = f(r#"{"stream":true,"stream_options":{"include_usage":true},"temperature":0.0}"#);
        assert_eq!(streamed, Facts { stream: true, include_usage: true, deterministic: true });
        assert!(f(r#"{"seed":0}"#).deterministic);
        assert!(!f(r#"{"seed":null,"temperature":0.2}"#).deterministic);
        // Only the top level's members count.
        assert_eq!(f(r#"{"x":{"stream":true,"temperature":0},"include_usage":true}"#), Facts::default());
        assert!(!f(r#"{"stream_options":{"include_usage":false}}"#).include_usage);
    }

    #[test]
    fn the_memo_agrees_with_a_fresh_walk() {
        let memo = Memo::default();
        for body in [r#"{"a":1,"stream":true}"#, r#"{ "stream" : true, "a" : 1.0 }"#] {
            for _ in 0..2 {
                let fresh = analyze(body.as_bytes(), &[], true).unwrap();
                assert_eq!(memo.analyze(body.as_bytes(), 1, &[], true).unwrap(), fresh);
            }
        }
        // The endpoint is part of the memo's key: the same bytes elsewhere are walked anew.
        let other = memo.analyze(br#"{"a":1,"stream":true}"#, 2, &[], false).unwrap();
        assert_eq!(other, analyze(br#"{"a":1,"stream":true}"#, &[], false).unwrap());
        assert!(memo.analyze(b"[1]", 1, &[], true).is_err());
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_refused() {
        for bad in ["", "[1]", "{\"a\":", "{} x", "\"s\""] {
            assert!(canonical_hash(bad.as_bytes(), &[], false).is_err(), "{bad}");
        }
    }
}
