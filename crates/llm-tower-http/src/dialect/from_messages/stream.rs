//! OpenAI `chat.completion.chunk`s as Anthropic stream events, in Anthropic's
//! order: `message_start`, per content block `content_block_start`, its
//! deltas, `content_block_stop`, then `message_delta` (stop reason, usage)
//! and `message_stop`. State: the open block and the finish and usage seen.

use bytes::BytesMut;
use serde_json::{Value, json};

use super::{event, stop_reason, usage};
use crate::dialect::Translation;

/// The content block open now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    /// A tool call, by its OpenAI index.
    Tool(u64),
}

/// Translates one stream; feed it each event, then [`finish`](Self::finish).
#[derive(Debug)]
pub(crate) struct StreamTranslator {
    t: Translation,
    started: bool,
    open: Open,
    /// Blocks started so far (the next block's index).
    blocks: u64,
    stop: Option<&'static str>,
    usage: Value,
    done: bool,
}

impl StreamTranslator {
    pub(crate) fn new(t: Translation) -> Self {
        StreamTranslator {
            t,
            started: false,
            open: Open::None,
            blocks: 0,
            stop: None,
            usage: Value::Null,
            done: false,
        }
    }

    fn close(&mut self, out: &mut BytesMut) {
        if self.open != Open::None {
            event(
                out,
                "content_block_stop",
                &json!({ "type": "content_block_stop", "index": self.blocks - 1 }),
            );
            self.open = Open::None;
        }
    }

    fn start(&mut self, block: Value, open: Open, out: &mut BytesMut) {
        self.close(out);
        event(
            out,
            "content_block_start",
            &json!({ "type": "content_block_start", "index": self.blocks, "content_block": block }),
        );
        self.blocks += 1;
        self.open = open;
    }

    /// One upstream event (`event:` name, `data:` payload).
    pub(crate) fn event(&mut self, name: Option<&str>, payload: &[u8], out: &mut BytesMut) {
        if self.done {
            return;
        }
        if payload == b"[DONE]" {
            return self.end(out);
        }
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return self.fail("the provider sent an event that is not JSON", out);
        };
        if name == Some("error") || v.get("error").is_some() {
            let m = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("the provider failed mid-stream");
            return self.fail(m, out);
        }
        if !self.started {
            self.started = true;
            let id = v.get("id").and_then(Value::as_str).unwrap_or("openai");
            let message = json!({
                "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": &*self.t.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": 0, "output_tokens": 0 },
            });
            event(out, "message_start", &json!({ "type": "message_start", "message": message }));
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage = u.clone();
        }
        let Some(c) = v.pointer("/choices/0") else { return };
        let d = &c["delta"];
        if let Some(text) = d.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            if self.open != Open::Text {
                self.start(json!({ "type": "text", "text": "" }), Open::Text, out);
            }
            let delta = json!({ "type": "content_block_delta", "index": self.blocks - 1,
                                "delta": { "type": "text_delta", "text": text } });
            event(out, "content_block_delta", &delta);
        }
        for call in d.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                let name = call.pointer("/function/name").cloned().unwrap_or(Value::Null);
                self.start(
                    json!({ "type": "tool_use", "id": id, "name": name, "input": {} }),
                    Open::Tool(index),
                    out,
                );
            }
            // Arguments of the open call (OpenAI streams calls one after another).
            if let (Some(args), Open::Tool(i)) =
                (call.pointer("/function/arguments").and_then(Value::as_str), self.open)
            {
                if i == index && !args.is_empty() {
                    let delta = json!({ "type": "content_block_delta", "index": self.blocks - 1,
                                        "delta": { "type": "input_json_delta", "partial_json": args } });
                    event(out, "content_block_delta", &delta);
                }
            }
        }
        if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(stop_reason(f));
        }
    }

    fn end(&mut self, out: &mut BytesMut) {
        if !self.started || self.stop.is_none() {
            return self.fail("the provider's stream ended before its finish reason", out);
        }
        self.close(out);
        let delta = json!({
            "type": "message_delta",
            "delta": { "stop_reason": self.stop, "stop_sequence": null },
            "usage": usage(&self.usage),
        });
        event(out, "message_delta", &delta);
        event(out, "message_stop", &json!({ "type": "message_stop" }));
        self.done = true;
    }

    /// The upstream body ended: without `[DONE]` the stream was cut.
    pub(crate) fn finish(&mut self, out: &mut BytesMut) {
        if !self.done {
            self.fail("the provider's stream ended before [DONE]", out);
        }
    }

    fn fail(&mut self, message: &str, out: &mut BytesMut) {
        event(
            out,
            "error",
            &json!({ "type": "error", "error": { "type": "api_error", "message": message } }),
        );
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;
    use llm_tower_core::sse::SseParser;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Checking\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" now.\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":9}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(step: usize) -> Vec<(String, Value)> {
        let t = Translation {
            dialect: Dialect::MessagesClient,
            model: "gpt-4o-mini".into(),
            include_usage: true,
        };
        let mut tr = StreamTranslator::new(t);
        let (mut p, mut out) = (SseParser::default(), BytesMut::new());
        for piece in STREAM.as_bytes().chunks(step) {
            p.feed(piece, |e| tr.event(e.event, e.data, &mut out));
        }
        tr.finish(&mut out);
        let mut events = Vec::new();
        SseParser::default().feed(&out, |e| {
            events.push((e.event.unwrap_or("").to_owned(), serde_json::from_slice(e.data).unwrap()))
        });
        events
    }

    #[test]
    fn chunks_become_events_in_anthropic_order_at_any_boundary() {
        let e = run(usize::MAX);
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(e[5].1["content_block"]["id"], "call_1");
        assert_eq!(e[5].1["index"], 1);
        let args: String =
            e[6..8].iter().map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_owned()).collect();
        assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Paris"}));
        assert_eq!(e[9].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(e[9].1["usage"]["input_tokens"], 40);
        for step in [1, 3, 17, 100] {
            assert_eq!(run(step), e, "re-chunked every {step} bytes");
        }
    }

    #[test]
    fn a_cut_stream_ends_with_an_error_event() {
        let t = Translation { dialect: Dialect::MessagesClient, model: "m".into(), include_usage: true };
        let mut tr = StreamTranslator::new(t);
        let mut out = BytesMut::new();
        tr.event(None, br#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}"#, &mut out);
        tr.finish(&mut out);
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(s.ends_with("\n\n") && s.contains("event: error") && !s.contains("message_stop"), "{s}");
    }
}
