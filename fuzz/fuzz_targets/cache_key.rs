//! The cache's canonical key over any body: a typed error for non-JSON,
//! never a panic; the same bytes always give the same key, and the scope and
//! endpoint are part of it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_tower_cache::CacheKey;

fuzz_target!(|data: &[u8]| {
    let ignored = vec!["user".to_owned(), "metadata".to_owned()];
    let Ok(a) = CacheKey::of("t", "/v1/chat/completions", data, &ignored) else { return };
    let b = CacheKey::of("t", "/v1/chat/completions", data, &ignored).expect("deterministic");
    assert_eq!(a, b);
    let other = CacheKey::of("u", "/v1/chat/completions", data, &ignored).expect("same body");
    assert_ne!(a, other, "tenants never share a key");
});
