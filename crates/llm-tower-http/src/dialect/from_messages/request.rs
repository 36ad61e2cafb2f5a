//! An Anthropic Messages request as an OpenAI chat completion request.

use llm_tower_core::InvalidRequest;
use serde_json::{Map, Value, json};

use crate::dialect::{Dialect, Translation};

fn refuse(param: &str, why: &str) -> InvalidRequest {
    InvalidRequest::new(format!("{param}: {why} (the provider speaks OpenAI chat)")).with_param(param)
}

/// The OpenAI chat completion body for `body` (a Messages request), and the
/// answer's translation. Streams always ask for usage (Anthropic's
/// `message_delta` carries it).
pub(crate) fn to_chat(body: &[u8]) -> Result<(Vec<u8>, Translation), InvalidRequest> {
    let req: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| InvalidRequest::new(format!("the body is not a JSON object: {e}")))?;
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| InvalidRequest::new("model: required").with_param("model"))?;
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    let mut messages = Vec::new();
    for (k, v) in &req {
        match k.as_str() {
            "model" | "messages" | "system" | "tool_choice" => {}
            "max_tokens" => {
                let n = v.as_u64().ok_or_else(|| refuse(k, "must be a positive integer"))?;
                out.insert("max_tokens".into(), n.into());
            }
            "temperature" | "top_p" => {
                out.insert(k.clone(), v.clone());
            }
            "stop_sequences" => {
                out.insert("stop".into(), v.clone());
            }
            "stream" => {
                let s = v.as_bool().unwrap_or(false);
                out.insert("stream".into(), s.into());
                if s {
                    out.insert("stream_options".into(), json!({ "include_usage": true }));
                }
            }
            "metadata" => {
                if let Some(u) = v.get("user_id") {
                    out.insert("user".into(), u.clone());
                }
            }
            "tools" => {
                out.insert("tools".into(), tools(v)?);
            }
            "top_k" | "thinking" | "mcp_servers" | "container" | "citations" => {
                if !v.is_null() {
                    return Err(refuse(k, "not supported"));
                }
            }
            "service_tier" => {}
            other => return Err(refuse(other, "unknown parameter")),
        }
    }
    if !out.contains_key("max_tokens") {
        return Err(refuse("max_tokens", "required"));
    }
    if let Some(c) = req.get("tool_choice") {
        let (choice, parallel) = tool_choice(c)?;
        out.insert("tool_choice".into(), choice);
        if let Some(p) = parallel {
            out.insert("parallel_tool_calls".into(), p.into());
        }
    }
    match req.get("system") {
        None | Some(Value::Null) => {}
        Some(s) => messages.push(json!({ "role": "system", "content": text_of(s, "system")? })),
    }
    let turns = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| InvalidRequest::new("messages: required, an array").with_param("messages"))?;
    for (i, m) in turns.iter().enumerate() {
        turn(m, &format!("messages[{i}]"), &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    let stream = out.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let t = Translation { dialect: Dialect::MessagesClient, model: model.into(), include_usage: stream };
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|e| InvalidRequest::new(e.to_string()))?;
    Ok((bytes, t))
}

fn tools(v: &Value) -> Result<Value, InvalidRequest> {
    let list = v.as_array().ok_or_else(|| refuse("tools", "must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let param = format!("tools[{i}]");
            if t.get("type").and_then(Value::as_str).is_some_and(|ty| ty != "custom") {
                return Err(refuse(&param, "only client tools (name, input_schema) are supported"));
            }
            let name =
                t.get("name").and_then(Value::as_str).ok_or_else(|| refuse(&param, "name is required"))?;
            let mut f = Map::new();
            f.insert("name".into(), name.into());
            if let Some(d) = t.get("description") {
                f.insert("description".into(), d.clone());
            }
            f.insert(
                "parameters".into(),
                t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
            );
            Ok(json!({ "type": "function", "function": f }))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn tool_choice(c: &Value) -> Result<(Value, Option<bool>), InvalidRequest> {
    let parallel = c.get("disable_parallel_tool_use").and_then(Value::as_bool).filter(|d| *d).map(|_| false);
    let choice = match c.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| refuse("tool_choice", "name is required"))?;
            json!({ "type": "function", "function": { "name": name } })
        }
        _ => return Err(refuse("tool_choice", "type must be auto, any, tool or none")),
    };
    Ok((choice, parallel))
}

fn text_of(v: &Value, param: &str) -> Result<String, InvalidRequest> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => Ok(blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")),
        _ => Err(refuse(param, "must be a string or an array of text blocks")),
    }
}

/// One Messages turn as OpenAI messages: a user turn's tool results become
/// `tool` messages (before its other content), an assistant turn's
/// `tool_use` blocks its `tool_calls`.
fn turn(m: &Value, param: &str, out: &mut Vec<Value>) -> Result<(), InvalidRequest> {
    let role = m.get("role").and_then(Value::as_str).ok_or_else(|| refuse(param, "role is required"))?;
    let blocks: Vec<Value> = match m.get("content") {
        Some(Value::String(s)) => vec![json!({ "type": "text", "text": s })],
        Some(Value::Array(b)) => b.clone(),
        _ => return Err(refuse(param, "content must be a string or an array of blocks")),
    };
    match role {
        "user" => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let p = format!("{param}.content[{j}]");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts
                        .push(json!({ "type": "text", "text": b.get("text").cloned().unwrap_or_default() })),
                    Some("image") => {
                        let src = b.get("source").ok_or_else(|| refuse(&p, "source is required"))?;
                        let url = match src.get("type").and_then(Value::as_str) {
                            Some("base64") => format!(
                                "data:{};base64,{}",
                                src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                                src.get("data").and_then(Value::as_str).unwrap_or("")
                            ),
                            Some("url") => src.get("url").and_then(Value::as_str).unwrap_or("").to_owned(),
                            _ => return Err(refuse(&p, "image source must be base64 or url")),
                        };
                        parts.push(json!({ "type": "image_url", "image_url": { "url": url } }));
                    }
                    Some("tool_result") => {
                        let id = b.get("tool_use_id").ok_or_else(|| refuse(&p, "tool_use_id is required"))?;
                        let content = match b.get("content") {
                            None | Some(Value::Null) => String::new(),
                            Some(c) => text_of(c, &p)?,
                        };
                        out.push(json!({ "role": "tool", "tool_call_id": id, "content": content }));
                    }
                    other => {
                        return Err(refuse(
                            &p,
                            &format!("block {:?} is not supported", other.unwrap_or("?")),
                        ));
                    }
                }
            }
            if !parts.is_empty() {
                out.push(json!({ "role": "user", "content": parts }));
            }
        }
        "assistant" => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("tool_use") => calls.push(json!({
                        "id": b.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {
                            "name": b.get("name").cloned().unwrap_or(Value::Null),
                            "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                        },
                    })),
                    Some("thinking" | "redacted_thinking") => {}
                    other => {
                        let p = format!("{param}.content[{j}]");
                        return Err(refuse(
                            &p,
                            &format!("block {:?} is not supported", other.unwrap_or("?")),
                        ));
                    }
                }
            }
            let mut msg = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) } });
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            out.push(msg);
        }
        other => return Err(refuse(param, &format!("role {other:?} is not supported"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Anthropic fixture request (the same conversation the OpenAI
    /// fixture makes) comes back to OpenAI's shape.
    #[test]
    fn the_messages_fixture_maps_back_to_openai() {
        let messages = include_bytes!("../../../tests/fixtures/anthropic/messages_request.json");
        let mut v: Value = serde_json::from_slice(messages).unwrap();
        v["stream"] = json!(false);
        let (b, t) = to_chat(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(!t.include_usage);
        let chat: Value = serde_json::from_slice(&b).unwrap();
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "You are a weather bot.\n\nAnswer in Celsius."})
        );
        assert_eq!(m[1]["content"][1]["image_url"]["url"], "data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(m[2]["tool_calls"][1]["id"], "toolu_01B");
        assert_eq!(
            serde_json::from_str::<Value>(m[2]["tool_calls"][0]["function"]["arguments"].as_str().unwrap())
                .unwrap(),
            json!({"city": "Oslo"})
        );
        assert_eq!(
            (m[3]["role"].as_str(), m[3]["tool_call_id"].as_str(), m[4]["content"].as_str()),
            (Some("tool"), Some("toolu_01A"), Some("12 C, rain"))
        );
        assert_eq!(chat["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}));
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(
            (chat["max_tokens"].as_u64(), chat["stop"][0].as_str(), chat["user"].as_str()),
            (Some(512), Some("END"), Some("user-42"))
        );
        assert_eq!(chat["tools"][0]["function"]["parameters"]["required"][0], "city");
    }

    #[test]
    fn streams_ask_for_usage_and_refusals_name_the_parameter() {
        let (b, t) = to_chat(
            br#"{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert!(t.include_usage);
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["stream_options"]["include_usage"], true);
        for (body, param) in [
            (json!({"model": "m", "messages": []}), "max_tokens"),
            (json!({"model": "m", "max_tokens": 1, "messages": [], "top_k": 5}), "top_k"),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [], "thinking": {"type": "enabled"}}),
                "thinking",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "document"}]}]}),
                "messages[0].content[0]",
            ),
        ] {
            let err = to_chat(&serde_json::to_vec(&body).unwrap()).unwrap_err();
            assert_eq!(err.param(), Some(param), "{body}: {err}");
        }
    }
}
