use super::*;
use proptest::prelude::*;

const OPENAI_STREAM: &str = concat!(
    ": keep-alive\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\\nlo\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19,",
    "\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":3}}}\n\n",
    "data: [DONE]\n\n",
);

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":5,\"cache_creation_input_tokens\":1,\"output_tokens\":1}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

const RESPONSES_STREAM: &str = concat!(
    "event: response.created\n",
    "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
    "event: response.completed\n",
    "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\",",
    "\"usage\":{\"input_tokens\":30,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":8,\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":38}}}\n\n",
);

fn run(kind: BodyKind, chunks: &[&[u8]], end: StreamEnd) -> UsageReport {
    let mut x = UsageExtractor::new(kind);
    for c in chunks {
        x.feed(&Bytes::copy_from_slice(c));
    }
    x.finish(end)
}

#[test]
fn a_json_body_read_whole_says_whether_it_is_valid_json() {
    let valid = |chunks: &[&[u8]]| run(BodyKind::Json, chunks, StreamEnd::Complete).json_valid;
    assert_eq!(valid(&[b"{\"usage\":{\"prompt_tokens\":1,", b"\"completion_tokens\":2}}"]), Some(true));
    assert_eq!(valid(&[b"[1, 2]"]), Some(true), "valid JSON of another shape");
    assert_eq!(valid(&[b"{\"choices\":[{\"mess"]), Some(false), "cut");
    assert_eq!(valid(&[]), Some(false), "empty");
    assert_eq!(run(BodyKind::Json, &[b"{}"], StreamEnd::EndedEarly).json_valid, None, "not read to its end");
    assert_eq!(run(BodyKind::Sse, &[b"data: {}\n\n"], StreamEnd::Complete).json_valid, None);
}

#[test]
fn openai_stream() {
    let r = run(BodyKind::Sse, &[OPENAI_STREAM.as_bytes()], StreamEnd::Complete);
    assert_eq!(r.usage, Some(Usage { input: 12, output: 7, cached_input: 4, reasoning: 3 }));
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.end, StreamEnd::Complete);
    assert_eq!(r.bytes, OPENAI_STREAM.len() as u64);
}

#[test]
fn anthropic_stream_folds_cache_counts_into_input() {
    let r = run(BodyKind::Sse, &[ANTHROPIC_STREAM.as_bytes()], StreamEnd::Complete);
    assert_eq!(r.usage, Some(Usage { input: 26, output: 9, cached_input: 5, reasoning: 0 }));
    assert_eq!(r.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!(r.end, StreamEnd::Complete);
}

#[test]
fn responses_stream() {
    let r = run(BodyKind::Sse, &[RESPONSES_STREAM.as_bytes()], StreamEnd::Complete);
    assert_eq!(r.usage, Some(Usage { input: 30, output: 8, cached_input: 10, reasoning: 2 }));
    assert_eq!(r.finish_reason.as_deref(), Some("completed"));
    assert_eq!(r.end, StreamEnd::Complete);
}

#[test]
fn json_bodies_of_each_shape() {
    let openai = br#"{"id":"c","choices":[{"index":0,"message":{"content":"x"},"finish_reason":"length"}],
        "usage":{"prompt_tokens":5,"completion_tokens":16,"total_tokens":21}}"#;
    let r = run(BodyKind::Json, &[&openai[..10], &openai[10..]], StreamEnd::Complete);
    assert_eq!(r.usage.unwrap().output, 16);
    assert_eq!(r.finish_reason.as_deref(), Some("length"));

    let anthropic = br#"{"type":"message","stop_reason":"max_tokens","content":[{"type":"text","text":"x"}],
        "usage":{"input_tokens":7,"output_tokens":3,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}"#;
    let r = run(BodyKind::Json, &[anthropic], StreamEnd::Complete);
    assert_eq!(r.usage, Some(Usage { input: 7, output: 3, cached_input: 0, reasoning: 0 }));
    assert_eq!(r.finish_reason.as_deref(), Some("max_tokens"));

    let responses =
        br#"{"object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},
        "usage":{"input_tokens":4,"output_tokens":2}}"#;
    let r = run(BodyKind::Json, &[responses], StreamEnd::Complete);
    assert_eq!(r.finish_reason.as_deref(), Some("max_output_tokens"));

    let embeddings = br#"{"object":"list","data":[],"usage":{"prompt_tokens":9,"total_tokens":9}}"#;
    let r = run(BodyKind::Json, &[embeddings], StreamEnd::Complete);
    assert_eq!(r.usage, Some(Usage { input: 9, ..Default::default() }));
}

fn text_of(kind: BodyKind, body: &str) -> (UsageReport, String) {
    let mut x = UsageExtractor::new(kind).with_text();
    // Byte by byte: text spanning chunk boundaries is still whole.
    for b in body.as_bytes().chunks(7) {
        x.feed(&Bytes::copy_from_slice(b));
    }
    x.finish_with_text(StreamEnd::Complete)
}

/// `s` with every event or body part that reports usage taken out: the
/// text is read only when a body reports none.
fn without_usage(s: &str) -> String {
    s.replace(",\"usage\":null", "")
        .split("\n\n")
        .filter(|ev| !ev.contains("\"usage\""))
        .map(|ev| format!("{ev}\n\n"))
        .collect()
}

#[test]
fn collects_generated_text_of_each_shape() {
    assert_eq!(text_of(BodyKind::Sse, &without_usage(OPENAI_STREAM)).1, "Hel\nlo");
    assert_eq!(text_of(BodyKind::Sse, &without_usage(ANTHROPIC_STREAM)).1, "Hi");
    assert_eq!(text_of(BodyKind::Sse, &without_usage(RESPONSES_STREAM)).1, "Hi");
    let tools = concat!(
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(text_of(BodyKind::Sse, tools).1, "get{\"a\":1}");
    let json = r#"{"choices":[{"message":{"content":"one"}},{"message":{"content":null}}]}"#;
    assert_eq!(text_of(BodyKind::Json, json).1, "one");
    let anthropic =
        r#"{"type":"message","content":[{"type":"text","text":"a"},{"type":"tool_use","input":{}}]}"#;
    assert_eq!(text_of(BodyKind::Json, anthropic).1, "a");
    let responses = r#"{"object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"r"}]}]}"#;
    assert_eq!(text_of(BodyKind::Json, responses).1, "r");
    // Not asked: nothing collected.
    let mut x = UsageExtractor::new(BodyKind::Sse);
    x.feed(&Bytes::from(without_usage(OPENAI_STREAM)));
    assert_eq!(x.finish_with_text(StreamEnd::Complete).1, "");
}

#[test]
fn text_is_read_only_for_a_body_without_usage() {
    for (kind, body) in [(BodyKind::Sse, OPENAI_STREAM), (BodyKind::Sse, ANTHROPIC_STREAM)] {
        let (r, text) = text_of(kind, body);
        assert!(r.usage.is_some());
        assert_eq!(text, "", "usage reported: no text");
    }
    let json =
        r#"{"choices":[{"message":{"content":"one"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
    assert_eq!(text_of(BodyKind::Json, json).1, "");
}

#[test]
fn a_long_stream_without_usage_keeps_all_its_text_within_the_bound() {
    // Far past the 64 KiB of events kept at a time: every delta is still counted.
    let ev = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ab\"},\"finish_reason\":null}]}\n\n";
    let n = 5_000;
    let body = format!("{}data: [DONE]\n\n", ev.repeat(n));
    let mut x = UsageExtractor::new(BodyKind::Sse).with_text();
    for part in body.as_bytes().chunks(4096) {
        x.feed(&Bytes::copy_from_slice(part));
        assert!(x.acc_kept_bytes() <= 64 * 1024 + ev.len());
    }
    let (r, text) = x.finish_with_text(StreamEnd::Complete);
    assert_eq!(r.end, StreamEnd::Complete);
    assert_eq!(text.len(), 2 * n);
}

#[test]
fn odd_shapes_still_give_their_text() {
    let odd = r#"{"choices":[{"message":{"content":[{"type":"text","text":"x"}],
        "tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]},"finish_reason":"tool_calls"}],
        "content":"plain","output":7}"#;
    let (r, text) = text_of(BodyKind::Json, odd);
    assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(text, "f");
}

#[test]
fn unexpected_shapes_never_cost_the_usage() {
    // Ollama sends tool arguments as an object; some servers send content as
    // parts or a bare string. Usage is still read.
    let odd = r#"{"choices":[{"message":{"content":[{"type":"text","text":"x"}],
        "tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]},"finish_reason":"tool_calls"}],
        "content":"plain","output":7,"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
    let r = run(BodyKind::Json, &[odd.as_bytes()], StreamEnd::Complete);
    assert_eq!(r.usage, Some(Usage { input: 3, output: 2, ..Default::default() }));
    assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
}

#[test]
fn the_key_scan_parses_the_events_that_report() {
    use super::key_scan::may_report;
    for ev in [
        &br#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}"#[..],
        br#"{"choices":[],"usage":{"prompt_tokens":1}}"#,
        br#"{"type":"message_stop"}"#,
        br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#,
        br#"{"type":"response.completed","response":{"status":"completed"}}"#,
        br#"{"error":{"message":"overloaded"}}"#,
        br#"{"choices":[{"delta":{"content":"a \" b"},"finish_reason" : "length"}]}"#,
        br#"{"fin\u0069sh_reason":"stop"}"#,
    ] {
        assert!(may_report(ev), "{}", String::from_utf8_lossy(ev));
    }
    for ev in [
        &br#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#
            [..],
        br#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"\"usage\": 1"}}"#,
        br#"{"type":"response.created","response":{"status":"in_progress","usage":null}}"#,
    ] {
        assert!(!may_report(ev), "{}", String::from_utf8_lossy(ev));
    }
}
#[test]
fn malformed_json_reports_no_usage() {
    let r = run(BodyKind::Json, &[b"{\"usage\": {\"prompt_tok"], StreamEnd::Complete);
    assert_eq!(r.usage, None);
}

#[test]
fn truncated_stream_is_ended_early_and_keeps_partial_usage() {
    let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: content_block_delta").unwrap()];
    let r = run(BodyKind::Sse, &[cut.as_bytes()], StreamEnd::Complete);
    assert_eq!(r.end, StreamEnd::EndedEarly);
    assert_eq!(r.usage.unwrap().input, 26);
    let r = run(BodyKind::Sse, &[cut.as_bytes()], StreamEnd::Failed);
    assert_eq!(r.end, StreamEnd::Failed);
}

#[test]
fn error_events_are_reported() {
    let s = b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
    assert_eq!(run(BodyKind::Sse, &[s], StreamEnd::Complete).error.as_deref(), Some("overloaded"));
    let a = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    assert!(run(BodyKind::Sse, &[a], StreamEnd::Complete).error.is_some());
}

/// A JSON value built from the keys and values the probe reads, and others.
fn event_json() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "usage",
        "finish_reason",
        "stop_reason",
        "error",
        "status",
        "type",
        "delta",
        "choices",
        "message",
        "response",
        "content",
        "text",
        "id",
        "incomplete_details",
        "fin\\u0069sh_reason",
        // Near the names the scan matches (a prefix, one more letter, a shared start).
        "usages",
        "types",
        "stat",
        "stop",
        "errors",
        "subtype",
        "prompt_tokens",
        "output_tokens",
    ]);
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("1".to_owned()),
        Just("true".to_owned()),
        prop::sample::select(vec![
            "\"stop\"",
            "\"completed\"",
            "\"in_progress\"",
            "\"message_stop\"",
            "\"error\"",
            "\"response.completed\"",
            "\"content_block_delta\"",
            "\"a \\\" b\"",
            "\"usage\"",
            "\"\\\\\"",
            "\"x\\\":\\\"\"",
        ])
        .prop_map(str::to_owned),
    ];
    // Whitespace may stand on either side of the colon.
    let sep = prop::sample::select(vec![":", ": ", " : ", "\n:\t", "\r\n :"]);
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec((key.clone(), sep.clone(), inner.clone()), 0..4).prop_map(|kv| {
                let parts: Vec<String> =
                    kv.into_iter().map(|(k, sep, v)| format!("\"{k}\"{sep}{v}")).collect();
                format!("{{{}}}", parts.join(","))
            }),
            prop::collection::vec(inner, 0..3).prop_map(|v| format!("[{}]", v.join(","))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]
    /// The key scan never skips an event whose parse would change the report.
    #[test]
    fn the_key_scan_skips_only_what_changes_nothing(ev in event_json()) {
        if !super::key_scan::may_report(ev.as_bytes()) {
            prop_assert!(super::extractor::parse_changes_nothing(ev.as_bytes()), "{}", ev);
        }
    }
}

proptest! {
    /// Every way of cutting a stream into chunks gives the same report.
    #[test]
    fn split_invariance(
        which in 0usize..3,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        crlf in any::<bool>(),
    ) {
        let base = [OPENAI_STREAM, ANTHROPIC_STREAM, RESPONSES_STREAM][which];
        let text = if crlf { base.replace('\n', "\r\n") } else { base.to_owned() };
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&bytes[last..p]);
            last = p;
        }
        chunks.push(&bytes[last..]);
        let whole = run(BodyKind::Sse, &[bytes], StreamEnd::Complete);
        let split = run(BodyKind::Sse, &chunks, StreamEnd::Complete);
        prop_assert!(whole.usage.is_some());
        prop_assert_eq!(split, whole);
    }
}
