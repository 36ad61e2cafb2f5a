//! Parsing JSON bodies: [`from_bytes`].
//!
//! `serde_json::from_slice` checks UTF-8 string by string: every borrowed or
//! copied string pays a call to `str::from_utf8` of its own, a fixed cost that
//! dominates for the many short strings of an LLM request or answer (`role`,
//! `model`, `finish_reason`, every key kept in a struct). Checking the whole
//! body once, with the standard library's word-at-a-time ASCII path, and then
//! parsing it as a `str` (where serde_json checks nothing again) took the
//! UTF-8 checks of `benches/stack.rs`'s cache-miss stack from 3,550 to 633
//! instructions a JSON request, 2.9k of its 60.4k (callgrind).

use std::borrow::Cow;

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};

/// Parses `bytes` as JSON into `T`, borrowing from it where `T` borrows.
///
/// Accepts and refuses exactly what `serde_json::from_slice` does, with the
/// same errors: a body that is valid UTF-8 is parsed as a `str`, any other is
/// handed to `from_slice` as it is (which then reports, or, in a string it
/// skips, tolerates, the bad bytes as it always has).
///
/// ```
/// #[derive(serde::Deserialize, Debug)]
/// struct Choice<'a> {
///     #[serde(borrow)]
///     finish_reason: Option<&'a str>,
/// }
/// let c: Choice<'_> = llm_tower_core::json::from_bytes(br#"{"finish_reason":"stop","index":0}"#)?;
/// assert_eq!(c.finish_reason, Some("stop"));
/// let err = llm_tower_core::json::from_bytes::<Choice<'_>>(b"{\"finish_reason\":").unwrap_err();
/// assert!(err.is_eof());
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(s) => serde_json::from_str(s),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// The string a JSON value's text is, if it is a string: borrowed from
/// `text` when it has no escapes, decoded otherwise; `None` for any other
/// value (or a malformed string).
///
/// ```
/// use std::borrow::Cow;
/// use llm_tower_core::json::as_str;
/// assert!(matches!(as_str(r#""plain""#), Some(Cow::Borrowed("plain"))));
/// assert_eq!(as_str(r#""say \"hi\"""#).as_deref(), Some(r#"say "hi""#));
/// assert_eq!(as_str("[1]"), None);
/// ```
pub fn as_str(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// Deserializes an optional string borrowed from the input where it has no
/// escapes (serde's own `Option<Cow<str>>` always allocates, `borrow` or not):
/// for `#[serde(borrow, default, deserialize_with = "...")]` on an
/// `Option<Cow<'a, str>>` field.
///
/// ```
/// use std::borrow::Cow;
/// #[derive(serde::Deserialize)]
/// struct View<'a> {
///     #[serde(borrow, default, deserialize_with = "llm_tower_core::json::borrowed_str")]
///     role: Option<Cow<'a, str>>,
/// }
/// let plain: View<'_> = serde_json::from_str(r#"{"role":"user"}"#).unwrap();
/// assert!(matches!(plain.role, Some(Cow::Borrowed("user"))));
/// let escaped: View<'_> = serde_json::from_str(r#"{"role":"us\u0065r"}"#).unwrap();
/// assert!(matches!(escaped.role, Some(Cow::Owned(ref s)) if s == "user"));
/// ```
pub fn borrowed_str<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Str;
    impl<'de> Visitor<'de> for Str {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(Str).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::from_bytes;

    /// The same value or the same error as `from_slice`, on valid JSON,
    /// invalid JSON and bytes that are not UTF-8 (inside and outside strings).
    #[test]
    fn agrees_with_from_slice() {
        let cases: &[&[u8]] = &[
            br#"{"a":"b","c":[1,2.5,null,true],"d":{"e":"\u00e9\n"}}"#,
            "{\"k\":\"caf\u{e9} \u{1f600}\"}".as_bytes(),
            b"{\"a\":",
            b"{\"a\":1}}",
            b"{\"a\":\"\xff\"}",
            b"\xff{}",
            b"",
        ];
        for case in cases {
            let ours = from_bytes::<Value>(case).map_err(|e| e.to_string());
            let theirs = serde_json::from_slice::<Value>(case).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(case));
        }
        // A string serde skips keeps its old tolerance of bad bytes.
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Only {
            a: u32,
        }
        let skipped = b"{\"junk\":\"\xff\",\"a\":7}";
        assert_eq!(from_bytes::<Only>(skipped).ok(), serde_json::from_slice::<Only>(skipped).ok());
        assert_eq!(from_bytes::<Only>(skipped).ok(), Some(Only { a: 7 }));
    }
}
