//! A tokens-per-minute limit in front of a provider: each request reserves
//! its estimate (input + `max_tokens`), the real usage read from the answer
//! is refunded or charged, and a request that does not fit is refused at once
//! with `retry_after` (or, in `Mode::Wait`, queued). The requests-per-minute
//! limit is taken in the same decision: a refusal spends neither.
//!
//! `cargo run -p llm-tower-ratelimit --example tokens_per_minute` (offline: in-process mock).

use http_body_util::BodyExt;
use llm_tower_core::{LlmBody, RateLimited};
use llm_tower_http::{LlmHttpService, Provider};
use llm_tower_mock::{MockConfig, MockServer};
use llm_tower_ratelimit::{Limits, RateLimitLayer};
use tower::{Layer, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    let mock = MockServer::start(MockConfig::default()).await?;
    let provider = Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;
    // 1,000 tokens and 100 requests a minute. Each request below asks for up
    // to 200 output tokens: about 215 reserved, about 31 really used.
    let limiter = RateLimitLayer::new(Limits::default().requests_per_minute(100).tokens_per_minute(1_000));
    let svc = limiter.layer(LlmHttpService::new(provider));
    let body = r#"{"model":"gpt-4o-mini","max_tokens":200,"messages":[{"role":"user","content":"hello"}]}"#;

    let send = |i: usize| {
        let svc = svc.clone();
        async move {
            let req = http::Request::post("/v1/chat/completions").body(LlmBody::from(body))?;
            match svc.oneshot(req).await {
                Ok(res) => {
                    let left = res.headers()["x-ratelimit-remaining-tokens"].to_str()?.to_owned();
                    // Reading the body to its end settles the reservation with the real usage.
                    res.into_body().collect().await?;
                    println!("request {i:>2}: sent ({left} tokens left after its reservation)");
                    Ok::<_, tower::BoxError>(true)
                }
                Err(e) => {
                    let limited = e.downcast_ref::<RateLimited>().ok_or(e.to_string())?;
                    println!(
                        "request {i:>2}: refused by {}, retry after {:?}",
                        limited.limit, limited.retry_after
                    );
                    Ok(false)
                }
            }
        }
    };
    // Eight at once: their reservations overlap, so only about four fit.
    let burst: Vec<_> = (1..=8).map(|i| tokio::spawn(send(i))).collect();
    let mut first = 0;
    for b in burst {
        first += b.await?? as usize;
    }
    // One by one afterwards: each answer refunds what it did not use, so all fit.
    let mut later = 0;
    for i in 9..=16 {
        later += send(i).await? as usize;
    }
    println!("at once: {first} of 8 sent; one by one: {later} of 8 sent");
    println!("{:#?}", limiter.stats());
    assert!((1..8).contains(&first), "the burst was partly refused: {first}");
    assert_eq!(later, 8, "refunds made room");
    assert_eq!(
        mock.stats().llm_requests,
        (first + later) as u64,
        "a refused request never reached the provider"
    );
    Ok(())
}
