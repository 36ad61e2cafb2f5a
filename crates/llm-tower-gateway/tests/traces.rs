//! Trace export against an in-process OTLP/HTTP receiver: one server span per
//! request, a client span per upstream attempt, W3C context continued from
//! the client and sent upstream.
#![cfg(feature = "otlp")]

mod common;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use llm_tower::mock::{Fault, FaultPlan, MockConfig, MockServer};
use serde_json::Value;

use common::*;

/// An OTLP/HTTP collector on loopback: keeps every export body.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(serde_json::from_slice(&body).expect("OTLP JSON"));
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// Every span exported, flattened.
fn spans_of(exports: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for e in exports {
        for rs in e["resourceSpans"].as_array().unwrap() {
            assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "llm-tower-gateway");
            for ss in rs["scopeSpans"].as_array().unwrap() {
                out.extend(ss["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    out
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let a = span["attributes"].as_array()?.iter().find(|a| a["key"] == key)?;
    a["value"].as_object()?.values().next()
}

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(start_paused = true)]
async fn a_request_and_each_attempt_are_spans_of_the_clients_trace() {
    let (otlp, got) = receiver().await;
    let faults = FaultPlan::Script { faults: vec![Fault::status(503), Fault::Ok] };
    let mock = MockServer::start(MockConfig { faults, ..Default::default() }).await.unwrap();
    let toml = config_with(
        &mock,
        "[providers.retry]\nbase_ms = 1\njitter = 'none'\n[providers.circuit_breaker]\nenabled = false\n",
        &format!("[traces]\notlp_endpoint = '{otlp}'\n"),
    );
    let h = start(&toml).await;
    let traceparent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let res = h.send(Method::POST, "/v1/chat/completions", CHAT, &[("traceparent", &traceparent)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();
    // A client that does not record its trace: nothing exported, the context still sent on.
    let unsampled = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00");
    let res = h.send(Method::POST, "/v1/chat/completions", CHAT, &[("traceparent", &unsampled)]).await;
    res.into_body().collect().await.unwrap();
    h.stop().await; // flushes the exporter

    let spans = spans_of(&got.lock().unwrap());
    assert_eq!(spans.len(), 3, "one request span and two attempts: {spans:#?}");
    let server = spans.iter().find(|s| s["kind"] == 2).expect("a server span");
    let mut attempts: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 3).collect();
    attempts.sort_by_key(|s| attr(s, "llm_tower.attempt").and_then(Value::as_str).map(str::to_owned));
    assert_eq!(server["traceId"], PARENT_TRACE);
    assert_eq!(server["parentSpanId"], PARENT_SPAN, "a child of the client's span");
    assert_eq!(server["name"], "chat gpt-4o-mini");
    assert_eq!(attr(server, "gen_ai.request.model").unwrap(), "gpt-4o-mini");
    assert_eq!(attr(server, "gen_ai.provider.name").unwrap(), "up");
    assert_eq!(attr(server, "http.response.status_code").unwrap(), "200");
    assert_eq!(attr(server, "gen_ai.usage.output_tokens").unwrap(), "16");
    assert_eq!(server["status"]["code"], 0);

    for (n, a) in attempts.iter().enumerate() {
        assert_eq!(a["traceId"], PARENT_TRACE);
        assert_eq!(a["parentSpanId"], server["spanId"], "attempts are children of the request span");
        assert_eq!(attr(a, "llm_tower.attempt").unwrap(), &(n + 1).to_string());
        assert_eq!(attr(a, "gen_ai.provider.name").unwrap(), "up");
    }
    assert_eq!(attr(attempts[0], "http.response.status_code").unwrap(), "503");
    assert_eq!(attempts[0]["status"]["code"], 2, "the failed attempt is an error");
    assert_eq!(attr(attempts[1], "http.response.status_code").unwrap(), "200");
    assert_eq!(
        attr(attempts[1], "gen_ai.usage.input_tokens").unwrap(),
        attr(server, "gen_ai.usage.input_tokens").unwrap()
    );

    // Upstream saw each attempt's own context, and the unsampled trace's.
    let sent: Vec<String> =
        mock.requests().iter().filter_map(|r| r.header("traceparent").map(str::to_owned)).collect();
    let want: Vec<String> =
        attempts.iter().map(|a| format!("00-{PARENT_TRACE}-{}-01", a["spanId"].as_str().unwrap())).collect();
    assert_eq!(sent[..2], want[..]);
    assert!(sent[2].starts_with(&format!("00-{PARENT_TRACE}-")) && sent[2].ends_with("-00"), "{}", sent[2]);
}

#[tokio::test(start_paused = true)]
async fn without_a_client_context_each_request_starts_a_trace_and_a_ratio_of_zero_records_none() {
    let (otlp, got) = receiver().await;
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let h = start(&config_for(
        &mock,
        &format!("[traces]\notlp_endpoint = '{otlp}/'\nservice_name = 'llm-tower-gateway'\n"),
    ))
    .await;
    for _ in 0..2 {
        let (status, _, _) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
        assert_eq!(status, StatusCode::OK);
    }
    h.stop().await;
    let spans = spans_of(&got.lock().unwrap());
    let servers: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 2).collect();
    assert_eq!(servers.len(), 2);
    assert_ne!(servers[0]["traceId"], servers[1]["traceId"], "a new trace per request");
    assert!(servers.iter().all(|s| s.get("parentSpanId").is_none()), "roots");

    let (otlp, got) = receiver().await;
    let h =
        start(&config_for(&mock, &format!("[traces]\notlp_endpoint = '{otlp}'\nsample_ratio = 0.0\n"))).await;
    let (status, _, _) = h.call(Method::POST, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, StatusCode::OK);
    h.stop().await;
    assert!(spans_of(&got.lock().unwrap()).is_empty());
    let last = mock.requests().last().unwrap().header("traceparent").unwrap().to_owned();
    assert!(last.ends_with("-00"), "an unrecorded trace still propagates: {last}");
}
