//! The response cache in front of a provider: a streamed answer is recorded
//! as it passes, then served as JSON to a plain request and replayed as a
//! stream; 50 identical requests at once make one upstream call.
//!
//! `cargo run -p llm-tower-cache --example cache_hits` (offline: in-process mock).

use std::time::Duration;

use http_body_util::BodyExt;
use llm_tower_cache::{CacheConfig, CacheLayer};
use llm_tower_core::LlmBody;
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{Latency, MockConfig, MockServer};
use tower::{Layer, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    let latency = Latency { headers: Duration::from_millis(50), per_token: Duration::from_millis(2) };
    let mock = MockServer::start(MockConfig { latency, ..Default::default() }).await?;
    let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;
    // The default strategy caches requests with one right answer (temperature 0 or a seed).
    let cache = CacheLayer::new(CacheConfig::default());
    let svc = cache.layer(LlmHttpService::new(provider));

    let plain = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"What is a token bucket?"}]}"#;
    let streamed = plain.replacen('{', r#"{"stream":true,"stream_options":{"include_usage":true},"#, 1);
    for (what, body) in [("stream", streamed.as_str()), ("json", plain), ("stream", streamed.as_str())] {
        let started = tokio::time::Instant::now();
        let res = svc
            .clone()
            .oneshot(http::Request::post("/v1/chat/completions").body(LlmBody::from(body.to_owned()))?)
            .await?;
        let status = res.headers()["x-llm-cache"].to_str()?.to_owned();
        let bytes = res.into_body().collect().await?.to_bytes();
        println!("{what:<6} {status:<4} {:>5} bytes in {:?}", bytes.len(), started.elapsed());
    }

    let other = plain.replace("token bucket", "circuit breaker");
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (svc, body) = (svc.clone(), other.clone());
            tokio::spawn(async move {
                let res = svc
                    .oneshot(http::Request::post("/v1/chat/completions").body(LlmBody::from(body))?)
                    .await?;
                let hit = res.headers()["x-llm-cache"] == "HIT";
                res.into_body().collect().await?;
                Ok::<_, tower::BoxError>(hit)
            })
        })
        .collect();
    let mut hits = 0;
    for c in calls {
        hits += c.await?? as u32;
    }
    let stats = cache.stats();
    println!("50 identical requests at once: {hits} served from the first one's answer");
    println!("{stats:#?}");
    assert_eq!(mock.stats().llm_requests, 2, "one upstream call per distinct question");
    assert_eq!(hits, 49);
    Ok(())
}
