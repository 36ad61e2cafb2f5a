//! Which SSE events the meter must parse: a flat scan of an event's keys.
//!
//! A chat stream is mostly text deltas, and a delta carries nothing the
//! report reads (`"finish_reason":null`, `"usage":null`). Parsing each one
//! into a [`Probe`](super::dialect::Probe) cost about as much as everything
//! else the stack does per event; this scan looks for the quoted key names, `[`
//! and `\u` (SIMD substring searches, no allocation, no tree) and answers "maybe"
//! whenever a key the probe reads holds a value that could change the report. It may say "maybe" for
//! an event that changes nothing (the parse then finds nothing); it never
//! says "no" for one that would (`tests.rs`: a property test against the
//! parse).

/// Whether `data` (one event's JSON) may change a usage report: it has a
/// non-null `usage`, `finish_reason`, `stop_reason` or `error`, a `status`
/// that ends a response, a `type` that ends a stream or names an error, or
/// a key written with escapes, is not an object or holds an array of
/// non-objects (not read here: parsed to be sure).
pub(crate) fn may_report(data: &[u8]) -> bool {
    if skip_ws(data).first() != Some(&b'{') {
        // Not an object (the probe also reads a struct from an array): parse.
        return true;
    }
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    /// The quoted names the probe reads, and `\u` (a key spelled with
    /// escapes is not matched by them: parsed).
    static FINDERS: LazyLock<[Finder<'static>; 7]> = LazyLock::new(|| {
        [
            &b"\"usage\""[..],
            b"\"finish_reason\"",
            b"\"stop_reason\"",
            b"\"error\"",
            b"\"status\"",
            b"\"type\"",
            b"\\u",
        ]
        .map(Finder::new)
    });
    let [names @ .., escape] = &*FINDERS;
    if escape.find(data).is_some() {
        return true;
    }
    // The probe also reads a struct from an array, field by field
    // (`{"message":["message_stop"]}`): an array of anything but objects is
    // parsed (logprobs' byte lists, and a `[` inside a string, are).
    if memchr::memchr_iter(b'[', data).any(|i| !matches!(skip_ws(&data[i + 1..]).first(), Some(b'{' | b']')))
    {
        return true;
    }
    // A JSON string cannot hold `"usage"` with both quotes unescaped, so a
    // match is a string token; followed by a colon, a key (or, in a key that
    // itself holds escaped quotes, a harmless "maybe").
    for f in names {
        let name = f.needle();
        for at in f.find_iter(data) {
            if let Some(value) = skip_ws(&data[at + name.len()..]).strip_prefix(b":")
                && key_reports(&name[1..name.len() - 1], skip_ws(value))
            {
                return true;
            }
        }
    }
    false
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
