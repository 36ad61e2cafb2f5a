//! An OpenAI chat completion request as an Anthropic Messages request.

use llm_tower_core::InvalidRequest;
use serde_json::{Map, Value, json};

use super::DEFAULT_MAX_TOKENS;
use crate::dialect::{Dialect, Translation, data_url, openai_functions, openai_text, openai_tool_calls};

fn refuse(param: &str, why: &str) -> InvalidRequest {
    InvalidRequest::new(format!("{param}: {why} (the provider speaks Anthropic Messages)")).with_param(param)
}

/// Translates `body` (an OpenAI chat completion request) into the body of
/// Anthropic's `POST /v1/messages`, and what the answer's translation needs.
pub(crate) fn to_messages(body: &[u8]) -> Result<(Vec<u8>, Translation), InvalidRequest> {
    let req: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| InvalidRequest::new(format!("the body is not a JSON object: {e}")))?;
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| InvalidRequest::new("model: required").with_param("model"))?;
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    for (k, v) in &req {
        match k.as_str() {
            "model" | "messages" | "stream_options" => {}
            "max_tokens" | "max_completion_tokens" => {
                let n = v.as_u64().ok_or_else(|| refuse(k, "must be a positive integer"))?;
                out.insert("max_tokens".into(), n.into());
            }
            "temperature" => {
                let t = v.as_f64().ok_or_else(|| refuse(k, "must be a number"))?;
                if !(0.0..=1.0).contains(&t) {
                    return Err(refuse(k, "must be between 0 and 1"));
                }
                out.insert(k.clone(), v.clone());
            }
            "top_p" => {
                out.insert(k.clone(), v.clone());
            }
            "stream" => {
                out.insert(k.clone(), Value::Bool(v.as_bool().unwrap_or(false)));
            }
            "stop" => {
                let seqs = match v {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(a) => a.clone(),
                    Value::Null => continue,
                    _ => return Err(refuse(k, "must be a string or an array of strings")),
                };
                out.insert("stop_sequences".into(), Value::Array(seqs));
            }
            "n" => {
                if v.as_u64().is_some_and(|n| n != 1) {
                    return Err(refuse(k, "only 1 choice per request is supported"));
                }
            }
            "user" => {
                out.insert("metadata".into(), json!({ "user_id": v }));
            }
            "tools" => {
                out.insert("tools".into(), tools(v)?);
            }
            "tool_choice" | "parallel_tool_calls" => {}
            "response_format" => {
                if v.get("type").and_then(Value::as_str).is_some_and(|t| t != "text") {
                    return Err(refuse(k, "JSON output modes are not supported"));
                }
            }
            "logprobs" | "top_logprobs" | "logit_bias" | "audio" | "modalities" | "prediction" => {
                if !v.is_null() && v != &Value::Bool(false) {
                    return Err(refuse(k, "not supported"));
                }
            }
            // Sampling hints with no equivalent, and OpenAI-only bookkeeping:
            // dropped (the answer is still a valid one).
            "seed" | "frequency_penalty" | "presence_penalty" | "service_tier" | "store" | "metadata"
            | "reasoning_effort" => {}
            other => return Err(refuse(other, "unknown parameter")),
        }
    }
    out.entry("max_tokens").or_insert(DEFAULT_MAX_TOKENS.into());
    if let Some(choice) = tool_choice(req.get("tool_choice"), req.get("parallel_tool_calls"))? {
        out.insert("tool_choice".into(), choice);
    }
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| InvalidRequest::new("messages: required, an array").with_param("messages"))?;
    let (system, turns) = conversation(messages)?;
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system));
    }
    out.insert("messages".into(), Value::Array(turns));
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let t = Translation { dialect: Dialect::Anthropic, model: model.into(), include_usage };
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|e| InvalidRequest::new(e.to_string()))?;
    Ok((bytes, t))
}

fn tools(v: &Value) -> Result<Value, InvalidRequest> {
    let functions = openai_functions(v).map_err(|(param, why)| refuse(&param, why))?;
    let tools = functions.into_iter().map(|(name, f)| {
        let mut tool = Map::new();
        tool.insert("name".into(), name.into());
        if let Some(d) = f.get("description") {
            tool.insert("description".into(), d.clone());
        }
        let schema =
            f.get("parameters").cloned().unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
        tool.insert("input_schema".into(), schema);
        Value::Object(tool)
    });
    Ok(Value::Array(tools.collect()))
}

fn tool_choice(choice: Option<&Value>, parallel: Option<&Value>) -> Result<Option<Value>, InvalidRequest> {
    let mut c = match choice {
        None | Some(Value::Null) => match parallel {
            Some(Value::Bool(false)) => json!({ "type": "auto" }),
            _ => return Ok(None),
        },
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({ "type": "auto" }),
            "required" => json!({ "type": "any" }),
            "none" => json!({ "type": "none" }),
            _ => return Err(refuse("tool_choice", "must be auto, required, none or a function")),
        },
        Some(v) => match v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => json!({ "type": "tool", "name": name }),
            None => return Err(refuse("tool_choice", "a function choice needs function.name")),
        },
    };
    if parallel == Some(&Value::Bool(false)) && c["type"] != "none" {
        c["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Ok(Some(c))
}

/// The system prompt (system and developer messages, joined) and the turns,
/// consecutive turns of one role merged (tool results are user turns).
fn conversation(messages: &[Value]) -> Result<(String, Vec<Value>), InvalidRequest> {
    let mut system = String::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| refuse(&param, "role is required"))?;
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = text_of(m.get("content"), &param)?;
                if !system.is_empty() {
                    system.push_str("\n\n");
                }
                system.push_str(&text);
                continue;
            }
            "user" => ("user", content_blocks(m.get("content"), &param)?),
            "assistant" => {
                let mut blocks = match m.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    c => content_blocks(c, &param)?,
                };
                let calls = openai_tool_calls(m, &param).map_err(|(p, why)| refuse(&p, why))?;
                blocks.extend(
                    calls
                        .into_iter()
                        .map(|c| json!({ "type": "tool_use", "id": c.id, "name": c.name, "input": c.args })),
                );
                ("assistant", blocks)
            }
            "tool" => {
                let id = m.get("tool_call_id").ok_or_else(|| refuse(&param, "tool_call_id is required"))?;
                let text = text_of(m.get("content"), &param)?;
                ("user", vec![json!({ "type": "tool_result", "tool_use_id": id, "content": text })])
            }
            other => return Err(refuse(&param, &format!("role {other:?} is not supported"))),
        };
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns =
        turns.into_iter().map(|(role, content)| json!({ "role": role, "content": content })).collect();
    Ok((system, turns))
}

/// The text of a message's content (a string, or its text parts joined).
fn text_of(content: Option<&Value>, param: &str) -> Result<String, InvalidRequest> {
    openai_text(content).ok_or_else(|| refuse(param, "content must be a string or an array of parts"))
}

/// A user or assistant message's content as Anthropic blocks.
fn content_blocks(content: Option<&Value>, param: &str) -> Result<Vec<Value>, InvalidRequest> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({ "type": "text", "text": s })]),
        Some(Value::Array(parts)) => {
            parts.iter().enumerate().map(|(j, p)| part(p, &format!("{param}.content[{j}]"))).collect()
        }
        None | Some(Value::Null) => Ok(Vec::new()),
        _ => Err(refuse(param, "content must be a string or an array of parts")),
    }
}

fn part(p: &Value, param: &str) -> Result<Value, InvalidRequest> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({ "type": "text", "text": p.get("text").cloned().unwrap_or_default() })),
        Some("image_url") => {
            let url = p
                .get("image_url")
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Value::as_str)
                .ok_or_else(|| refuse(param, "image_url.url is required"))?;
            let source = match data_url(url) {
                Some((media_type, data)) => {
                    json!({ "type": "base64", "media_type": media_type, "data": data })
                }
                None if url.starts_with("data:") => return Err(refuse(param, "a data URL must be base64")),
                None => json!({ "type": "url", "url": url }),
            };
            Ok(json!({ "type": "image", "source": source }))
        }
        other => Err(refuse(param, &format!("content part {:?} is not supported", other.unwrap_or("?")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(req: Value) -> Value {
        let (b, _) = to_messages(&serde_json::to_vec(&req).unwrap()).unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn fixture_request_maps_field_by_field() {
        let openai: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/anthropic/openai_request.json"))
                .unwrap();
        let want: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/anthropic/messages_request.json"))
                .unwrap();
        assert_eq!(translate(openai), want);
    }

    #[test]
    fn defaults_and_merges() {
        let r = translate(json!({"model": "claude", "messages": [
            {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}));
        assert_eq!(r["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(r["messages"].as_array().unwrap().len(), 1, "two user turns become one: {r}");
        assert!(r.get("system").is_none() && r.get("tool_choice").is_none());
        let (_, t) = to_messages(
            br#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(t.include_usage);
    }

    #[test]
    fn refusals_name_the_parameter() {
        for (body, param) in [
            (json!({"model": "m", "messages": [], "n": 2}), "n"),
            (json!({"model": "m", "messages": [], "temperature": 1.5}), "temperature"),
            (
                json!({"model": "m", "messages": [], "response_format": {"type": "json_object"}}),
                "response_format",
            ),
            (json!({"model": "m", "messages": [], "logprobs": true}), "logprobs"),
            (json!({"model": "m", "messages": [], "bogus": 1}), "bogus"),
            (json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}), "messages[0]"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "messages[0].content[0]",
            ),
        ] {
            let err = to_messages(&serde_json::to_vec(&body).unwrap()).unwrap_err();
            assert_eq!(err.param(), Some(param), "{body}: {err}");
        }
    }
}
