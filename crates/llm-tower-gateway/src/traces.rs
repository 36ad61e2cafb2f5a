//! OpenTelemetry trace export (`[traces]`, the `otlp` feature): one server
//! span per gateway request, the HTTP service's client span per upstream
//! attempt (core's `trace`), batched and sent as OTLP/HTTP JSON to a
//! collector, off the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use llm_tower::config::TracesSection;
use llm_tower::core::trace::{AttrValue, FinishedSpan, SpanExporter, SpanKind, TraceContext, Traced, hex};
use llm_tower::core::{BoxError, LlmBody};
use llm_tower::upstream::{HttpClient, LlmHttpService, Provider};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;

/// Spans held for export at most: past it new spans are dropped (counted),
/// never waited for.
const QUEUE: usize = 8192;
/// Spans per export request at most.
const BATCH: usize = 512;
/// How often a partial batch is sent.
const EVERY: Duration = Duration::from_secs(1);

/// The gateway's tracer: decides sampling, starts request spans, exports.
pub(crate) struct Traces {
    exporter: Arc<Otlp>,
    /// New traces recorded when a random 64-bit draw is below this.
    threshold: u64,
    stop: std::sync::Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

struct Otlp {
    tx: mpsc::Sender<FinishedSpan>,
    dropped: AtomicU64,
}

impl SpanExporter for Otlp {
    fn export(&self, span: FinishedSpan) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("llm_tower_trace_spans_dropped_total").increment(1);
        }
    }
}

impl Traces {
    /// Starts the exporter task for `cfg`, sending through `client`.
    pub(crate) fn start(cfg: &TracesSection, client: HttpClient) -> Result<Self, BoxError> {
        let base = format!("{}/v1", cfg.otlp_endpoint.trim_end_matches('/'));
        let mut provider = Provider::openai_compatible("otlp-collector", &base)?;
        for (k, v) in &cfg.headers {
            // Validated: a valid header name and value.
            provider = provider.with_header(k, v.expose());
        }
        let svc = LlmHttpService::with_client(provider, client);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let resource = json!({ "attributes": [attr("service.name", &AttrValue::Str(cfg.service_name.as_str().into()))] });
        let task = tokio::spawn(run(svc, rx, stop_rx, resource));
        tracing::info!(endpoint = %cfg.otlp_endpoint, sample_ratio = cfg.sample_ratio, "traces: OTLP/HTTP export on");
        let threshold =
            if cfg.sample_ratio >= 1.0 { u64::MAX } else { (cfg.sample_ratio * u64::MAX as f64) as u64 };
        Ok(Traces {
            exporter: Arc::new(Otlp { tx, dropped: AtomicU64::new(0) }),
            threshold,
            stop: std::sync::Mutex::new(Some((stop_tx, task))),
        })
    }

    /// The trace context of a request that arrived with `headers`: a child
    /// of the client's `traceparent` (whose flag decides sampling), else a new
    /// trace sampled at the configured ratio.
    pub(crate) fn begin(&self, headers: &http::HeaderMap) -> Request {
        let parent = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
        let context = match parent {
            Some(p) => p.child(),
            None => {
                let mut root = TraceContext::root(true);
                let draw = u64::from_be_bytes(root.trace_id[8..].try_into().expect("8 bytes"));
                root.sampled = draw <= self.threshold;
                root
            }
        };
        Request {
            traced: Traced { context, exporter: self.exporter.clone() },
            parent: parent.map(|p| p.span_id),
            start: llm_tower::core::trace::unix_nanos(),
        }
    }

    /// Sends what is queued and stops the exporter (graceful shutdown).
    pub(crate) async fn shutdown(&self) {
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, task)) = stop {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let dropped = self.exporter.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "trace spans dropped (the export queue was full)");
        }
    }
}

/// One gateway request's span, begun when it arrived.
pub(crate) struct Request {
    pub(crate) traced: Traced,
    parent: Option<[u8; 8]>,
    start: u64,
}

impl Request {
    /// Ends the span with `attributes` (an `error` status when `error` is set).
    pub(crate) fn end(self, name: String, attributes: Vec<(&'static str, AttrValue)>, error: Option<String>) {
        if !self.traced.context.sampled {
            return;
        }
        let mut span =
            FinishedSpan::ended_now(self.traced.context, self.parent, name, SpanKind::Server, self.start);
        span.attributes = attributes;
        span.error = error;
        self.traced.exporter.export(span);
    }
}

async fn run(
    svc: LlmHttpService,
    mut rx: mpsc::Receiver<FinishedSpan>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    resource: Value,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            got = rx.recv() => match got {
                Some(span) => {
                    batch.push(span);
                    if batch.len() < BATCH {
                        continue;
                    }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
            _ = &mut stop => true,
        };
        if stopping {
            while let Ok(span) = rx.try_recv() {
                batch.push(span);
            }
        }
        while !batch.is_empty() {
            let n = batch.len().min(BATCH);
            let chunk: Vec<FinishedSpan> = batch.drain(..n).collect();
            send(&svc, &resource, &chunk).await;
        }
        if stopping {
            return;
        }
    }
}

async fn send(svc: &LlmHttpService, resource: &Value, spans: &[FinishedSpan]) {
    let body = json!({
        "resourceSpans": [{
            "resource": resource,
            "scopeSpans": [{
                "scope": { "name": "llm-tower", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
            }],
        }],
    });
    let req = http::Request::post("/v1/traces")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(LlmBody::from(Bytes::from(body.to_string())));
    let Ok(req) = req else { return };
    match svc.clone().oneshot(req).await {
        Ok(res) if res.status().is_success() => {}
        Ok(res) => tracing::warn!(
            status = res.status().as_u16(),
            spans = spans.len(),
            "the trace collector refused spans"
        ),
        Err(e) => {
            tracing::warn!(error = %e, spans = spans.len(), "could not send spans to the trace collector")
        }
    }
}

fn attr(key: &str, v: &AttrValue) -> Value {
    let value = match v {
        AttrValue::Str(s) => json!({ "stringValue": &**s }),
        // OTLP JSON carries 64-bit integers as strings.
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
        AttrValue::Float(f) => json!({ "doubleValue": f }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
    };
    json!({ "key": key, "value": value })
}

/// A span in OTLP/HTTP JSON (ids as hex, times as decimal strings).
fn span_json(s: &FinishedSpan) -> Value {
    let kind = match s.kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    };
    let mut v = json!({
        "traceId": hex(&s.context.trace_id),
        "spanId": hex(&s.context.span_id),
        "name": s.name,
        "kind": kind,
        "startTimeUnixNano": s.start_unix_nanos.to_string(),
        "endTimeUnixNano": s.end_unix_nanos.max(s.start_unix_nanos).to_string(),
        "attributes": s.attributes.iter().map(|(k, v)| attr(k, v)).collect::<Vec<_>>(),
        "status": match &s.error {
            Some(m) => json!({ "code": 2, "message": m }),
            None => json!({ "code": 0 }),
        },
    });
    if let Some(p) = s.parent {
        v["parentSpanId"] = Value::String(hex(&p));
    }
    v
}

/// The attributes of a gateway request's span, by the GenAI and HTTP
/// semantic conventions; and its name (`chat gpt-4o-mini`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn request_span(
    span: Request,
    method: &http::Method,
    path: &str,
    model: &str,
    provider: &str,
    key: Option<&llm_tower::auth::Identity>,
    status: http::StatusCode,
    report: Option<&llm_tower::core::usage::UsageReport>,
    error: Option<&str>,
) {
    let op = match path {
        "/v1/chat/completions" | "/v1/responses" | "/v1/messages" => "chat",
        "/v1/embeddings" => "embeddings",
        _ => "request",
    };
    let mut attrs: Vec<(&'static str, AttrValue)> = vec![
        ("gen_ai.operation.name", op.into()),
        ("gen_ai.request.model", model.into()),
        ("http.request.method", method.as_str().into()),
        ("url.path", path.into()),
        ("http.response.status_code", status.as_u16().into()),
    ];
    if provider != "-" {
        attrs.push(("gen_ai.provider.name", provider.into()));
    }
    if let Some(k) = key {
        attrs.push(("llm_tower.key", k.to_string().into()));
    }
    if let Some(r) = report {
        if let Some(u) = r.usage {
            attrs.push(("gen_ai.usage.input_tokens", u.input.into()));
            attrs.push(("gen_ai.usage.output_tokens", u.output.into()));
        }
        if let Some(f) = &r.finish_reason {
            attrs.push(("gen_ai.response.finish_reasons", f.as_str().into()));
        }
    }
    let error = error
        .map(str::to_owned)
        .or_else(|| status.is_server_error().then(|| format!("answered {}", status.as_u16())));
    if error.is_some() {
        attrs.push(("error.type", status.as_str().into()));
    }
    span.end(format!("{op} {model}"), attrs, error);
}
