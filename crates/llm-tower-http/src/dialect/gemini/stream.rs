//! Gemini's `streamGenerateContent?alt=sse` chunks as OpenAI
//! `chat.completion.chunk`s, one event at a time (one candidate: `n > 1` is
//! refused for streams), with bounded state.

use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};

use super::{call_id, finish_reason, usage};
use crate::dialect::anthropic::now_secs;
use crate::dialect::{Translation, sse_data as data, sse_openai_error};

/// Translates one stream; feed it each event, then [`finish`](Self::finish).
#[derive(Debug)]
pub(crate) struct StreamTranslator {
    t: Translation,
    id: Option<String>,
    created: u64,
    started: bool,
    calls: usize,
    /// The finish reason seen (Gemini's last chunk carries it).
    finished: Option<&'static str>,
    usage: Value,
    done: bool,
}

impl StreamTranslator {
    pub(crate) fn new(t: Translation) -> Self {
        StreamTranslator {
            t,
            id: None,
            created: now_secs(),
            started: false,
            calls: 0,
            finished: None,
            usage: Value::Null,
            done: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut BytesMut) {
        let c = json!({
            "id": format!("chatcmpl-{}", self.id.as_deref().unwrap_or("gemini")),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": &*self.t.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }],
        });
        data(&c, out);
    }

    /// One upstream event's `data:` payload.
    pub(crate) fn event(&mut self, payload: &[u8], out: &mut BytesMut) {
        if self.done {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return self.fail("the provider sent an event that is not JSON", "bad_response", out);
        };
        if let Some(e) = v.get("error") {
            let message =
                e.get("message").and_then(Value::as_str).unwrap_or("the provider failed mid-stream");
            let code = match e.get("status").and_then(Value::as_str) {
                Some("RESOURCE_EXHAUSTED") => "rate_limit_exceeded",
                Some("UNAVAILABLE") => "overloaded",
                _ => "upstream_error",
            };
            return self.fail(message, code, out);
        }
        if self.id.is_none() {
            self.id = v.get("responseId").and_then(Value::as_str).map(str::to_owned);
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = u.clone();
        }
        if !self.started {
            self.started = true;
            self.chunk(json!({ "role": "assistant", "content": "" }), None, out);
        }
        let Some(c) = v.pointer("/candidates/0") else {
            if v.pointer("/promptFeedback/blockReason").is_some() {
                self.finished = Some("content_filter");
                self.chunk(json!({}), Some("content_filter"), out);
            }
            return;
        };
        for p in c.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                if !t.is_empty() {
                    self.chunk(json!({ "content": t }), None, out);
                }
            } else if let Some(f) = p.get("functionCall") {
                // Gemini sends a call whole: one delta with all its arguments.
                let call = json!({
                    "index": self.calls,
                    "id": call_id(self.id.as_deref(), self.calls),
                    "type": "function",
                    "function": {
                        "name": f.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": f.get("args").map_or_else(|| "{}".to_owned(), Value::to_string),
                    },
                });
                self.calls += 1;
                self.chunk(json!({ "tool_calls": [call] }), None, out);
            }
        }
        if let Some(reason) = c.get("finishReason").and_then(Value::as_str) {
            let f = finish_reason(reason, self.calls > 0);
            self.finished = Some(f);
            self.chunk(json!({}), Some(f), out);
        }
    }

    /// The upstream body ended: after a finish reason, the usage chunk (when
    /// asked) and `[DONE]`; before one, an error event (the stream was cut).
    pub(crate) fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if self.finished.is_none() {
            return self.fail("the provider's stream ended before its finish reason", "stream_cut", out);
        }
        if self.t.include_usage {
            let c = json!({
                "id": format!("chatcmpl-{}", self.id.as_deref().unwrap_or("gemini")),
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": &*self.t.model,
                "choices": [],
                "usage": usage(&self.usage),
            });
            data(&c, out);
        }
        out.put_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    fn fail(&mut self, message: &str, code: &str, out: &mut BytesMut) {
        sse_openai_error(message, code, out);
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;
    use llm_tower_core::sse::SseParser;

    fn run(step: usize) -> Vec<Value> {
        let raw = include_bytes!("../../../tests/fixtures/gemini/stream.sse");
        let t =
            Translation { dialect: Dialect::Gemini, model: "gemini-2.0-flash".into(), include_usage: true };
        let mut tr = StreamTranslator::new(t);
        let mut p = SseParser::default();
        let mut out = BytesMut::new();
        for piece in raw.chunks(step) {
            p.feed(piece, |e| tr.event(e.data, &mut out));
        }
        tr.finish(&mut out);
        let mut chunks = Vec::new();
        SseParser::default().feed(&out, |e| {
            let d = String::from_utf8(e.data.to_vec()).unwrap();
            let mut v = if d == "[DONE]" { Value::Null } else { serde_json::from_str(&d).unwrap() };
            if v.is_object() {
                v["created"] = Value::Null;
            }
            chunks.push(v)
        });
        chunks
    }

    #[test]
    fn the_fixture_stream_becomes_openai_chunks_at_any_boundary() {
        let c = run(usize::MAX);
        assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = c.iter().filter_map(|v| v["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "The weather in Paris: checking.");
        let call = c.iter().find_map(|v| v["choices"][0]["delta"]["tool_calls"].get(0).cloned()).unwrap();
        assert_eq!((call["index"].as_u64(), call["id"].as_str()), (Some(0), Some("call_r9_0")));
        let n = c.len();
        assert!(c[n - 1].is_null(), "[DONE] last");
        assert_eq!(c[n - 2]["usage"]["completion_tokens"], 9);
        assert_eq!(c[n - 3]["choices"][0]["finish_reason"], "tool_calls");
        for step in [1, 2, 5, 13, 64] {
            assert_eq!(run(step), c, "re-chunked every {step} bytes");
        }
    }

    #[test]
    fn a_cut_or_an_error_ends_with_an_error_event() {
        let t = Translation { dialect: Dialect::Gemini, model: "m".into(), include_usage: false };
        let mut tr = StreamTranslator::new(t.clone());
        let mut out = BytesMut::new();
        tr.event(br#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}"#, &mut out);
        tr.finish(&mut out);
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(s.contains("event: error") && s.contains("stream_cut") && !s.contains("[DONE]"), "{s}");
        let mut tr = StreamTranslator::new(t);
        let mut out = BytesMut::new();
        tr.event(br#"{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}"#, &mut out);
        tr.finish(&mut out);
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert_eq!(s.matches("event: error").count(), 1, "{s}");
        assert!(s.contains(r#""code":"overloaded""#));
    }
}
