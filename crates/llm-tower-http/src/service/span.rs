//! One client span per upstream attempt, when the request is traced
//! (core's [`Traced`] in its extensions): its context goes upstream as
//! `traceparent`, and the span is exported when the attempt's answer ends.

use llm_tower_core::response::{BodyEnd, BodyObserver};
use llm_tower_core::trace::{FinishedSpan, SpanKind, TraceContext, Traced, unix_nanos};
use llm_tower_core::usage::{BodyKind, StreamEnd};
use llm_tower_core::{Api, Attempt};

use super::*;

/// An attempt's span, from the call until its answer ends.
pub(crate) struct AttemptSpan {
    traced: Traced,
    context: TraceContext,
    start: u64,
    name: String,
    attrs: Vec<(&'static str, llm_tower_core::trace::AttrValue)>,
}

fn operation(api: Api) -> &'static str {
    match api {
        Api::Embeddings => "embeddings",
        Api::ChatCompletions | Api::AnthropicMessages | Api::Responses => "chat",
        _ => "request",
    }
}

impl AttemptSpan {
    /// Starts the span of `req`'s attempt at `provider` (`None` when the
    /// request is not traced), and sets `req`'s `traceparent`.
    pub(crate) fn start(req: &mut Request<LlmBody>, provider: &Provider) -> Option<Box<Self>> {
        let traced = req.extensions().get::<Traced>()?.clone();
        let header = |ctx: &TraceContext| http::HeaderValue::from_str(&ctx.traceparent()).ok();
        if !traced.context.sampled {
            // Not recorded here: the upstream still learns the trace it is part of.
            if let Some(v) = header(&traced.context) {
                req.headers_mut().insert("traceparent", v);
            }
            return None;
        }
        let context = traced.context.child();
        if let Some(v) = header(&context) {
            req.headers_mut().insert("traceparent", v);
        }
        let info = req.extensions().get::<Arc<RequestInfo>>();
        let api = info.map_or_else(|| Api::from_path(req.uri().path()), |i| i.api);
        let op = operation(api);
        let model = info.map(|i| i.model.clone());
        let mut attrs = vec![
            ("gen_ai.operation.name", op.into()),
            ("gen_ai.provider.name", provider.name_arc().into()),
            ("llm_tower.attempt", Attempt::of(req).into()),
            ("http.request.method", req.method().as_str().into()),
        ];
        if let Some(host) = req.uri().host() {
            attrs.push(("server.address", host.into()));
        }
        let name = match &model {
            Some(m) => format!("{op} {m}"),
            None => op.to_owned(),
        };
        if let Some(m) = model {
            attrs.push(("gen_ai.request.model", m.into()));
        }
        Some(Box::new(AttemptSpan { traced, context, start: unix_nanos(), name, attrs }))
    }

    fn finish(self) -> FinishedSpan {
        let parent = Some(self.traced.context.span_id);
        let mut span = FinishedSpan::ended_now(self.context, parent, self.name, SpanKind::Client, self.start);
        span.attributes = self.attrs;
        span
    }

    /// The attempt failed before any answer.
    pub(crate) fn failed(self, err: &BoxError) {
        let exporter = self.traced.exporter.clone();
        let mut span = self.finish();
        let info = llm_tower_core::ErrorInfo::from_error(&**err);
        span.attr("error.type", info.code.unwrap_or(info.kind));
        span.error = Some(err.to_string());
        exporter.export(span);
    }

    /// The attempt answered: the span ends with its body.
    pub(crate) fn answered(self: Box<Self>, res: &mut Response<LlmResponseBody>) {
        let status = res.status();
        let kind = BodyKind::from_headers(res.headers());
        res.body_mut().observe(SpanAtEnd { span: Some(self), status, kind });
    }
}

struct SpanAtEnd {
    span: Option<Box<AttemptSpan>>,
    status: http::StatusCode,
    kind: BodyKind,
}

impl BodyObserver for SpanAtEnd {
    fn wants_usage(&self) -> Option<BodyKind> {
        Some(self.kind)
    }

    fn on_end(mut self: Box<Self>, end: &mut BodyEnd) {
        let Some(span) = self.span.take() else { return };
        let exporter = span.traced.exporter.clone();
        let mut s = (*span).finish();
        s.attr("http.response.status_code", self.status.as_u16());
        if let Some(r) = &end.report {
            if let Some(u) = r.usage {
                s.attr("gen_ai.usage.input_tokens", u.input).attr("gen_ai.usage.output_tokens", u.output);
            }
            if let Some(f) = &r.finish_reason {
                s.attr("gen_ai.response.finish_reasons", f.as_str());
            }
        }
        let end_kind = end.report.as_ref().map_or(end.end, |r| r.end);
        if self.status.is_server_error() || self.status == http::StatusCode::TOO_MANY_REQUESTS {
            s.attr("error.type", self.status.as_str());
            s.error = Some(format!("upstream answered {}", self.status.as_u16()));
        } else if end_kind == StreamEnd::Failed {
            s.attr("error.type", "upstream_stream_aborted");
            s.error = Some("the answer broke off".into());
        }
        exporter.export(s);
    }
}
