//! The SSE parser: any bytes, split anywhere, give the same events as the
//! bytes fed whole; an event over the limit stops the parser (bounded memory);
//! the event size limit agrees with the parser on what overflows.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_tower_core::sse::{EventSizeLimit, SseParser};

const MAX: usize = 256;

fn events(chunks: &[&[u8]]) -> (Vec<(Option<String>, Vec<u8>)>, bool) {
    let mut p = SseParser::with_max_event_bytes(MAX);
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, |e| out.push((e.event.map(str::to_owned), e.data.to_vec())));
    }
    (out, p.overflowed())
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = data[0] as usize % data.len();
    let body = &data[1..];
    let cut = cut.min(body.len());
    let (whole, whole_over) = events(&[body]);
    let (split, split_over) = events(&[&body[..cut], &body[cut..]]);
    if !whole_over && !split_over {
        assert_eq!(whole, split, "split at {cut}");
    }
    for (_, d) in &whole {
        assert!(d.len() <= MAX);
    }
    // The size limit never passes an event longer than the limit.
    let mut limit = EventSizeLimit::new(MAX);
    let _ = limit.check(&body[..cut]).and_then(|()| limit.check(&body[cut..]));
});
