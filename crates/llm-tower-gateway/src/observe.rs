//! What an operator watches: Prometheus `/metrics`, `/health/live` and
//! `/health/ready`, and the per-request metrics the proxy records.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use metrics::{Counter, Gauge, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use llm_tower::config::MetricsAccess;

use crate::admin::admin_refused;
use crate::app::{AppState, json};

/// Upper bounds of the `_seconds` histograms: 1 ms to 2 minutes.
const BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];

/// The process's Prometheus recorder, installed by the first gateway that
/// wants metrics (a process has one global recorder; later gateways share
/// it). `None` when another recorder was installed first (an application
/// embedding the gateway with its own): then `/metrics` says so.
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed: /metrics is not served");
                    None
                }
            }
        })
        .as_ref()
}

/// `GET /metrics`: every counter the layers emit, the gateway's request
/// histograms, and gauges read from the stack's handles at scrape time.
pub(crate) async fn metrics(State(app): State<Arc<AppState>>, req: Request) -> Response {
    if app.metrics == MetricsAccess::Admin {
        if let Some(refused) = admin_refused(&app, req.headers()) {
            return refused;
        }
    }
    let Some(handle) = prometheus() else {
        let body = br#"{"error":{"message":"another metrics recorder is installed in this process","type":"server_error"}}"#;
        return json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from_static(body));
    };
    scrape_gauges(&app);
    let mut res = Response::new(axum::body::Body::from(handle.render()));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    res
}

/// State that lives in the layers' handles, set as gauges when scraped.
fn scrape_gauges(app: &AppState) {
    let llm = &app.llm;
    for p in llm.providers() {
        let provider = p.name.to_string();
        for (key, state) in p.breaker.states() {
            use llm_tower::circuit::CircuitState as C;
            // 0 closed, 1 half open, 2 open (forced states as what they do).
            let v = match state {
                C::Closed | C::ForcedClosed => 0.0,
                C::HalfOpen => 1.0,
                C::Open | C::ForcedOpen => 2.0,
            };
            metrics::gauge!("llm_tower_circuit_state", "provider" => provider.clone(), "key" => key.as_str().to_owned())
                .set(v);
        }
        for k in p.limiter.stats().keys {
            for (limit, quota) in [("requests", k.requests), ("tokens", k.tokens)] {
                if let Some(q) = quota {
                    metrics::gauge!("llm_tower_ratelimit_remaining", "provider" => provider.clone(), "limit" => limit)
                        .set(q.remaining as f64);
                }
            }
        }
    }
    for b in llm.failover().stats() {
        let up = if b.state == llm_tower::failover::Health::Down { 0.0 } else { 1.0 };
        metrics::gauge!("llm_tower_backend_up", "backend" => b.name.clone()).set(up);
        metrics::gauge!("llm_tower_backend_in_flight", "backend" => b.name).set(b.in_flight as f64);
    }
    crate::keys::scrape(app);
    if let Some(cache) = llm.cache() {
        let s = cache.stats();
        metrics::gauge!("llm_tower_cache_hit_ratio").set(s.hit_ratio);
        metrics::gauge!("llm_tower_cache_bytes").set(s.bytes as f64);
    }
}

/// `GET /health/live`: the process is up and serving.
pub(crate) async fn live() -> Response {
    json(StatusCode::OK, Bytes::from_static(br#"{"status":"live"}"#))
}

/// `GET /health/ready`: 200 when every route has a backend that could serve
/// it now; 503 naming the routes that have none, and 503 while the gateway
/// drains for shutdown (so a load balancer stops sending).
pub(crate) async fn ready(State(app): State<Arc<AppState>>) -> Response {
    if app.draining.load(Ordering::Acquire) {
        return json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from_static(br#"{"status":"draining"}"#));
    }
    let down: Vec<_> = app.llm.failover().readiness().into_iter().filter(|r| !r.is_ready()).collect();
    // A shared Redis: its state is part of the answer; while it is down a
    // `closed` gateway refuses requests, so it is not ready.
    let redis = match &app.redis {
        Some((r, closed)) => Some((r.ping().await.is_ok(), *closed)),
        None => None,
    };
    let redis_blocks = redis.is_some_and(|(up, closed)| !up && closed);
    let redis_json = redis.map(
        |(up, closed)| serde_json::json!({ "up": up, "on_error": if closed { "closed" } else { "local" } }),
    );
    if down.is_empty() && !redis_blocks {
        if redis_json.is_none() {
            return json(StatusCode::OK, Bytes::from_static(br#"{"status":"ready"}"#));
        }
        let body = serde_json::json!({ "status": "ready", "redis": redis_json });
        return json(StatusCode::OK, Bytes::from(body.to_string()));
    }
    let body = serde_json::json!({ "status": "unavailable", "routes": down, "redis": redis_json });
    json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
}

/// The APIs the proxy labels requests with (any other path: `other`).
const APIS: [&str; 5] = ["chat_completions", "embeddings", "responses", "messages", "other"];

/// The statuses the gateway answers with, as static labels (any other as text).
const KNOWN_STATUSES: [&str; 13] =
    ["200", "400", "401", "403", "404", "405", "408", "413", "429", "500", "502", "503", "504"];

/// The per-request metrics' handles, each registered the first time it is
/// used (so the exposition shows only what happened) and then kept: a
/// request's metrics are atomic updates, with no label list built and no
/// registry lookup per request. Bounded: an API from a fixed set, a served
/// model or `other`, a known status (another status goes through the
/// registry each time). A handle comes from the recorder installed when it
/// is first used: the gateway installs its own before it serves.
pub(crate) struct RequestMetrics {
    in_flight: OnceLock<Gauge>,
    /// Served model name -> its index (0 is `other`). foldhash, as the
    /// failover's routes: fixed keys from the configuration, one lookup a
    /// request by the client's model name.
    models: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    names: Vec<SharedString>,
    /// By `api * names.len() + model`.
    series: Vec<Series>,
}

#[derive(Default)]
struct Series {
    duration: OnceLock<Histogram>,
    first_token: OnceLock<Histogram>,
    by_status: [OnceLock<Counter>; KNOWN_STATUSES.len()],
}

impl RequestMetrics {
    pub(crate) fn new(models: impl IntoIterator<Item = String>) -> Self {
        let mut names = vec![SharedString::const_str("other")];
        let mut index = HashMap::default();
        for m in models {
            let m: Arc<str> = Arc::from(m);
            index.insert(m.clone(), names.len());
            names.push(SharedString::from(m));
        }
        let series = (0..APIS.len() * names.len()).map(|_| Series::default()).collect();
        RequestMetrics { in_flight: OnceLock::new(), models: index, names, series }
    }

    fn in_flight(&self) -> &Gauge {
        self.in_flight.get_or_init(|| metrics::gauge!("llm_tower_requests_in_flight"))
    }
}

/// The labels of one proxied request, as indices into the gateway's
/// [`RequestMetrics`].
pub(crate) struct RequestLabels {
    metrics: Arc<RequestMetrics>,
    api: usize,
    model: usize,
}

impl RequestLabels {
    pub(crate) fn new(metrics: &Arc<RequestMetrics>, path: &str, model: Option<&str>) -> Self {
        let api = match path {
            "/v1/chat/completions" => 0,
            "/v1/embeddings" => 1,
            "/v1/responses" => 2,
            "/v1/messages" => 3,
            _ => 4,
        };
        // A client names any model it likes: only served ones become labels.
        let model = model.and_then(|m| metrics.models.get(m).copied()).unwrap_or(0);
        RequestLabels { metrics: metrics.clone(), api, model }
    }

    fn labels(&self) -> [(&'static str, SharedString); 2] {
        [("api", SharedString::const_str(APIS[self.api])), ("model", self.metrics.names[self.model].clone())]
    }

    fn series(&self) -> &Series {
        &self.metrics.series[self.api * self.metrics.names.len() + self.model]
    }

    /// A request finished with `status` after `duration`.
    pub(crate) fn finished(&self, status: StatusCode, duration: Duration) {
        let series = self.series();
        let code = status.as_str();
        match KNOWN_STATUSES.iter().position(|k| *k == code) {
            Some(i) => series.by_status[i]
                .get_or_init(|| {
                    let [api, model] = self.labels();
                    let status = ("status", SharedString::const_str(KNOWN_STATUSES[i]));
                    metrics::counter!("llm_tower_requests_total", &[api, model, status])
                })
                .increment(1),
            None => {
                let [api, model] = self.labels();
                let status = ("status", SharedString::from(code.to_owned()));
                metrics::counter!("llm_tower_requests_total", &[api, model, status]).increment(1);
            }
        }
        series
            .duration
            .get_or_init(|| metrics::histogram!("llm_tower_request_duration_seconds", &self.labels()))
            .record(duration.as_secs_f64());
    }

    /// A stream's first event reached the client after `after`.
    pub(crate) fn first_token(&self, after: Duration) {
        self.series()
            .first_token
            .get_or_init(|| metrics::histogram!("llm_tower_time_to_first_token_seconds", &self.labels()))
            .record(after.as_secs_f64());
    }
}

/// Counts a request in the in-flight gauge until dropped.
pub(crate) struct InFlight(Gauge);

impl InFlight {
    pub(crate) fn start(metrics: &RequestMetrics) -> Self {
        let gauge = metrics.in_flight().clone();
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
