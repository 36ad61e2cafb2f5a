//! Google Gemini's `generateContent` and `streamGenerateContent?alt=sse`.

use super::*;

fn usage(a: &Answer, out: u64) -> Value {
    json!({"promptTokenCount": a.prompt, "candidatesTokenCount": out, "totalTokenCount": a.prompt + out})
}

fn finish(a: &Answer) -> &'static str {
    if a.tool.is_none() && a.finish == "length" { "MAX_TOKENS" } else { "STOP" }
}

fn parts(a: &Answer, text: String) -> Value {
    match &a.tool {
        Some(t) => json!([{"functionCall": {"name": t.name, "args": t.arguments}}]),
        None => json!([{"text": text}]),
    }
}

/// The whole answer.
pub(super) fn gemini_json(a: &Answer) -> Value {
    let candidates: Vec<Value> = (0..a.choices)
        .map(|i| {
            json!({"content": {"parts": parts(a, a.text(i)), "role": "model"}, "finishReason": finish(a), "index": i})
        })
        .collect();
    json!({
        "candidates": candidates,
        "usageMetadata": usage(a, u64::from(a.out_tokens) * u64::from(a.choices)),
        "modelVersion": a.model,
        "responseId": format!("mock-{}", a.n),
    })
}

/// The stream: a chunk per token per candidate (or one with the tool call),
/// the finish reason and the usage in the last.
pub(super) fn gemini_events(a: &Answer) -> Vec<Event> {
    let chunk = |candidates: Value, out: u64| {
        json!({"candidates": candidates, "usageMetadata": usage(a, out), "modelVersion": a.model,
               "responseId": format!("mock-{}", a.n)})
    };
    let mut out = Vec::new();
    if matches!(a.fault, Fault::MalformedJson) {
        out.push(Event { bytes: Bytes::from_static(b"data: {\"candidates\": broken\n\n"), token: false });
        return out;
    }
    if a.tool.is_some() {
        let c = json!([{"content": {"parts": parts(a, String::new()), "role": "model"}, "finishReason": "STOP", "index": 0}]);
        out.push(Event { bytes: sse(None, &chunk(c, u64::from(a.out_tokens))), token: true });
        return out;
    }
    let n = a.out_tokens as usize;
    for t in 0..n {
        for i in 0..a.choices {
            let words = a.words(i);
            let piece = if t == 0 { words[t].to_owned() } else { format!(" {}", words[t]) };
            let mut c = json!({"content": {"parts": [{"text": piece}], "role": "model"}, "index": i});
            if t + 1 == n {
                c["finishReason"] = json!(finish(a));
            }
            let produced = (t as u64 + 1) * u64::from(a.choices);
            out.push(Event { bytes: sse(None, &chunk(json!([c]), produced)), token: i == 0 });
        }
    }
    if n == 0 {
        let c = json!([{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": finish(a), "index": 0}]);
        out.push(Event { bytes: sse(None, &chunk(c, 0)), token: false });
    }
    out
}
