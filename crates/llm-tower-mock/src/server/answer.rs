//! Answers in each dialect: chat completions, Anthropic messages and embeddings, JSON and SSE.

use super::*;

/// Counts SSE events written, into the shared stats.
#[derive(Clone)]
pub(super) struct ChunkCounter(pub(super) Arc<State>);

impl ChunkCounter {
    fn count(&self) {
        self.0.lock().stats.chunks_sent += 1;
    }
}

pub(super) struct Answer {
    pub(super) n: u64,
    pub(super) model: String,
    pub(super) seed: u64,
    pub(super) prompt: u64,
    pub(super) out_tokens: u32,
    pub(super) choices: u32,
    pub(super) finish: &'static str,
    pub(super) include_usage: bool,
    pub(super) fault: Fault,
    pub(super) latency: crate::Latency,
    /// The tool call to answer with instead of text.
    pub(super) tool: Option<ToolCall>,
}

impl Answer {
    pub(super) fn words(&self, choice: u32) -> Vec<&'static str> {
        synth::tokens(self.seed.wrapping_add(u64::from(choice)), self.out_tokens)
    }

    pub(super) fn text(&self, choice: u32) -> String {
        self.words(choice).iter().map(|w| format!("{w} ")).collect::<String>().trim_end().to_owned()
    }

    fn completion_tokens(&self) -> u64 {
        u64::from(self.out_tokens) * u64::from(self.choices)
    }

    pub(super) fn fault_delay(&self) -> Duration {
        match self.fault {
            Fault::SlowBody { per_chunk_ms } => Duration::from_millis(per_chunk_ms),
            _ => Duration::ZERO,
        }
    }

    /// A complete JSON answer, after the generation time, with the fault applied.
    pub(super) async fn json_answer(&self, value: Value) -> Res {
        sleep(self.latency.per_token * self.out_tokens).await;
        let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let body = match self.fault {
            Fault::MalformedJson => MockBody::full(bytes.slice(..bytes.len() / 2)),
            Fault::StreamCut { .. } => {
                let (tx, rx) = mpsc::channel(2);
                let half = bytes.slice(..bytes.len() / 2);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(half)).await;
                    let _ = tx.send(Err(Cut)).await;
                });
                MockBody::Channel(rx)
            }
            Fault::SlowBody { per_chunk_ms } => {
                let (tx, rx) = mpsc::channel(4);
                let delay = Duration::from_millis(per_chunk_ms);
                tokio::spawn(async move {
                    let step = bytes.len().div_ceil(4).max(1);
                    let mut at = 0;
                    while at < bytes.len() {
                        sleep(delay).await;
                        let end = (at + step).min(bytes.len());
                        if tx.send(Ok(bytes.slice(at..end))).await.is_err() {
                            return;
                        }
                        at = end;
                    }
                });
                MockBody::Channel(rx)
            }
            _ => MockBody::full(bytes),
        };
        let mut res = Response::new(body);
        res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    }

    /// A streamed answer: events produced by `events`, paced by the latency model.
    pub(super) fn stream(self, counter: ChunkCounter, events: fn(&Answer) -> Vec<Event>) -> Res {
        let (tx, rx) = mpsc::channel(16);
        let list = events(&self);
        tokio::spawn(async move {
            if let Fault::EndlessEvent { bytes } = self.fault {
                if let Some(first) = list.first() {
                    let _ = tx.send(Ok(first.bytes.clone())).await;
                }
                let _ = tx.send(Ok(Bytes::from_static(b"data: "))).await;
                let piece = Bytes::from(vec![b'x'; 64 << 10]);
                let mut sent = 0;
                while sent < bytes.min(1 << 30) {
                    if tx.send(Ok(piece.clone())).await.is_err() {
                        return;
                    }
                    sent += piece.len();
                }
                // Keep the connection open: the reader must end it.
                std::future::pending::<()>().await;
            }
            let mut tokens_sent = 0u32;
            for ev in list {
                if ev.token {
                    if let Fault::StreamCut { after_tokens } = self.fault {
                        if tokens_sent >= after_tokens {
                            let _ = tx.send(Err(Cut)).await;
                            return;
                        }
                    }
                    sleep(self.latency.per_token).await;
                    tokens_sent += 1;
                }
                sleep(self.fault_delay()).await;
                if tx.send(Ok(ev.bytes)).await.is_err() {
                    return;
                }
                counter.count();
            }
        });
        let mut res = Response::new(MockBody::Channel(rx));
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    }
}

/// One SSE event to send; `token` marks events that carry a generated token.
pub(super) struct Event {
    pub(super) bytes: Bytes,
    pub(super) token: bool,
}

pub(super) fn sse(event: Option<&str>, data: &Value) -> Bytes {
    let mut s = String::new();
    if let Some(e) = event {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(&data.to_string());
    s.push_str("\n\n");
    Bytes::from(s)
}

pub(super) fn chat_usage(a: &Answer) -> Value {
    json!({
        "prompt_tokens": a.prompt,
        "completion_tokens": a.completion_tokens(),
        "total_tokens": a.prompt + a.completion_tokens(),
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

pub(super) fn chat_json(a: &Answer) -> Value {
    let choices: Vec<Value> = (0..a.choices)
        .map(|i| match &a.tool {
            Some(t) => json!({"index": i, "message": {"role": "assistant", "content": null, "refusal": null,
                        "tool_calls": [{"id": t.id, "type": "function",
                                        "function": {"name": t.name, "arguments": t.arguments_text()}}]},
                        "logprobs": null, "finish_reason": "tool_calls"}),
            None => {
                json!({"index": i, "message": {"role": "assistant", "content": a.text(i), "refusal": null},
                   "logprobs": null, "finish_reason": a.finish})
            }
        })
        .collect();
    json!({
        "id": format!("chatcmpl-mock-{}", a.n),
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": a.model,
        "choices": choices,
        "usage": chat_usage(a),
        "system_fingerprint": "fp_mock",
    })
}

pub(super) fn chat_events(a: &Answer) -> Vec<Event> {
    let id = format!("chatcmpl-mock-{}", a.n);
    let chunk = |choices: Value, usage: Value| {
        let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                           "model": a.model, "system_fingerprint": "fp_mock", "choices": choices});
        if a.include_usage {
            v["usage"] = usage;
        }
        v
    };
    let mut out = Vec::new();
    if matches!(a.fault, Fault::MalformedJson) {
        out.push(Event { bytes: Bytes::from_static(b"data: {\"id\": broken\n\n"), token: false });
        out.push(Event { bytes: Bytes::from_static(b"data: [DONE]\n\n"), token: false });
        return out;
    }
    for i in 0..a.choices {
        let role = json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
        out.push(Event { bytes: sse(None, &chunk(role, Value::Null)), token: false });
    }
    if let Some(t) = &a.tool {
        // The call's head, then its arguments in two pieces, as OpenAI streams them.
        let args = t.arguments_text();
        let (x, y) = args.split_at(args.len() / 2);
        let head = json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": t.id, "type": "function",
                            "function": {"name": t.name, "arguments": ""}}]}, "logprobs": null, "finish_reason": null}]);
        out.push(Event { bytes: sse(None, &chunk(head, Value::Null)), token: false });
        for piece in [x, y] {
            let d = json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                            "logprobs": null, "finish_reason": null}]);
            out.push(Event { bytes: sse(None, &chunk(d, Value::Null)), token: true });
        }
        let fin = json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}]);
        out.push(Event { bytes: sse(None, &chunk(fin, Value::Null)), token: false });
        if a.include_usage {
            out.push(Event { bytes: sse(None, &chunk(json!([]), chat_usage(a))), token: false });
        }
        out.push(Event { bytes: Bytes::from_static(b"data: [DONE]\n\n"), token: false });
        return out;
    }
    for t in 0..a.out_tokens as usize {
        for i in 0..a.choices {
            let words = a.words(i);
            let piece = if t == 0 { words[t].to_owned() } else { format!(" {}", words[t]) };
            let c =
                json!([{"index": i, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}]);
            out.push(Event { bytes: sse(None, &chunk(c, Value::Null)), token: i == 0 });
        }
    }
    for i in 0..a.choices {
        let fin = json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": a.finish}]);
        out.push(Event { bytes: sse(None, &chunk(fin, Value::Null)), token: false });
    }
    if a.include_usage {
        out.push(Event { bytes: sse(None, &chunk(json!([]), chat_usage(a))), token: false });
    }
    out.push(Event { bytes: Bytes::from_static(b"data: [DONE]\n\n"), token: false });
    out
}

pub(super) fn anthropic_stop(a: &Answer) -> &'static str {
    match (&a.tool, a.finish) {
        (Some(_), _) => "tool_use",
        (None, "length") => "max_tokens",
        _ => "end_turn",
    }
}

pub(super) fn messages_json(a: &Answer) -> Value {
    json!({
        "id": format!("msg_mock_{}", a.n),
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": match &a.tool {
            Some(t) => json!([{"type": "tool_use", "id": t.id, "name": t.name, "input": t.arguments}]),
            None => json!([{"type": "text", "text": a.text(0)}]),
        },
        "stop_reason": anthropic_stop(a),
        "stop_sequence": null,
        "usage": {"input_tokens": a.prompt, "output_tokens": a.out_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    })
}

pub(super) fn messages_events(a: &Answer) -> Vec<Event> {
    let ev = |name: &str, data: Value, token: bool| Event { bytes: sse(Some(name), &data), token };
    let mut out = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_mock_{}", a.n), "type": "message",
                   "role": "assistant", "model": a.model, "content": [], "stop_reason": null, "stop_sequence": null,
                   "usage": {"input_tokens": a.prompt, "output_tokens": 1,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
            false,
        ),
        ev(
            "content_block_start",
            match &a.tool {
                Some(t) => json!({"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "tool_use", "id": t.id, "name": t.name, "input": {}}}),
                None => {
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                }
            },
            false,
        ),
        ev("ping", json!({"type": "ping"}), false),
    ];
    if let Some(t) = &a.tool {
        let args = t.arguments_text();
        let (x, y) = args.split_at(args.len() / 2);
        for piece in ["", x, y] {
            out.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
                !piece.is_empty(),
            ));
        }
    }
    if matches!(a.fault, Fault::MalformedJson) {
        out.push(Event {
            bytes: Bytes::from_static(b"event: content_block_delta\ndata: {broken\n\n"),
            token: false,
        });
    }
    let words = if a.tool.is_some() { Vec::new() } else { a.words(0) };
    for (t, w) in words.iter().enumerate() {
        let piece = if t == 0 { (*w).to_owned() } else { format!(" {w}") };
        out.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            true,
        ));
    }
    out.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0}), false));
    out.push(ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": anthropic_stop(a), "stop_sequence": null},
               "usage": {"output_tokens": a.out_tokens}}),
        false,
    ));
    out.push(ev("message_stop", json!({"type": "message_stop"}), false));
    out
}

pub(super) fn embeddings(a: &Answer, req: &Value, dims: usize) -> Res {
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::Array(items)) => items.iter().map(|v| v.to_string()).collect(),
        Some(v) => vec![v.to_string()],
        None => vec![],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut rng = Rng::new(a.seed ^ synth::fnv(text.as_bytes()));
            let raw: Vec<f64> = (0..dims.max(1)).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
            let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
            let v: Vec<f64> = raw.iter().map(|x| ((x / norm) * 1e6).round() / 1e6).collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": a.model,
                "usage": {"prompt_tokens": a.prompt, "total_tokens": a.prompt}}),
    )
}
