//! The usage extractor over any JSON or SSE body, cut anywhere: never a
//! panic, and the same report however the body is cut.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};

fn report(kind: BodyKind, parts: &[&[u8]]) -> llm_tower_core::UsageReport {
    let mut x = UsageExtractor::new(kind).with_text();
    for p in parts {
        x.feed(&Bytes::copy_from_slice(p));
    }
    x.finish(StreamEnd::Complete)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let kind = if data[0] % 2 == 0 { BodyKind::Json } else { BodyKind::Sse };
    let body = &data[2..];
    let cut = (data[1] as usize).min(body.len());
    let whole = report(kind, &[body]);
    let split = report(kind, &[&body[..cut], &body[cut..]]);
    assert_eq!(whole, split, "cut at {cut}");
    assert_eq!(whole.bytes, body.len() as u64);
});
