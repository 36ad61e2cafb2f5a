//! The response future: the head, a non-streamed answer read whole under its limits, errors mapped to typed ones.

use super::*;

/// Counts a request in flight, and holds its host's request slot, until the
/// response body ends or is dropped.
pub(crate) struct InFlight {
    counters: Arc<HostCounters>,
    /// Released when the call ends: the host's request slot (readiness).
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl InFlight {
    pub(crate) fn new(counters: Arc<HostCounters>, slot: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { counters, _slot: slot }
    }
    pub(crate) fn fail(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) struct Ctx {
    /// When the head must have arrived (the earlier of headers and total).
    pub(crate) deadline: Option<Instant>,
    pub(crate) guard: InFlight,
    pub(crate) phase: TimeoutPhase,
    pub(crate) after: Option<Duration>,
    pub(crate) total_deadline: Option<Instant>,
    /// The request's [`Deadline`]: a non-streamed answer must be read by then.
    pub(crate) caller_deadline: Option<Instant>,
    pub(crate) timeouts: Timeouts,
    pub(crate) authority: Authority,
    pub(crate) served_by: Arc<str>,
    pub(crate) served_model: Option<Arc<str>>,
    pub(crate) streamed_request: bool,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_event_bytes: usize,
    /// The answer's translation back to OpenAI chat (another dialect).
    pub(crate) translation: Option<Translation>,
}

pin_project! {
    /// Response future of [`LlmHttpService`].
    pub struct ResponseFuture {
        #[pin]
        pub(crate) state: State,
        // The attempt's span, when the request is traced.
        pub(crate) span: Option<Box<super::span::AttemptSpan>>,
    }
}

pin_project! {
    #[project = StateProj]
    pub(crate) enum State {
        Waiting {
            #[pin]
            inner: hyper_util::client::legacy::ResponseFuture,
            // One timer per call, created only if the head is not ready at
            // once, then handed to the body: each new tokio timer can wake the
            // timer driver, which measured ~6 µs per request on a
            // multi-threaded runtime; one boxed timer re-armed lazily does not.
            timer: Option<Pin<Box<Sleep>>>,
            ctx: Option<Ctx>,
        },
        // A non-streamed answer being read whole (boxed: the cold path of
        // the future's size).
        Reading {
            read: Option<Box<Reading>>,
        },
        Failed {
            err: Option<BoxError>,
        },
    }
}

/// A non-streamed answer being collected before its head is returned.
pub(crate) struct Reading {
    pub(crate) parts: http::response::Parts,
    pub(crate) body: Streaming,
    /// The first chunk (most answers are one), then the rest appended.
    pub(crate) first: Option<Bytes>,
    pub(crate) rest: BytesMut,
    pub(crate) len: usize,
    pub(crate) limit: usize,
    /// A 2xx JSON answer: checked to parse before it is returned.
    pub(crate) check_json: bool,
    /// Translated back to OpenAI chat (the answer, or an error body).
    pub(crate) translation: Option<Translation>,
}

impl Reading {
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<LlmResponseBody>, BoxError>> {
        loop {
            match ready!(self.body.poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    self.len = self.len.saturating_add(data.len());
                    if self.len > self.limit {
                        self.body.fail();
                        return Poll::Ready(Err(BadResponse::new(BadResponseKind::TooLarge {
                            limit: self.limit,
                        })
                        .into()));
                    }
                    match self.first.as_ref() {
                        None if self.rest.is_empty() => self.first = Some(data),
                        _ => {
                            if let Some(first) = self.first.take() {
                                self.rest.reserve(self.len);
                                self.rest.extend_from_slice(&first);
                            }
                            self.rest.extend_from_slice(&data);
                        }
                    }
                }
                Some(Err(e)) => {
                    // A timeout keeps its type (retryable, and the deadline
                    // logic of a retry layer reads its phase); a broken body
                    // is an answer cut before anything was passed on.
                    if e.is::<Timeout>() {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Err(BadResponse::cut(e).into()));
                }
                None => {
                    let bytes = match self.first.take() {
                        Some(b) => b,
                        None => std::mem::take(&mut self.rest).freeze(),
                    };
                    let mut parts = std::mem::replace(&mut self.parts, Response::new(()).into_parts().0);
                    let bytes = match &self.translation {
                        None => bytes,
                        Some(t) if parts.status.is_success() => match t.answer(&bytes) {
                            Some(b) => Bytes::from(b),
                            None => {
                                return Poll::Ready(Err(
                                    BadResponse::new(BadResponseKind::InvalidJson).into()
                                ));
                            }
                        },
                        Some(t) => Bytes::from(t.error(parts.status.as_u16(), &bytes)),
                    };
                    if self.translation.is_some() {
                        parts.headers.insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                    } else if self.check_json
                        && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err()
                    {
                        return Poll::Ready(Err(BadResponse::new(BadResponseKind::InvalidJson).into()));
                    }
                    parts.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
                    let body = LlmResponseBody::full(bytes);
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
            }
        }
    }
}

/// Whether an answer is a stream (passed on as it comes) rather than one
/// document (read whole first).
pub(crate) fn is_streamed(headers: &http::HeaderMap, streamed_request: bool) -> bool {
    if streamed_request {
        return true;
    }
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        let ct = ct.trim_start();
        ct.starts_with("text/event-stream") || ct.starts_with("application/x-ndjson")
    })
}

pub(crate) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"))
}

pub(crate) fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"))
}

impl Future for ResponseFuture {
    type Output = Result<Response<LlmResponseBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut out = ready!(self.as_mut().poll_answer(cx));
        if let Some(span) = self.as_mut().project().span.take() {
            match &mut out {
                Ok(res) => span.answered(res),
                Err(e) => (*span).failed(e),
            }
        }
        Poll::Ready(out)
    }
}

impl ResponseFuture {
    fn poll_answer(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<LlmResponseBody>, BoxError>> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Failed { err } => {
                    return Poll::Ready(Err(err.take().unwrap_or_else(|| "polled after completion".into())));
                }
                StateProj::Reading { read } => {
                    let r = read.as_mut().expect("polled after completion");
                    let out = ready!(r.poll_read(cx));
                    *read = None;
                    return Poll::Ready(out);
                }
                StateProj::Waiting { inner, timer, ctx } => {
                    let outcome = match inner.poll(cx) {
                        Poll::Ready(r) => r,
                        Poll::Pending => {
                            let Some(deadline) = ctx.as_ref().and_then(|c| c.deadline) else {
                                return Poll::Pending;
                            };
                            let t = timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                            if t.as_mut().poll(cx).is_ready() {
                                let c = ctx.take().expect("polled after completion");
                                c.guard.fail();
                                let after = c.after.unwrap_or_default();
                                return Poll::Ready(Err(Timeout { phase: c.phase, after }.into()));
                            }
                            return Poll::Pending;
                        }
                    };
                    let c = ctx.take().expect("polled after completion");
                    match outcome {
                        Ok(res) => {
                            let (mut parts, incoming) = res.into_parts();
                            strip_hop_by_hop(&mut parts.headers);
                            parts.extensions.insert(llm_tower_core::ServedBy(c.served_by));
                            if let Some(m) = c.served_model {
                                parts.extensions.insert(llm_tower_core::ServedModel(m));
                            }
                            // A translated error is read whole (it is one JSON document).
                            let translated_error = c.translation.is_some() && !parts.status.is_success();
                            if is_streamed(&parts.headers, c.streamed_request) && !translated_error {
                                let mut body = Streaming::new(
                                    incoming,
                                    c.timeouts,
                                    c.total_deadline,
                                    c.guard,
                                    timer.take(),
                                );
                                if is_event_stream(&parts.headers) {
                                    body.events = Some(EventSizeLimit::new(c.max_event_bytes));
                                }
                                body.join = true;
                                let body = match c.translation {
                                    Some(t) => {
                                        parts.headers.remove(http::header::CONTENT_LENGTH);
                                        LlmResponseBody::new(Translated::new(body, t, c.max_event_bytes))
                                    }
                                    None => LlmResponseBody::new(body),
                                };
                                return Poll::Ready(Ok(Response::from_parts(parts, body)));
                            }
                            // Read whole, by the earlier of the total limit and the caller's deadline.
                            let total_deadline = match (c.total_deadline, c.caller_deadline) {
                                (Some(t), Some(d)) => Some(t.min(d)),
                                (t, d) => t.or(d),
                            };
                            let check_json = parts.status.is_success() && is_json(&parts.headers);
                            let body =
                                Streaming::new(incoming, c.timeouts, total_deadline, c.guard, timer.take());
                            let len_hint = body.inner.size_hint().lower() as usize;
                            let limit = c.max_response_bytes;
                            if len_hint > limit {
                                body.fail();
                                return Poll::Ready(Err(BadResponse::new(BadResponseKind::TooLarge {
                                    limit,
                                })
                                .into()));
                            }
                            let read = Reading {
                                parts,
                                body,
                                first: None,
                                rest: BytesMut::new(),
                                len: 0,
                                limit,
                                check_json,
                                translation: c.translation,
                            };
                            State::Reading { read: Some(Box::new(read)) }
                        }
                        Err(e) => {
                            c.guard.fail();
                            return Poll::Ready(Err(map_client_error(e, &c.authority)));
                        }
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

/// Turns a hyper-util client error into our typed errors.
pub(crate) fn map_client_error(e: hyper_util::client::legacy::Error, authority: &Authority) -> BoxError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<Timeout>() {
            return Box::new(*t);
        }
        cur = err.source();
    }
    if e.is_connect() { Box::new(Connect::new(authority.as_str(), e)) } else { Box::new(Transport::new(e)) }
}
