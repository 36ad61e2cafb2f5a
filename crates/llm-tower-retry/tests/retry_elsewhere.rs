//! `RetryElsewhere`: a request another backend can serve is not retried here.

use llm_tower_core::{LlmBody, RetryElsewhere};
use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
use llm_tower_retry::{RetryLayer, RetryPolicy};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_marked_request_returns_its_first_failure_unmarked_ones_retry() {
    let faults = FaultPlan::Always { fault: Fault::status_retry_after(503, 1) };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let provider =
        llm_tower_http::Provider::openai_compatible("mock", &format!("{}/v1", mock.url())).unwrap();
    let retry = RetryLayer::new(RetryPolicy::default());
    let svc =
        ServiceBuilder::new().layer(retry.clone()).service(llm_tower_http::LlmHttpService::new(provider));
    let req = || {
        http::Request::post("/v1/chat/completions")
            .body(LlmBody::from(r#"{"model":"gpt-4o-mini","messages":[]}"#))
            .unwrap()
    };

    let mut marked = req();
    marked.extensions_mut().insert(RetryElsewhere);
    let t0 = tokio::time::Instant::now();
    assert_eq!(svc.clone().oneshot(marked).await.unwrap().status(), 503);
    assert!(t0.elapsed() < std::time::Duration::from_secs(1), "the hint was not waited out");
    assert_eq!(mock.stats().llm_requests, 1);
    let s = retry.stats();
    assert_eq!((s.retries, s.elsewhere_refusals), (0, 1));

    // Unmarked: retried after the hint, as before.
    assert_eq!(svc.oneshot(req()).await.unwrap().status(), 503);
    assert!(mock.stats().llm_requests > 2, "{}", mock.stats().llm_requests);
    assert!(retry.stats().retries >= 1);
}
