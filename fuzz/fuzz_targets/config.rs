//! The stack's config from any text, as TOML and as JSON: a config or an
//! error naming where, never a panic; validation of a parsed config never
//! panics either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_tower::config::StackConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for parsed in [StackConfig::from_toml(text), StackConfig::from_json(text)] {
        if let Ok(cfg) = parsed {
            let _ = cfg.validate();
            let _ = cfg.deadline();
        }
    }
});
