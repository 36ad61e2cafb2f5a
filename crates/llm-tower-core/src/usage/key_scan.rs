//! Which SSE events the meter must parse: a flat scan of an event's keys.
//!
//! A chat stream is mostly text deltas, and a delta carries nothing the
//! report reads (`"finish_reason":null`, `"usage":null`). Parsing each one
//! into a [`Probe`](super::dialect::Probe) cost about as much as everything
//! else the stack does per event; this scan looks at each `:`, `[` and `\`
//! of the event once (one SIMD `memchr3` pass, no allocation, no tree) and
//! answers "maybe" whenever a key the probe reads holds a value that could
//! change the report. It may say "maybe" for an event that changes nothing
//! (the parse then finds nothing); it never says "no" for one that would
//! (`tests.rs`: a property test against the parse).
//!
//! It used to run one substring search per key name (seven passes over the
//! event): a third of the bare proxy's extra instructions for a stream.

/// Whether `data` (one event's JSON) may change a usage report: it has a
/// non-null `usage`, `finish_reason`, `stop_reason` or `error`, a `status`
/// that ends a response, a `type` that ends a stream or names an error, or
/// a `\u` escape (a key spelled with escapes is not matched by name), is not
/// an object or holds an array of non-objects (not read here: parsed to be
/// sure).
pub(crate) fn may_report(data: &[u8]) -> bool {
    if skip_ws(data).first() != Some(&b'{') {
        // Not an object (the probe also reads a struct from an array): parse.
        return true;
    }
    memchr::memchr3_iter(b':', b'[', b'\\', data).any(|at| {
        let rest = &data[at + 1..];
        match data[at] {
            b'\\' => rest.first() == Some(&b'u'),
            // The probe also reads a struct from an array, field by field
            // (`{"message":["message_stop"]}`): an array of anything but
            // objects is parsed (logprobs' byte lists, and a `[` inside a
            // string, are).
            b'[' => !matches!(skip_ws(rest).first(), Some(b'{' | b']')),
            // A colon: the key before it, if it is one the probe reads. A
            // JSON string cannot hold `"usage"` with both quotes unescaped,
            // so a name between two quotes is a string token; followed by a
            // colon, a key (or, in a key that itself holds escaped quotes, a
            // harmless "maybe"). A colon inside a string is looked at too and
            // is rarely after such a name.
            _ => key_before(&data[..at]).is_some_and(|name| key_reports(name, skip_ws(rest))),
        }
    })
}

/// The name the probe reads that `head` (the bytes before a colon) ends
/// with, quoted, whitespace after it allowed.
fn key_before(head: &[u8]) -> Option<&'static [u8]> {
    let n = head.iter().rev().take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')).count();
    let quoted = head[..head.len() - n].strip_suffix(b"\"")?;
    let names: &[&'static [u8]] = match quoted.last()? {
        b'e' => &[b"usage", b"type"],
        b'n' => &[b"finish_reason", b"stop_reason"],
        b'r' => &[b"error"],
        b's' => &[b"status"],
        _ => return None,
    };
    names.iter().copied().find(|name| quoted.strip_suffix(*name).and_then(|h| h.last()) == Some(&b'"'))
}

/// Whether `key` holding `value` (the bytes from the value on) may change a report.
fn key_reports(key: &[u8], value: &[u8]) -> bool {
    if value.starts_with(b"null") {
        return false;
    }
    match key {
        b"usage" | b"finish_reason" | b"stop_reason" | b"error" => true,
        b"status" => starts_with_any(value, &[b"\"completed\"", b"\"incomplete\"", b"\"failed\""]),
        b"type" => starts_with_any(
            value,
            &[
                b"\"message_stop\"",
                b"\"response.completed\"",
                b"\"response.incomplete\"",
                b"\"response.failed\"",
                b"\"error\"",
            ],
        ),
        _ => false,
    }
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')).count();
    &b[n..]
}

fn starts_with_any(value: &[u8], prefixes: &[&[u8]]) -> bool {
    prefixes.iter().any(|p| value.starts_with(p))
}
