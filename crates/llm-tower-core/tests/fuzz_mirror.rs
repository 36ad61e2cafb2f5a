//! Stable-Rust mirrors of the cargo-fuzz targets in `fuzz/` (the ones that
//! matter most), as proptests, so `cargo test` covers them on every run.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use llm_tower_core::sse::{EventSizeLimit, SseParser};
use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};
use llm_tower_core::{Api, RequestInfo};
use proptest::prelude::*;

/// Bytes that look like an event stream often enough to reach deep states.
fn sse_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"event: x\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b": c\n".to_vec()),
        Just(b"{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}".to_vec()),
        Just(b"{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}".to_vec()),
        Just(b"[DONE]".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

type Events = Vec<(Option<String>, Vec<u8>)>;

fn events(max: usize, chunks: &[&[u8]]) -> (Events, bool) {
    let mut p = SseParser::with_max_event_bytes(max);
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, |e| out.push((e.event.map(str::to_owned), e.data.to_vec())));
    }
    (out, p.overflowed())
}

proptest! {
    #[test]
    fn sse_split_anywhere_gives_the_same_events(body in sse_like(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(body.len() + 1);
        let (whole, over_a) = events(64, &[&body]);
        let (split, over_b) = events(64, &[&body[..cut], &body[cut..]]);
        if !over_a && !over_b {
            prop_assert_eq!(whole, split);
        }
    }

    #[test]
    fn an_event_the_limit_passes_is_never_over_it(body in sse_like(), cut in any::<prop::sample::Index>()) {
        // Whenever the size limit lets the stream through, no event the
        // parser assembled was larger than the limit.
        let cut = cut.index(body.len() + 1);
        let mut limit = EventSizeLimit::new(64);
        let passed = limit.check(&body[..cut]).and_then(|()| limit.check(&body[cut..])).is_ok();
        if passed {
            let (evs, over) = events(1 << 20, &[&body]);
            prop_assert!(!over);
            for (_, d) in evs {
                prop_assert!(d.len() <= 64);
            }
        }
    }

    #[test]
    fn usage_reports_do_not_depend_on_chunking(
        body in sse_like(),
        cut in any::<prop::sample::Index>(),
        json in any::<bool>(),
    ) {
        let kind = if json { BodyKind::Json } else { BodyKind::Sse };
        let cut = cut.index(body.len() + 1);
        let report = |parts: &[&[u8]]| {
            let mut x = UsageExtractor::new(kind).with_text();
            for p in parts {
                x.feed(&Bytes::copy_from_slice(p));
            }
            x.finish(StreamEnd::Complete)
        };
        prop_assert_eq!(report(&[&body]), report(&[&body[..cut], &body[cut..]]));
    }

    #[test]
    fn request_info_parse_never_panics(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "\\{\"model\":\"[a-z]{0,8}\",\"max_tokens\":[0-9]{1,12},\"n\":-?[0-9]{1,11},\"stream\":(true|false|1),\"messages\":(\\[\\]|\"hi\"|null)\\}"
            .prop_map(String::into_bytes),
    ]) {
        for api in [Api::ChatCompletions, Api::from_path("/v1/embeddings"), Api::from_path("/v1/messages")] {
            if let Ok(a) = RequestInfo::parse(api, &body) {
                prop_assert_eq!(a.body_bytes, body.len());
            }
        }
    }

    #[test]
    fn retry_hints_never_panic(text in prop_oneof![
        "[0-9]{0,25}(\\.[0-9]{0,12})?",
        "([0-9]{1,20}(h|m|s|ms)){0,5}",
        "\\PC{0,40}",
    ]) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let _ = llm_tower_core::hint::parse_retry_after(&text, now);
        let _ = llm_tower_core::hint::parse_retry_after_ms(&text);
        let _ = llm_tower_core::hint::parse_reset(&text);
    }
}
