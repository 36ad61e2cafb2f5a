//! The LLM endpoints: request checks, injected faults, provider-style limits, then the answer.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) async fn llm(
    state: &Arc<State>,
    ctl: &ConnCtl,
    n: u64,
    kind: Kind,
    deployment: Option<String>,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Res {
    let cfg = &state.config;
    let (req, model) = match check_request(cfg, kind, deployment, parts, body) {
        Ok(ok) => ok,
        Err(res) => return res,
    };
    let fault = match injected(state, ctl, n).await {
        Ok(f) => f,
        Err(res) => return res,
    };

    // Sizes: prompt estimate, and planned output.
    let (chars, messages) = match kind {
        Kind::Embeddings => {
            let inputs = match req.get("input") {
                Some(Value::Array(a)) => a.clone(),
                Some(v) => vec![v.clone()],
                None => vec![],
            };
            (inputs.iter().map(|i| i.as_str().map_or(0, |s| s.chars().count())).sum(), 0)
        }
        _ => prompt_size(&req),
    };
    let prompt = if kind == Kind::Embeddings {
        chars.div_ceil(4) as u64
    } else {
        synth::prompt_tokens(chars, messages)
    };
    let cap = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64))
        .or_else(|| req.pointer("/generationConfig/maxOutputTokens").and_then(Value::as_u64));
    let choices = req
        .get("n")
        .or_else(|| req.pointer("/generationConfig/candidateCount"))
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 16) as u32;
    let out_tokens = if kind == Kind::Embeddings {
        0
    } else {
        cap.map_or(cfg.reply_tokens, |c| c.min(u64::from(cfg.reply_tokens)) as u32)
    };
    let truncated = out_tokens < cfg.reply_tokens;

    let cost = (prompt + u64::from(out_tokens) * u64::from(choices)) as f64;
    let limit_headers = match provider_limits(state, cost) {
        Ok(h) => h,
        Err(res) => return res,
    };

    let seed = cfg.seed
        ^ synth::fnv(model.as_bytes())
        ^ synth::fnv(
            req.get("messages").or(req.get("contents")).map(|m| m.to_string()).unwrap_or_default().as_bytes(),
        );
    let stream = kind == Kind::GeminiStream
        || (req.get("stream").and_then(Value::as_bool).unwrap_or(false) && kind != Kind::Embeddings);
    let tool = tools::wanted(kind, &req, n);
    let include_usage =
        req.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let plan = Answer {
        n,
        model,
        seed,
        prompt,
        out_tokens,
        choices,
        finish: if truncated { "length" } else { "stop" },
        include_usage,
        fault,
        latency: cfg.latency,
        tool,
    };

    sleep(cfg.latency.headers).await;
    let mut res = match (kind, stream) {
        (Kind::Embeddings, _) => {
            sleep(plan.fault_delay()).await;
            embeddings(&plan, &req, cfg.embedding_dims)
        }
        (Kind::Chat, false) => plan.json_answer(chat_json(&plan)).await,
        (Kind::Messages, false) => plan.json_answer(messages_json(&plan)).await,
        (Kind::Chat, true) => plan.stream(ChunkCounter(state.clone()), chat_events),
        (Kind::Messages, true) => plan.stream(ChunkCounter(state.clone()), messages_events),
        (Kind::Gemini | Kind::GeminiStream, false) => plan.json_answer(gemini_json(&plan)).await,
        (Kind::Gemini | Kind::GeminiStream, true) => plan.stream(ChunkCounter(state.clone()), gemini_events),
    };
    res.headers_mut().extend(limit_headers);
    res.headers_mut().insert("x-request-id", format!("req_mock_{n}").parse().unwrap());
    res
}

/// Sleeps for `d`, or not at all when it is zero (a zero tokio sleep still
/// waits for the next timer tick, about a millisecond).
pub(super) async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

pub(super) fn fault_name(f: &Fault) -> String {
    match f {
        Fault::Ok => "ok".into(),
        Fault::Status { status, .. } => format!("status_{status}"),
        Fault::HtmlError { status } => format!("html_{status}"),
        Fault::LargeError { status, .. } => format!("large_{status}"),
        Fault::Reset => "reset".into(),
        Fault::Hang => "hang".into(),
        Fault::StreamCut { .. } => "stream_cut".into(),
        Fault::MalformedJson => "malformed_json".into(),
        Fault::SlowBody { .. } => "slow_body".into(),
        Fault::EndlessEvent { .. } => "endless_event".into(),
    }
}

/// The request's JSON and model, or the error a provider would answer.
// The error is the response itself, built once per refused request.
#[allow(clippy::result_large_err)]
fn check_request(
    cfg: &MockConfig,
    kind: Kind,
    deployment: Option<String>,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<(Value, String), Res> {
    if let Some(key) = &cfg.require_key {
        // Gemini also takes the key as `?key=`.
        let in_query = parts.uri.query().is_some_and(|q| q.split('&').any(|kv| kv == format!("key={key}")));
        if !authorized(key, &parts.headers) && !in_query {
            return Err(openai_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Incorrect API key provided.",
            ));
        }
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Err(openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "We could not parse the JSON body of your request.",
            ));
        }
    };
    let gemini = matches!(kind, Kind::Gemini | Kind::GeminiStream);
    if !gemini && deployment.is_some() && !parts.uri.query().unwrap_or("").contains("api-version=") {
        return Err(openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "api-version query parameter is required",
        ));
    }
    if kind == Kind::Messages {
        if !parts.headers.contains_key("anthropic-version") {
            return Err(openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "anthropic-version header is required",
            ));
        }
        if req.get("max_tokens").and_then(Value::as_u64).is_none() {
            return Err(openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "max_tokens: Field required",
            ));
        }
    }
    let model = deployment.or_else(|| req.get("model").and_then(Value::as_str).map(str::to_owned));
    let Some(model) = model else {
        return Err(openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "you must provide a model parameter",
        ));
    };
    if !cfg.models.is_empty() && !cfg.models.contains(&model) {
        return Err(openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            &format!("The model `{model}` does not exist or you do not have access to it."),
        ));
    }

    Ok((req, model))
}

/// Draws the next fault of the plan and records it; the answer when the fault
/// replaces the whole response (a status, an error page, a reset, a hang).
// The error is the response itself, built once per refused request.
#[allow(clippy::result_large_err)]
async fn injected(state: &Arc<State>, ctl: &ConnCtl, n: u64) -> Result<Fault, Res> {
    let fault = state.next_fault();
    if fault != Fault::Ok {
        let mut m = state.lock();
        let name = fault_name(&fault);
        *m.stats.faults.entry(name.clone()).or_default() += 1;
        if let Some(entry) = m.log.iter_mut().rev().find(|e| e.n == n) {
            entry.fault = Some(name);
        }
    }
    match fault {
        Fault::Status { status, retry_after, code, headers } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = match (status.as_u16(), code.as_deref()) {
                (_, Some("insufficient_quota")) => "insufficient_quota",
                (429, _) => "rate_limit_error",
                (400..=499, _) => "invalid_request_error",
                _ => "server_error",
            };
            let mut res = openai_error(status, kind, code.as_deref(), "injected fault");
            if let Some(s) = retry_after {
                res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(s));
            }
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) =
                    (http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v))
                {
                    res.headers_mut().insert(k, v);
                }
            }
            return Err(res);
        }
        Fault::LargeError { status, code, bytes } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = serde_json::json!({"error": {
                "code": code,
                "type": if status.as_u16() == 429 { "rate_limit_error" } else { "invalid_request_error" },
                "message": "x".repeat(bytes.min(64 << 20)),
            }});
            let mut res = Response::new(MockBody::full(serde_json::to_vec(&body).unwrap_or_default()));
            *res.status_mut() = status;
            res.headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Err(res);
        }
        Fault::HtmlError { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let page = format!("<html><body><h1>{status}</h1><p>upstream unavailable</p></body></html>");
            let mut res = Response::new(MockBody::full(page));
            *res.status_mut() = status;
            res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return Err(res);
        }
        Fault::Reset => {
            ctl.kill();
            return std::future::pending().await;
        }
        Fault::Hang => return std::future::pending().await,
        _ => {}
    }
    Ok(fault)
}

/// Provider-style RPM and TPM buckets: the `x-ratelimit-*` headers for an
/// answer of `cost` tokens, or a 429 with `retry-after` when over.
// The error is the response itself, built once per refused request.
#[allow(clippy::result_large_err)]
fn provider_limits(state: &State, cost: f64) -> Result<HeaderMap, Res> {
    let mut limit_headers = HeaderMap::new();
    {
        let mut m = state.lock();
        let m = &mut *m;
        if let (Some(rpm), Some(tpm)) = (m.rpm.as_mut(), m.tpm.as_mut()) {
            let now = Instant::now();
            let wait = rpm.wait_for(1.0, now).max(tpm.wait_for(cost, now));
            if wait.is_zero() {
                rpm.take(1.0);
                tpm.take(cost);
            }
            let h = &mut limit_headers;
            h.insert("x-ratelimit-limit-requests", HeaderValue::from(rpm.limit()));
            h.insert("x-ratelimit-remaining-requests", HeaderValue::from(rpm.remaining()));
            h.insert("x-ratelimit-reset-requests", synth::go_duration(rpm.reset_in()).parse().unwrap());
            h.insert("x-ratelimit-limit-tokens", HeaderValue::from(tpm.limit()));
            h.insert("x-ratelimit-remaining-tokens", HeaderValue::from(tpm.remaining()));
            h.insert("x-ratelimit-reset-tokens", synth::go_duration(tpm.reset_in()).parse().unwrap());
            if !wait.is_zero() {
                m.stats.rate_limited += 1;

                let mut res = openai_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    Some("rate_limit_exceeded"),
                    "Rate limit reached for requests or tokens per minute.",
                );
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                res.headers_mut().insert("retry-after-ms", HeaderValue::from(wait.as_millis() as u64));
                res.headers_mut().extend(limit_headers);
                return Err(res);
            }
        }
    }

    Ok(limit_headers)
}
