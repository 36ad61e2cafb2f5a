use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;

use super::*;

#[derive(Default, Clone)]
struct Log(Arc<Mutex<Vec<String>>>);

struct Obs {
    name: &'static str,
    log: Log,
    usage: bool,
    estimate: Option<u64>,
}

impl BodyObserver for Obs {
    fn wants_usage(&self) -> Option<BodyKind> {
        self.usage.then_some(BodyKind::Sse)
    }
    fn on_data(&mut self, d: &Bytes) {
        self.log.0.lock().unwrap().push(format!("{} data {}", self.name, d.len()));
    }
    fn on_end(self: Box<Self>, end: &mut BodyEnd) {
        let input = end.report.as_ref().and_then(|r| r.usage).map(|u| u.input);
        self.log.0.lock().unwrap().push(format!("{} end {:?} {:?}", self.name, end.end, input));
        if let (Some(e), Some(r)) = (self.estimate, end.report.as_mut()) {
            r.usage.get_or_insert_with(Default::default).input = e;
        }
    }
}

fn stream(parts: Vec<Result<&'static str, &'static str>>) -> LlmResponseBody {
    LlmResponseBody::new(crate::peek::tests::chunks(&parts))
}

fn obs(name: &'static str, log: &Log, usage: bool) -> Obs {
    Obs { name, log: log.clone(), usage, estimate: None }
}

#[tokio::test]
async fn an_llm_response_body_is_not_boxed_twice() {
    let inner = LlmResponseBody::full("abc");
    let again = LlmResponseBody::new(inner);
    assert!(matches!(again.source, Source::Full(_)));
    let boxed = LlmResponseBody::new(http_body_util::Full::new(Bytes::from("abc")));
    assert!(matches!(boxed.source, Source::Boxed(_)));
    assert_eq!(boxed.collect().await.unwrap().to_bytes(), "abc");
}

#[tokio::test]
async fn observers_see_every_byte_once_in_order_and_usage_is_read_once() {
    let log = Log::default();
    const ONE: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\n";
    const TWO: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
    let mut body = stream(vec![Ok(ONE), Ok(TWO)]);
    body.observe(obs("a", &log, true));
    body.observe(Obs { estimate: Some(99), ..obs("b", &log, true) });
    body.observe(obs("c", &log, true));
    let out = body.collect().await.unwrap().to_bytes();
    assert!(out.ends_with(b"data: [DONE]\n\n"));
    let log = log.0.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            format!("a data {}", ONE.len()),
            format!("b data {}", ONE.len()),
            format!("c data {}", ONE.len()),
            format!("a data {}", TWO.len()),
            format!("b data {}", TWO.len()),
            format!("c data {}", TWO.len()),
            "a end Complete Some(3)".into(),
            "b end Complete Some(3)".into(),
            // A later observer sees what an earlier one filled in.
            "c end Complete Some(99)".into(),
        ]
    );
}

#[tokio::test]
async fn a_dropped_body_tells_its_observers_it_ended_early() {
    let log = Log::default();
    let mut body = stream(vec![Ok("data: {}\n\n"), Ok("data: {}\n\n")]);
    body.observe(obs("a", &log, false));
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: {}\n\n");
    drop(body);
    assert_eq!(log.0.lock().unwrap().last().unwrap(), "a end EndedEarly None");
}

#[tokio::test]
async fn a_guarded_stream_that_fails_ends_with_an_error_event_after_a_blank_line() {
    let log = Log::default();
    let mut body = stream(vec![Ok("data: {\"partial"), Err("reset")]);
    body.guard_sse();
    body.observe(obs("a", &log, false));
    let out = body.collect().await.expect("a guarded stream does not fail").to_bytes();
    assert!(out.starts_with(b"data: {\"partial\n\nevent: error\ndata: {\"error\":"), "{out:?}");
    assert_eq!(log.0.lock().unwrap().last().unwrap(), "a end Failed None");
    // Unguarded, the error reaches the caller.
    let err = stream(vec![Ok("data: {}\n\n"), Err("reset")]).collect().await.unwrap_err();
    assert_eq!(err.to_string(), "reset");
}

#[tokio::test]
async fn usage_only_events_are_stripped_for_the_caller_but_metered() {
    let log = Log::default();
    let mut body = stream(vec![
        Ok("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"us"),
        Ok("age\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n"),
        Ok("data: [DONE]\n\n"),
    ]);
    body.strip_usage_only_events();
    body.observe(obs("a", &log, true));
    let out = body.collect().await.unwrap().to_bytes();
    assert_eq!(out, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n");
    assert_eq!(log.0.lock().unwrap().last().unwrap(), "a end Complete Some(5)");
}

#[tokio::test]
async fn the_end_is_reported_when_the_source_says_it_ended_without_another_poll() {
    let log = Log::default();
    let mut body = LlmResponseBody::full("{}");
    body.observe(obs("a", &log, false));
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "{}");
    assert!(body.is_end_stream());
    assert_eq!(log.0.lock().unwrap().last().unwrap(), "a end Complete None");
}

/// The stripped stream is the same however the upstream cut it into chunks
/// (one byte at a time, at every boundary, whole), with LF and CRLF events,
/// and the usage-only event anywhere.
#[tokio::test]
async fn usage_only_events_are_stripped_however_the_stream_is_chunked() {
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}";
    let delta = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}";
    for eol in ["\n", "\r\n"] {
        let ev = |line: &str| format!("{line}{eol}{eol}");
        // Leaked: the test stream's chunks are 'static.
        let whole: &'static str = [ev(delta), ev(delta), ev(usage), ev("data: [DONE]")].concat().leak();
        let expected = [ev(delta), ev(delta), ev("data: [DONE]")].concat();
        for size in [1, 2, 3, 7, 40, 57, 58, 59, 200, whole.len()] {
            let chunks: Vec<Result<&str, &str>> =
                whole.as_bytes().chunks(size).map(|c| Ok(std::str::from_utf8(c).expect("ASCII"))).collect();
            let mut body = stream(chunks);
            body.strip_usage_only_events();
            let out = body.collect().await.unwrap().to_bytes();
            assert_eq!(out, expected.as_bytes(), "chunks of {size}, eol {eol:?}");
        }
    }
}
