//! Tool calls: a request offering tools (and not forbidding them, and not
//! already answering one) gets a call of its first (or chosen) tool, in the
//! request's dialect, with arguments made from the tool's schema.

use super::*;

/// The call the mock answers with.
#[derive(Clone, Debug)]
pub(super) struct ToolCall {
    pub(super) id: String,
    pub(super) name: String,
    /// The arguments object.
    pub(super) arguments: Value,
}

impl ToolCall {
    /// The arguments as OpenAI sends them: a JSON string.
    pub(super) fn arguments_text(&self) -> String {
        self.arguments.to_string()
    }
}

/// The tool call a request of `kind` asks for, if any.
pub(super) fn wanted(kind: Kind, req: &Value, n: u64) -> Option<ToolCall> {
    let (name, schema, id) = match kind {
        Kind::Chat => {
            let tools = req.get("tools")?.as_array()?;
            match req.get("tool_choice") {
                Some(Value::String(s)) if s == "none" => return None,
                _ => {}
            }
            let last = req.get("messages")?.as_array()?.last()?;
            if last.get("role").and_then(Value::as_str) == Some("tool") {
                return None;
            }
            let chosen = req.pointer("/tool_choice/function/name").and_then(Value::as_str);
            let f = tools
                .iter()
                .filter_map(|t| t.get("function"))
                .find(|f| chosen.is_none_or(|c| f.get("name").and_then(Value::as_str) == Some(c)))?;
            (f.get("name")?.as_str()?, f.get("parameters"), format!("call_mock_{n}"))
        }
        Kind::Messages => {
            let tools = req.get("tools")?.as_array()?;
            if req.pointer("/tool_choice/type").and_then(Value::as_str) == Some("none") {
                return None;
            }
            let last = req.get("messages")?.as_array()?.last()?;
            let answered = last.get("content").and_then(Value::as_array).is_some_and(|blocks| {
                blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            });
            if answered {
                return None;
            }
            let chosen = req.pointer("/tool_choice/name").and_then(Value::as_str);
            let t = tools
                .iter()
                .find(|t| chosen.is_none_or(|c| t.get("name").and_then(Value::as_str) == Some(c)))?;
            (t.get("name")?.as_str()?, t.get("input_schema"), format!("toolu_mock_{n}"))
        }
        Kind::Gemini | Kind::GeminiStream => {
            let decls = req.get("tools")?.as_array()?.iter().filter_map(|t| t.get("functionDeclarations"));
            let decls: Vec<&Value> = decls.filter_map(Value::as_array).flatten().collect();
            let cfg = req.pointer("/toolConfig/functionCallingConfig");
            if cfg.and_then(|c| c.get("mode")).and_then(Value::as_str) == Some("NONE") {
                return None;
            }
            let last = req.get("contents")?.as_array()?.last()?;
            let answered = last
                .get("parts")
                .and_then(Value::as_array)
                .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
            if answered {
                return None;
            }
            let chosen = cfg.and_then(|c| c.pointer("/allowedFunctionNames/0")).and_then(Value::as_str);
            let d = decls
                .into_iter()
                .find(|d| chosen.is_none_or(|c| d.get("name").and_then(Value::as_str) == Some(c)))?;
            (d.get("name")?.as_str()?, d.get("parameters"), String::new())
        }
        Kind::Embeddings => return None,
    };
    Some(ToolCall { id, name: name.to_owned(), arguments: arguments(schema) })
}

/// An arguments object for a JSON schema: each required property (or the
/// first, when none is required) with a value of its type.
fn arguments(schema: Option<&Value>) -> Value {
    let mut out = serde_json::Map::new();
    let Some(props) = schema.and_then(|s| s.get("properties")).and_then(Value::as_object) else {
        return Value::Object(out);
    };
    let required: Vec<&str> = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, p) in props {
        if !(required.contains(&name.as_str()) || (required.is_empty() && out.is_empty())) {
            continue;
        }
        let ty = p.get("type").and_then(Value::as_str).map(str::to_ascii_lowercase);
        let v = match ty.as_deref() {
            Some("integer") => json!(1),
            Some("number") => json!(1.5),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!("mock"),
        };
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}
