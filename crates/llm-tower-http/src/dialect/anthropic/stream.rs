//! Anthropic's stream events as OpenAI `chat.completion.chunk`s, one event at
//! a time, with state bounded per stream (ids, the open tool block, usage).

use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};

use super::{finish_reason, now_secs, usage};
use crate::dialect::{Translation, sse_data as data, sse_openai_error};

/// Translates one stream. Feed it each upstream SSE event in order, then
/// [`finish`](Self::finish) when the upstream body ends.
#[derive(Debug)]
pub(crate) struct StreamTranslator {
    t: Translation,
    id: Value,
    created: u64,
    /// The Anthropic content block that is a tool call now, and its OpenAI index.
    open_tool: Option<(u64, u64)>,
    tools: u64,
    usage: serde_json::Map<String, Value>,
    /// `message_stop` seen (or an error event sent): nothing more to send.
    done: bool,
}

impl StreamTranslator {
    pub(crate) fn new(t: Translation) -> Self {
        StreamTranslator {
            t,
            id: Value::Null,
            created: now_secs(),
            open_tool: None,
            tools: 0,
            usage: serde_json::Map::new(),
            done: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut BytesMut) {
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": &*self.t.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }],
        });
        data(&c, out);
    }

    /// One upstream event (`event:` name, `data:` payload).
    pub(crate) fn event(&mut self, name: Option<&str>, payload: &[u8], out: &mut BytesMut) {
        if self.done {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            if name == Some("ping") {
                return;
            }
            return self.fail("the provider sent an event that is not JSON", "bad_response", out);
        };
        let kind = v.get("type").and_then(Value::as_str).or(name).unwrap_or("");
        match kind {
            "message_start" => {
                let m = &v["message"];
                self.id = m.get("id").cloned().unwrap_or(Value::Null);
                if let Some(u) = m.get("usage").and_then(Value::as_object) {
                    self.usage.extend(u.clone());
                }
                self.chunk(json!({ "role": "assistant", "content": "" }), None, out);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = self.tools;
                    self.tools += 1;
                    self.open_tool = Some((v["index"].as_u64().unwrap_or(0), index));
                    let call = json!({
                        "index": index,
                        "id": block.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": { "name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": "" },
                    });
                    self.chunk(json!({ "tool_calls": [call] }), None, out);
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = d.get("text").cloned().unwrap_or_default();
                        self.chunk(json!({ "content": text }), None, out);
                    }
                    Some("input_json_delta") => {
                        let block = v["index"].as_u64().unwrap_or(0);
                        if let Some((_, index)) = self.open_tool.filter(|(b, _)| *b == block) {
                            let part = d.get("partial_json").cloned().unwrap_or_default();
                            let call = json!({ "index": index, "function": { "arguments": part } });
                            self.chunk(json!({ "tool_calls": [call] }), None, out);
                        }
                    }
                    // thinking and signature deltas: not part of an OpenAI chat stream.
                    _ => {}
                }
            }
            "content_block_stop" if self.open_tool.is_some_and(|(b, _)| Some(b) == v["index"].as_u64()) => {
                self.open_tool = None;
            }
            "message_delta" => {
                if let Some(u) = v.get("usage").and_then(Value::as_object) {
                    for (k, n) in u {
                        if !n.is_null() {
                            self.usage.insert(k.clone(), n.clone());
                        }
                    }
                }
                if let Some(stop) = v["delta"].get("stop_reason").and_then(Value::as_str) {
                    self.chunk(json!({}), Some(finish_reason(stop)), out);
                }
            }
            "message_stop" => {
                if self.t.include_usage {
                    let c = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": &*self.t.model,
                        "choices": [],
                        "usage": usage(&Value::Object(self.usage.clone())),
                    });
                    data(&c, out);
                }
                out.put_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            "error" => {
                let e = &v["error"];
                let message =
                    e.get("message").and_then(Value::as_str).unwrap_or("the provider failed mid-stream");
                let code = match e.get("type").and_then(Value::as_str) {
                    Some("overloaded_error") => "overloaded",
                    Some("rate_limit_error") => "rate_limit_exceeded",
                    _ => "upstream_error",
                };
                self.fail(message, code, out);
            }
            // ping, and event types added later.
            _ => {}
        }
    }

    /// The upstream body ended: a stream cut before `message_stop` ends with
    /// an error event, never a clean `[DONE]`.
    pub(crate) fn finish(&mut self, out: &mut BytesMut) {
        if !self.done {
            self.fail("the provider's stream ended before its last event", "stream_cut", out);
        }
    }

    fn fail(&mut self, message: &str, code: &str, out: &mut BytesMut) {
        sse_openai_error(message, code, out);
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_tower_core::sse::SseParser;

    /// The fixture stream fed in pieces of `step` bytes; the OpenAI chunks' JSON.
    fn run(step: usize, include_usage: bool) -> Vec<String> {
        let raw = include_bytes!("../../../tests/fixtures/anthropic/messages_stream.sse");
        let mut tr = StreamTranslator::new(Translation {
            dialect: crate::dialect::Dialect::Anthropic,
            model: "claude".into(),
            include_usage,
        });
        let mut parser = SseParser::default();
        let mut out = BytesMut::new();
        for piece in raw.chunks(step) {
            parser.feed(piece, |e| tr.event(e.event, e.data, &mut out));
        }
        tr.finish(&mut out);
        let mut chunks = Vec::new();
        SseParser::default().feed(&out, |e| chunks.push(String::from_utf8(e.data.to_vec()).unwrap()));
        chunks
    }

    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn the_fixture_stream_becomes_openai_chunks() {
        let c = run(usize::MAX, true);
        assert_eq!(c.last().unwrap(), "[DONE]");
        let first = json(&c[0]);
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "the role first");
        assert_eq!(first["id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
        let text: String = c
            .iter()
            .filter(|s| *s != "[DONE]")
            .map(|s| json(s))
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(text, "Okay, let me check the weather.");
        let calls: Vec<Value> = c
            .iter()
            .filter(|s| *s != "[DONE]")
            .map(|s| json(s))
            .filter_map(|v| v["choices"][0]["delta"]["tool_calls"].get(0).cloned())
            .collect();
        assert_eq!(calls[0]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert!(calls.iter().all(|c| c["index"] == 0), "one tool call, index 0: {calls:?}");
        let args: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
        assert_eq!(json(&args), json(r#"{"location": "San Francisco, CA", "unit": "fahrenheit"}"#));
        let finish = json(&c[c.len() - 3]);
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        let usage = json(&c[c.len() - 2]);
        assert_eq!(usage["choices"], json("[]"));
        assert_eq!(
            (usage["usage"]["prompt_tokens"].as_u64(), usage["usage"]["completion_tokens"].as_u64()),
            (Some(472), Some(89))
        );
        let without = run(usize::MAX, false);
        assert_eq!(without.len(), c.len() - 1, "no usage chunk unless asked");
    }

    #[test]
    fn any_byte_boundary_gives_the_same_chunks() {
        let whole = run(usize::MAX, true);
        for step in [1, 2, 3, 7, 16, 61, 200] {
            let cut = run(step, true);
            // `created` is the same second in practice; compare without it.
            let strip = |v: &[String]| -> Vec<Value> {
                v.iter()
                    .map(|s| {
                        if s == "[DONE]" {
                            Value::Null
                        } else {
                            let mut j = json(s);
                            j["created"] = Value::Null;
                            j
                        }
                    })
                    .collect()
            };
            assert_eq!(strip(&cut), strip(&whole), "re-chunked every {step} bytes");
        }
    }

    #[test]
    fn errors_and_cuts_end_with_an_error_event() {
        let mut tr = StreamTranslator::new(Translation {
            dialect: crate::dialect::Dialect::Anthropic,
            model: "m".into(),
            include_usage: false,
        });
        let mut out = BytesMut::new();
        tr.event(
            Some("message_start"),
            br#"{"type":"message_start","message":{"id":"x","usage":{"input_tokens":3}}}"#,
            &mut out,
        );
        tr.event(
            Some("error"),
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            &mut out,
        );
        tr.finish(&mut out);
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(s.contains("event: error\ndata: {") && s.contains(r#""code":"overloaded""#), "{s}");
        assert_eq!(s.matches("event: error").count(), 1, "one error, then nothing: {s}");
        assert!(!s.contains("[DONE]"));
        let mut tr = StreamTranslator::new(Translation {
            dialect: crate::dialect::Dialect::Anthropic,
            model: "m".into(),
            include_usage: false,
        });
        let mut out = BytesMut::new();
        tr.event(Some("message_start"), br#"{"type":"message_start","message":{"id":"x"}}"#, &mut out);
        tr.finish(&mut out);
        assert!(String::from_utf8(out.to_vec()).unwrap().contains(r#""code":"stream_cut""#));
    }
}
