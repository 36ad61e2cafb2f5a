//! Retry hints from any header values: `retry-after` (seconds or HTTP date),
//! `retry-after-ms`, `x-ratelimit-reset-*`: typed errors, never a panic.
#![no_main]
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use llm_tower_core::hint::{parse_reset, parse_retry_after, parse_retry_after_ms, retry_hint};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let _ = parse_retry_after(text, now);
    let _ = parse_retry_after_ms(text);
    let _ = parse_reset(text);
    if let Ok(v) = http::HeaderValue::from_str(text) {
        let mut h = http::HeaderMap::new();
        for name in ["retry-after", "retry-after-ms", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
            h.insert(name, v.clone());
        }
        h.insert("x-ratelimit-remaining-requests", http::HeaderValue::from_static("0"));
        let _ = retry_hint(&h, now);
    }
});
