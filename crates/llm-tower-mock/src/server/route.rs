//! Routing: which endpoint a request is for, and the plain (non-LLM) answers.

use super::*;

pub(super) enum Route {
    Chat {
        deployment: Option<String>,
    },
    Embeddings {
        deployment: Option<String>,
    },
    Messages,
    /// Gemini: the model from the path, and whether it is the streaming method.
    Gemini {
        model: String,
        stream: bool,
    },
    Models,
    Health,
    Stats,
    Counters,
    SetFaults,
    ResetStats,
    Grpc,
    NotFound,
}

impl Route {
    fn of(method: &Method, path: &str) -> Route {
        let azure = |suffix: &str| {
            path.strip_prefix("/openai/deployments/")
                .and_then(|r| r.strip_suffix(suffix))
                .filter(|d| !d.is_empty() && !d.contains('/'))
                .map(str::to_owned)
        };
        let gemini = || {
            let rest = path.strip_prefix("/v1beta/models/").or_else(|| path.strip_prefix("/v1/models/"))?;
            let (model, method) = rest.split_once(':')?;
            let stream = match method {
                "generateContent" => false,
                "streamGenerateContent" => true,
                _ => return None,
            };
            (!model.is_empty() && !model.contains('/'))
                .then(|| Route::Gemini { model: model.to_owned(), stream })
        };
        match (method, path) {
            (&Method::POST, _) if path.contains(':') => gemini().unwrap_or(Route::NotFound),
            (&Method::POST, "/v1/chat/completions") => Route::Chat { deployment: None },
            (&Method::POST, "/v1/embeddings") => Route::Embeddings { deployment: None },
            (&Method::POST, "/v1/messages") => Route::Messages,
            (&Method::GET, "/v1/models") => Route::Models,
            (&Method::GET, "/health") => Route::Health,
            (&Method::GET, "/mock/stats") => Route::Stats,
            (&Method::GET, "/mock/counters") => Route::Counters,
            (&Method::POST, "/mock/faults") => Route::SetFaults,
            (&Method::POST, "/mock/reset") => Route::ResetStats,
            (&Method::POST, _) if azure("/chat/completions").is_some() => {
                Route::Chat { deployment: azure("/chat/completions") }
            }
            (&Method::POST, _) if azure("/embeddings").is_some() => {
                Route::Embeddings { deployment: azure("/embeddings") }
            }
            _ => Route::NotFound,
        }
    }
}

pub(super) type Res = Response<MockBody>;

pub(super) fn json_response(status: StatusCode, value: &Value) -> Res {
    let mut res = Response::new(MockBody::full(serde_json::to_vec(value).unwrap_or_default()));
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

pub(super) fn openai_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Res {
    json_response(status, &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
}

pub(super) async fn handle(
    state: Arc<State>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Res, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "unreadable body",
            ));
        }
    };
    let n = state.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let is_grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let route = if is_grpc { Route::Grpc } else { Route::of(&parts.method, parts.uri.path()) };
    let is_llm =
        matches!(route, Route::Chat { .. } | Route::Embeddings { .. } | Route::Messages | Route::Grpc);
    // Counted out when the head is ready, or when the caller leaves first.
    let _in_flight = is_llm.then(|| InFlight::enter(&state));
    {
        let mut m = state.lock();
        m.stats.requests += 1;
        if is_llm {
            m.stats.llm_requests += 1;
            let now = state.in_flight.load(Ordering::Relaxed);
            m.stats.max_in_flight = m.stats.max_in_flight.max(now);
        }
        if !matches!(route, Route::Stats) {
            let entry = RecordedRequest {
                n,
                method: parts.method.to_string(),
                path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
                body: String::from_utf8_lossy(&body).into_owned(),
                fault: None,
            };
            if m.log.len() >= state.config.log_capacity.max(1) {
                m.log.pop_front();
            }
            m.log.push_back(entry);
        }
    }
    let res = match route {
        Route::Models => {
            let data: Vec<Value> = state
                .config
                .models
                .iter()
                .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000u64, "owned_by": "llm-tower-mock"}))
                .collect();
            json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
        }
        Route::Health => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Route::Stats => {
            let m = state.lock();
            json_response(StatusCode::OK, &json!({"stats": m.stats, "requests": m.log}))
        }
        // The counters alone: cheap enough to poll every few milliseconds.
        Route::Counters => json_response(StatusCode::OK, &json!(state.lock().stats)),
        Route::SetFaults => match serde_json::from_slice::<FaultPlan>(&body) {
            Ok(plan) => {
                state.set_faults(plan);
                json_response(StatusCode::OK, &json!({"ok": true}))
            }
            Err(e) => openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", None, &e.to_string()),
        },
        Route::ResetStats => {
            let mut m = state.lock();
            m.stats = MockStats::default();
            m.log.clear();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        Route::NotFound => {
            openai_error(StatusCode::NOT_FOUND, "invalid_request_error", None, "unknown route")
        }
        Route::Chat { deployment } => llm(&state, &ctl, n, Kind::Chat, deployment, &parts, &body).await,
        Route::Embeddings { deployment } => {
            llm(&state, &ctl, n, Kind::Embeddings, deployment, &parts, &body).await
        }
        Route::Messages => llm(&state, &ctl, n, Kind::Messages, None, &parts, &body).await,
        Route::Gemini { model, stream } => {
            let kind = if stream { Kind::GeminiStream } else { Kind::Gemini };
            llm(&state, &ctl, n, kind, Some(model), &parts, &body).await
        }
        Route::Grpc => grpc(&state, n, &body).await,
    };
    *state.lock().stats.by_status.entry(res.status().as_u16()).or_default() += 1;
    Ok(res)
}

/// One LLM request between its arrival and its response head.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A minimal gRPC unary endpoint on any path: it echoes the request message.
/// Faults map to gRPC statuses: 429 and 503 become a trailers-only
/// `UNAVAILABLE` (14), other statuses an `INTERNAL` (13) in the trailers;
/// reset and hang behave as for HTTP.
pub(super) async fn grpc(state: &Arc<State>, n: u64, body: &Bytes) -> Res {
    let fault = state.next_fault();
    if fault != Fault::Ok {
        let mut m = state.lock();
        *m.stats.faults.entry(fault_name(&fault)).or_default() += 1;
        if let Some(entry) = m.log.iter_mut().rev().find(|e| e.n == n) {
            entry.fault = Some(fault_name(&fault));
        }
    }
    sleep(state.config.latency.headers).await;
    let head = |code: u32| {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(code));
        h
    };
    let (data, code) = match fault {
        Fault::Hang | Fault::Reset => return std::future::pending().await,
        Fault::Status { status: 429 | 503, .. } => {
            // Trailers-only: the status is in the head.
            let mut res = Response::new(MockBody::full(Bytes::new()));
            *res.headers_mut() = head(14);
            res.headers_mut().insert("grpc-message", HeaderValue::from_static("unavailable"));
            return res;
        }
        Fault::Status { .. } | Fault::LargeError { .. } | Fault::HtmlError { .. } | Fault::MalformedJson => {
            (Bytes::new(), 13)
        }
        _ => (body.clone(), 0),
    };
    let mut res = Response::new(MockBody::Grpc { data: Some(data), trailers: Some(head(code)) });
    res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    res
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Chat,
    Embeddings,
    Messages,
    /// `generateContent`.
    Gemini,
    /// `streamGenerateContent`.
    GeminiStream,
}

pub(super) fn authorized(expected: &str, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
    let goog = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
    [bearer, x_api_key, api_key, goog].into_iter().flatten().any(|k| k == expected)
}

/// Characters of text in a chat/messages request, and its message count.
pub(super) fn prompt_size(req: &Value) -> (usize, usize) {
    fn text_len(v: &Value) -> usize {
        match v {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => parts.iter().map(|p| p.get("text").map_or(0, text_len)).sum(),
            _ => 0,
        }
    }
    if let Some(contents) = req.get("contents").and_then(Value::as_array) {
        // Gemini: contents[].parts[].text, and the system instruction's parts.
        let mut chars: usize = contents.iter().map(|c| c.get("parts").map_or(0, text_len)).sum();
        chars += req.pointer("/systemInstruction/parts").map_or(0, text_len);
        return (chars, contents.len());
    }
    let messages = req.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut chars: usize = messages.iter().map(|m| m.get("content").map_or(0, text_len)).sum();
    chars += req.get("system").map_or(0, text_len);
    (chars, messages.len())
}
