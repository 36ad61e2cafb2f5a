//! `RequestInfo::parse` on any body, for every endpoint: a typed result,
//! never a panic; a parse that succeeds is deterministic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_tower_core::{Api, RequestInfo};

fuzz_target!(|data: &[u8]| {
    for path in ["/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/messages", "/other"] {
        let api = Api::from_path(path);
        if let Ok(a) = RequestInfo::parse(api, data) {
            let b = RequestInfo::parse(api, data).expect("deterministic");
            assert_eq!(a, b);
            assert_eq!(a.body_bytes, data.len());
            if let Some(out) = llm_tower_core::info::rewrite_model(data, "m2") {
                let again = RequestInfo::parse(api, &out).expect("a rewritten body still parses");
                assert_eq!(&*again.model, "m2");
            }
        }
    }
});
