use super::*;

#[test]
fn dollars_show_every_digit_that_matters() {
    let shown = |m: u64| Usd(m).to_string();
    assert_eq!(shown(0), "0.00");
    assert_eq!(shown(50_000_000), "50.00");
    assert_eq!(shown(1_230_000), "1.23");
    assert_eq!(shown(1_000), "0.001");
    assert_eq!(shown(585), "0.000585");
    assert_eq!(shown(2_500_001), "2.500001");
}

fn info(e: tower::BoxError) -> ErrorInfo {
    ErrorInfo::from_error(&*e)
}

#[test]
fn statuses() {
    let d = Duration::from_secs(1);
    let cases: Vec<(tower::BoxError, u16, &str)> = vec![
        (Box::new(InvalidRequest::new("x")), 400, "invalid_request_error"),
        (Box::new(ModelNotFound::new("x")), 404, "invalid_request_error"),
        (Box::new(PayloadTooLarge { limit: 1 }), 413, "invalid_request_error"),
        (Box::new(Timeout { phase: TimeoutPhase::Connect, after: d }), 504, "timeout_error"),
        (Box::new(tower::timeout::error::Elapsed::new()), 504, "timeout_error"),
        (Box::new(Connect::new("h:1", "refused")), 502, "api_error"),
        (Box::new(Transport::new("reset")), 502, "api_error"),
        (Box::new(StreamAborted::new("reset")), 502, "api_error"),
        (Box::new(Upstream::from_body(StatusCode::SERVICE_UNAVAILABLE, Some(d), b"")), 503, "api_error"),
        (Box::new(Upstream::from_body(StatusCode::TOO_MANY_REQUESTS, None, b"")), 429, "rate_limit_error"),
        ("anything".into(), 500, "server_error"),
    ];
    for (e, status, kind) in cases {
        let i = info(e);
        assert_eq!((i.status.as_u16(), i.kind), (status, kind), "{i:?}");
    }
}

#[test]
fn finds_known_errors_in_the_source_chain() {
    #[derive(Debug)]
    struct Wrapper(Timeout);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }
    let e = Wrapper(Timeout { phase: TimeoutPhase::Total, after: Duration::from_secs(1) });
    assert_eq!(info(Box::new(e)).status, StatusCode::GATEWAY_TIMEOUT);
}

#[test]
fn response_carries_retry_after_and_json() {
    let e = Upstream::from_body(StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(7)), b"nope");
    let res = error_response(&e);
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "7");
    let body: ErrorBody = serde_json::from_slice(res.body().as_bytes()).unwrap();
    assert_eq!(body.error.kind, "api_error");
}

#[test]
fn connect_error_message_names_host_but_not_cause_details() {
    let e = Connect::new("10.0.0.1:443", "tls: secret-ish internal detail");
    let res = error_response(&e);
    let text = String::from_utf8_lossy(res.body().as_bytes()).into_owned();
    assert!(text.contains("10.0.0.1:443"));
    assert!(!text.contains("internal detail"));
}
