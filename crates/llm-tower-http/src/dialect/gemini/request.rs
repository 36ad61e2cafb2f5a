//! An OpenAI chat completion request as a Gemini `generateContent` request.

use llm_tower_core::InvalidRequest;
use serde_json::{Map, Value, json};

use crate::dialect::{Dialect, Translation, data_url, openai_functions, openai_text, openai_tool_calls};

fn refuse(param: &str, why: &str) -> InvalidRequest {
    InvalidRequest::new(format!("{param}: {why} (the provider speaks Gemini)")).with_param(param)
}

/// The body of `models/{model}:generateContent` for `body` (an OpenAI chat
/// completion request), whether it streams, and the answer's translation.
pub(crate) fn to_generate_content(body: &[u8]) -> Result<(Vec<u8>, bool, Translation), InvalidRequest> {
    let req: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| InvalidRequest::new(format!("the body is not a JSON object: {e}")))?;
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty() && m.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)))
        .ok_or_else(|| InvalidRequest::new("model: required, a Gemini model name").with_param("model"))?;
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut config = Map::new();
    let mut out = Map::new();
    for (k, v) in &req {
        match k.as_str() {
            "model"
            | "messages"
            | "stream"
            | "stream_options"
            | "tool_choice"
            | "user"
            | "store"
            | "metadata"
            | "service_tier"
            | "parallel_tool_calls" => {}
            "max_tokens" | "max_completion_tokens" => {
                let n = v.as_u64().ok_or_else(|| refuse(k, "must be a positive integer"))?;
                config.insert("maxOutputTokens".into(), n.into());
            }
            "temperature" => {
                config.insert("temperature".into(), v.clone());
            }
            "top_p" => {
                config.insert("topP".into(), v.clone());
            }
            "seed" => {
                config.insert("seed".into(), v.clone());
            }
            "presence_penalty" => {
                config.insert("presencePenalty".into(), v.clone());
            }
            "frequency_penalty" => {
                config.insert("frequencyPenalty".into(), v.clone());
            }
            "stop" => {
                let seqs = match v {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(a) => a.clone(),
                    Value::Null => continue,
                    _ => return Err(refuse(k, "must be a string or an array of strings")),
                };
                config.insert("stopSequences".into(), Value::Array(seqs));
            }
            "n" => match v.as_u64() {
                Some(1) | None => {}
                Some(_) if stream => {
                    return Err(refuse(k, "more than one choice is not supported for streams"));
                }
                Some(n) => {
                    config.insert("candidateCount".into(), n.into());
                }
            },
            "response_format" => match v.get("type").and_then(Value::as_str) {
                Some("text") | None => {}
                Some("json_object") => {
                    config.insert("responseMimeType".into(), "application/json".into());
                }
                Some("json_schema") => {
                    config.insert("responseMimeType".into(), "application/json".into());
                    if let Some(s) = v.pointer("/json_schema/schema") {
                        config.insert("responseJsonSchema".into(), s.clone());
                    }
                }
                Some(_) => return Err(refuse(k, "unknown type")),
            },
            "tools" => {
                out.insert("tools".into(), tools(v)?);
            }
            "logprobs" | "top_logprobs" | "logit_bias" | "audio" | "modalities" | "prediction" => {
                if !v.is_null() && v != &Value::Bool(false) {
                    return Err(refuse(k, "not supported"));
                }
            }
            "reasoning_effort" => {}
            other => return Err(refuse(other, "unknown parameter")),
        }
    }
    if let Some(c) = tool_choice(req.get("tool_choice"))? {
        out.insert("toolConfig".into(), json!({ "functionCallingConfig": c }));
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| InvalidRequest::new("messages: required, an array").with_param("messages"))?;
    let (system, contents) = conversation(messages)?;
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": [{ "text": system }] }));
    }
    out.insert("contents".into(), Value::Array(contents));
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let t = Translation { dialect: Dialect::Gemini, model: model.into(), include_usage };
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|e| InvalidRequest::new(e.to_string()))?;
    Ok((bytes, stream, t))
}

fn tools(v: &Value) -> Result<Value, InvalidRequest> {
    let functions = openai_functions(v).map_err(|(param, why)| refuse(&param, why))?;
    let decls: Vec<Value> = functions
        .into_iter()
        .map(|(name, f)| {
            let mut d = Map::new();
            d.insert("name".into(), name.into());
            if let Some(desc) = f.get("description") {
                d.insert("description".into(), desc.clone());
            }
            if let Some(p) = f.get("parameters") {
                d.insert("parameters".into(), p.clone());
            }
            Value::Object(d)
        })
        .collect();
    Ok(json!([{ "functionDeclarations": decls }]))
}

fn tool_choice(choice: Option<&Value>) -> Result<Option<Value>, InvalidRequest> {
    Ok(Some(match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({ "mode": "AUTO" }),
            "required" => json!({ "mode": "ANY" }),
            "none" => json!({ "mode": "NONE" }),
            _ => return Err(refuse("tool_choice", "must be auto, required, none or a function")),
        },
        Some(v) => match v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
            None => return Err(refuse("tool_choice", "a function choice needs function.name")),
        },
    }))
}

/// The system instruction and the contents (roles `user` and `model`,
/// consecutive turns of one role merged; tool results are `user` turns of
/// `functionResponse` parts named after the call they answer).
fn conversation(messages: &[Value]) -> Result<(String, Vec<Value>), InvalidRequest> {
    let mut system = String::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool call ids to function names, from the assistant turns so far.
    let mut calls: Vec<(String, String)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| refuse(&param, "role is required"))?;
        let (role, parts) = match role {
            "system" | "developer" => {
                if !system.is_empty() {
                    system.push_str("\n\n");
                }
                system.push_str(&text_of(m.get("content"), &param)?);
                continue;
            }
            "user" => ("user", parts_of(m.get("content"), &param)?),
            "assistant" => {
                let mut parts = match m.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    c => parts_of(c, &param)?,
                };
                for c in openai_tool_calls(m, &param).map_err(|(p, why)| refuse(&p, why))? {
                    if let Some(id) = c.id {
                        calls.push((id.to_owned(), c.name.to_owned()));
                    }
                    parts.push(json!({ "functionCall": { "name": c.name, "args": c.args } }));
                }
                ("model", parts)
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| refuse(&param, "tool_call_id is required"))?;
                let name = calls
                    .iter()
                    .rev()
                    .find(|(c, _)| c == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| refuse(&param, "tool_call_id names no earlier tool call"))?;
                let text = text_of(m.get("content"), &param)?;
                // Gemini wants an object: a JSON object result as it is, anything else wrapped.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({ "content": text }),
                };
                ("user", vec![json!({ "functionResponse": { "name": name, "response": response } })])
            }
            other => return Err(refuse(&param, &format!("role {other:?} is not supported"))),
        };
        match turns.last_mut() {
            Some((r, p)) if *r == role => p.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let contents = turns.into_iter().map(|(role, parts)| json!({ "role": role, "parts": parts })).collect();
    Ok((system, contents))
}

fn text_of(content: Option<&Value>, param: &str) -> Result<String, InvalidRequest> {
    openai_text(content).ok_or_else(|| refuse(param, "content must be a string or an array of parts"))
}

fn parts_of(content: Option<&Value>, param: &str) -> Result<Vec<Value>, InvalidRequest> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let param = format!("{param}.content[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => Ok(json!({ "text": p.get("text").cloned().unwrap_or_default() })),
                    Some("image_url") => {
                        let url = p
                            .get("image_url")
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| refuse(&param, "image_url.url is required"))?;
                        match data_url(url) {
                            Some((mime, data)) => {
                                Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
                            }
                            None => Err(refuse(&param, "Gemini takes images inline: use a base64 data URL")),
                        }
                    }
                    other => Err(refuse(
                        &param,
                        &format!("content part {:?} is not supported", other.unwrap_or("?")),
                    )),
                }
            })
            .collect(),
        None | Some(Value::Null) => Ok(Vec::new()),
        _ => Err(refuse(param, "content must be a string or an array of parts")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_request_maps_field_by_field() {
        let openai = include_bytes!("../../../tests/fixtures/gemini/openai_request.json");
        let want: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/gemini/generate_content_request.json"
        ))
        .unwrap();
        let (b, stream, t) = to_generate_content(openai).unwrap();
        assert!(stream && t.include_usage);
        assert_eq!(&*t.model, "gemini-2.0-flash");
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap(), want);
    }

    #[test]
    fn refusals_name_the_parameter() {
        for (body, param) in [
            (json!({"model": "gemini-2.0-flash", "messages": [], "n": 2, "stream": true}), "n"),
            (json!({"model": "gemini-2.0-flash", "messages": [], "logprobs": true}), "logprobs"),
            (json!({"model": "a/b", "messages": []}), "model"),
            (
                json!({"model": "gemini-2.0-flash", "messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}),
                "messages[0]",
            ),
            (
                json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
                "messages[0].content[0]",
            ),
        ] {
            let err = to_generate_content(&serde_json::to_vec(&body).unwrap()).unwrap_err();
            assert_eq!(err.param(), Some(param), "{body}: {err}");
        }
        let (b, _, _) = to_generate_content(br#"{"model":"gemini-2.0-flash","n":3,"messages":[]}"#).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["generationConfig"]["candidateCount"], 3);
    }
}
