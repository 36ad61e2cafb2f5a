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

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use xxhash_rust::xxh3::{Xxh3, xxh3_128_with_seed};

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
        let body = canonical_hash(body, ignored, convertible)?;
        let mut h = Xxh3::new();
        h.update(&(scope.len() as u64).to_le_bytes());
        h.update(scope.as_bytes());
        h.update(&(endpoint.len() as u64).to_le_bytes());
        h.update(endpoint.as_bytes());
        h.update(&body.to_le_bytes());
        Ok(CacheKey(h.digest128()))
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
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = Top { ignored, skip_stream };
    let h = de.deserialize_map(top).map_err(NotJson)?;
    de.end().map_err(NotJson)?;
    Ok(h)
}

fn leaf(tag: u64, bytes: &[u8]) -> u128 {
    xxh3_128_with_seed(bytes, tag)
}

fn int(v: i128) -> u128 {
    leaf(INT, &v.to_le_bytes())
}

fn pair(key: u128, value: u128) -> u128 {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&key.to_le_bytes());
    bytes[16..].copy_from_slice(&value.to_le_bytes());
    leaf(PAIR, &bytes)
}

/// A member name: hashed where it lies (no allocation), or `None` when skipped.
struct KeySeed<F>(F);

impl<'de, F: Fn(&str) -> bool> DeserializeSeed<'de> for KeySeed<F> {
    type Value = Option<u128>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u128>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<F: Fn(&str) -> bool> Visitor<'_> for KeySeed<F> {
    type Value = Option<u128>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<u128>, E> {
        Ok((!(self.0)(v)).then(|| leaf(STR, v.as_bytes())))
    }
}

/// An object: its members hashed pair by pair and summed (order-free), with
/// the member count. `skip` drops members by name; `skip_null` drops `null` ones.
fn hash_map<'de, A: MapAccess<'de>>(
    mut map: A,
    skip: impl Fn(&str) -> bool,
    skip_null: bool,
) -> Result<u128, A::Error> {
    let null = leaf(NULL, &[]);
    let mut sum = 0u128;
    let mut count = 0u64;
    while let Some(key) = map.next_key_seed(KeySeed(&skip))? {
        let Some(key) = key else {
            map.next_value::<de::IgnoredAny>()?;
            continue;
        };
        let v = map.next_value_seed(Node)?;
        if skip_null && v == null {
            continue;
        }
        sum = sum.wrapping_add(pair(key, v));
        count += 1;
    }
    let mut bytes = [0u8; 24];
    bytes[..16].copy_from_slice(&sum.to_le_bytes());
    bytes[16..].copy_from_slice(&count.to_le_bytes());
    Ok(leaf(MAP, &bytes))
}

/// The top-level object: members may be skipped.
struct Top<'a> {
    ignored: &'a [String],
    skip_stream: bool,
}

impl Top<'_> {
    fn skips(&self, key: &str) -> bool {
        (self.skip_stream && (key == "stream" || key == "stream_options"))
            || self.ignored.iter().any(|i| i == key)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = u128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<u128, A::Error> {
        hash_map(map, |k| self.skips(k), true)
    }
}

/// Any JSON value below the top.
#[derive(Clone, Copy)]
struct Node;

impl<'de> DeserializeSeed<'de> for Node {
    type Value = u128;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u128, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node {
    type Value = u128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<u128, E> {
        Ok(leaf(NULL, &[]))
    }

    fn visit_bool<E>(self, v: bool) -> Result<u128, E> {
        Ok(leaf(if v { TRUE } else { FALSE }, &[]))
    }

    fn visit_i64<E>(self, v: i64) -> Result<u128, E> {
        Ok(int(i128::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<u128, E> {
        Ok(int(i128::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<u128, E> {
        // Integral values hash as integers (1.0 == 1); -0.0 == 0.0.
        if v.fract() == 0.0 && v.abs() < 9.0e18 {
            return Ok(int(v as i128));
        }
        Ok(leaf(FLOAT, &v.to_bits().to_le_bytes()))
    }

    fn visit_str<E>(self, v: &str) -> Result<u128, E> {
        Ok(leaf(STR, v.as_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u128, A::Error> {
        let mut h = Xxh3::with_seed(SEQ);
        while let Some(v) = seq.next_element_seed(Node)? {
            h.update(&v.to_le_bytes());
        }
        Ok(h.digest128())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<u128, A::Error> {
        hash_map(map, |_| false, false)
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
    fn bodies_that_are_not_json_objects_are_refused() {
        for bad in ["", "[1]", "{\"a\":", "{} x", "\"s\""] {
            assert!(canonical_hash(bad.as_bytes(), &[], false).is_err(), "{bad}");
        }
    }
}
