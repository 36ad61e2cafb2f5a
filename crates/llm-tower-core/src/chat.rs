//! OpenAI-compatible chat, embeddings and error types.
//!
//! Every object keeps the fields it does not know in `extra`, so a request or
//! response read and written back carries all of its fields: tools,
//! `response_format`, reasoning options and vendor extensions pass through.
//!
//! ```
//! use llm_tower_core::chat::ChatCompletionRequest;
//!
//! let json = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"vendor_knob":3}"#;
//! let req: ChatCompletionRequest = serde_json::from_str(json).unwrap();
//! assert_eq!(req.extra["vendor_knob"], 3);
//! let back = serde_json::to_value(&req).unwrap();
//! assert_eq!(back["vendor_knob"], 3);
//! ```

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::Usage;

/// Unknown fields of an object, kept in order of appearance-independent map form.
pub type Extra = Map<String, Value>;

/// Deserializes a present field (even `null`) as `Some`, so that `null` survives a round trip.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `POST /v1/chat/completions` request body.
///
/// ```
/// let req = llm_tower_core::chat::ChatCompletionRequest::new(
///     "gpt-4o-mini",
///     vec![llm_tower_core::chat::ChatMessage::user("hello")],
/// );
/// assert_eq!(serde_json::to_value(&req).unwrap()["messages"][0]["role"], "user");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Legacy output cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Output cap (newer name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Number of choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Every other field (tools, response_format, vendor extensions, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatCompletionRequest {
    /// A request with only a model and messages.
    ///
    /// ```
    /// let r = llm_tower_core::chat::ChatCompletionRequest::new("m", vec![]);
    /// assert_eq!(r.model, "m");
    /// ```
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            stream: None,
            stream_options: None,
            max_tokens: None,
            max_completion_tokens: None,
            n: None,
            temperature: None,
            top_p: None,
            seed: None,
            extra: Extra::new(),
        }
    }
}

/// `stream_options` of a chat request.
///
/// ```
/// let o: llm_tower_core::chat::StreamOptions =
///     serde_json::from_str(r#"{"include_usage":true}"#).unwrap();
/// assert_eq!(o.include_usage, Some(true));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Ask for a final chunk carrying usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other options.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One chat message (also used for a streamed `delta`, where `role` may be absent).
///
/// ```
/// let m = llm_tower_core::chat::ChatMessage::user("hi");
/// assert_eq!(m.text(), Some("hi"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A string, an array of content parts, or `null` (kept as given).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Other fields (name, tool_calls, tool_call_id, refusal, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatMessage {
    /// A message with a role and text content.
    ///
    /// ```
    /// let m = llm_tower_core::chat::ChatMessage::new("system", "be brief");
    /// assert_eq!(m.role.as_deref(), Some("system"));
    /// ```
    pub fn new(role: &str, text: impl Into<String>) -> Self {
        Self { role: Some(role.to_owned()), content: Some(Value::String(text.into())), extra: Extra::new() }
    }

    /// A `user` message.
    ///
    /// ```
    /// assert_eq!(llm_tower_core::chat::ChatMessage::user("x").role.as_deref(), Some("user"));
    /// ```
    pub fn user(text: impl Into<String>) -> Self {
        Self::new("user", text)
    }

    /// The content when it is a plain string.
    ///
    /// ```
    /// assert_eq!(llm_tower_core::chat::ChatMessage::user("x").text(), Some("x"));
    /// ```
    pub fn text(&self) -> Option<&str> {
        self.content.as_ref().and_then(Value::as_str)
    }
}

/// Token usage as OpenAI reports it.
///
/// ```
/// use llm_tower_core::chat::CompletionUsage;
/// let u: CompletionUsage = serde_json::from_str(
///     r#"{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}"#).unwrap();
/// assert_eq!(llm_tower_core::Usage::from(&u).output, 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionUsage {
    /// Input tokens (including cached ones).
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens (including reasoning ones).
    #[serde(default)]
    pub completion_tokens: u64,
    /// Sum of both.
    #[serde(default)]
    pub total_tokens: u64,
    /// Other fields (`prompt_tokens_details`, `completion_tokens_details`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

impl From<&CompletionUsage> for Usage {
    fn from(u: &CompletionUsage) -> Self {
        let detail = |obj: &str, field: &str| {
            u.extra.get(obj).and_then(|d| d.get(field)).and_then(Value::as_u64).unwrap_or(0)
        };
        Usage {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            cached_input: detail("prompt_tokens_details", "cached_tokens"),
            reasoning: detail("completion_tokens_details", "reasoning_tokens"),
        }
    }
}

impl From<Usage> for CompletionUsage {
    fn from(u: Usage) -> Self {
        let mut extra = Extra::new();
        extra.insert("prompt_tokens_details".into(), serde_json::json!({"cached_tokens": u.cached_input}));
        extra
            .insert("completion_tokens_details".into(), serde_json::json!({"reasoning_tokens": u.reasoning}));
        CompletionUsage {
            prompt_tokens: u.input,
            completion_tokens: u.output,
            total_tokens: u.input + u.output,
            extra,
        }
    }
}

/// A non-streamed chat completion.
///
/// ```
/// let json = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m",
///   "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
///   "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
/// let r: llm_tower_core::chat::ChatCompletionResponse = serde_json::from_str(json).unwrap();
/// assert_eq!(r.choices[0].message.text(), Some("hi"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    /// Completion id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model that answered.
    pub model: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Usage, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
    /// Other fields (system_fingerprint, service_tier, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One choice of a [`ChatCompletionResponse`].
///
/// ```
/// let c: llm_tower_core::chat::ChatChoice = serde_json::from_str(
///     r#"{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":null}"#).unwrap();
/// assert!(c.finish_reason.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Position.
    pub index: u32,
    /// The answer.
    pub message: ChatMessage,
    /// `stop`, `length`, `tool_calls`, `content_filter`, or `null`.
    pub finish_reason: Option<String>,
    /// Other fields (logprobs, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One streamed `chat.completion.chunk`.
///
/// ```
/// let c: llm_tower_core::chat::ChatCompletionChunk = serde_json::from_str(
///   r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
///       "choices":[{"index":0,"delta":{"content":"he"},"finish_reason":null}]}"#).unwrap();
/// assert_eq!(c.choices[0].delta.text(), Some("he"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Completion id (the same for every chunk).
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model that answered.
    pub model: String,
    /// Deltas (empty in the final usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Usage: only in the final chunk when `include_usage` was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One choice of a [`ChatCompletionChunk`].
///
/// ```
/// let c: llm_tower_core::chat::ChunkChoice = serde_json::from_str(
///     r#"{"index":0,"delta":{},"finish_reason":"stop"}"#).unwrap();
/// assert_eq!(c.finish_reason.as_deref(), Some("stop"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Position.
    pub index: u32,
    /// What this chunk adds.
    pub delta: ChatMessage,
    /// Set on the last content chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/embeddings` request body.
///
/// ```
/// let r: llm_tower_core::chat::EmbeddingsRequest =
///     serde_json::from_str(r#"{"model":"e","input":["a","b"]}"#).unwrap();
/// assert_eq!(r.inputs().len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    /// Model name.
    pub model: String,
    /// A string, an array of strings, or token arrays.
    pub input: Value,
    /// Other fields (dimensions, encoding_format, user).
    #[serde(flatten)]
    pub extra: Extra,
}

impl EmbeddingsRequest {
    /// The inputs as a list (a single string is a list of one).
    ///
    /// ```
    /// let r: llm_tower_core::chat::EmbeddingsRequest =
    ///     serde_json::from_str(r#"{"model":"e","input":"a"}"#).unwrap();
    /// assert_eq!(r.inputs(), vec![&serde_json::json!("a")]);
    /// ```
    pub fn inputs(&self) -> Vec<&Value> {
        match &self.input {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        }
    }
}

/// One entry of `GET /v1/models`.
///
/// ```
/// let m = llm_tower_core::chat::Model::new("gpt-4o-mini", "openai");
/// assert_eq!(serde_json::to_value(&m).unwrap()["object"], "model");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Model name.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Owner.
    pub owned_by: String,
}

impl Model {
    /// A model entry.
    ///
    /// ```
    /// assert_eq!(llm_tower_core::chat::Model::new("a", "b").owned_by, "b");
    /// ```
    pub fn new(id: impl Into<String>, owned_by: impl Into<String>) -> Self {
        Self { id: id.into(), object: "model".into(), created: 0, owned_by: owned_by.into() }
    }
}

/// `GET /v1/models` response body.
///
/// ```
/// let l = llm_tower_core::chat::ModelList::new(vec![llm_tower_core::chat::Model::new("a", "b")]);
/// assert_eq!(l.object, "list");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

impl ModelList {
    /// A list of models.
    ///
    /// ```
    /// assert!(llm_tower_core::chat::ModelList::new(vec![]).data.is_empty());
    /// ```
    pub fn new(data: Vec<Model>) -> Self {
        Self { object: "list".into(), data }
    }
}

/// An OpenAI-format error body: `{"error":{"message":..,"type":..,"param":..,"code":..}}`.
///
/// ```
/// let e = llm_tower_core::chat::ErrorBody::new("bad", "invalid_request_error", Some("model"), None);
/// let v = serde_json::to_value(&e).unwrap();
/// assert_eq!(v["error"]["param"], "model");
/// assert!(v["error"]["code"].is_null());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// The inner object of an [`ErrorBody`].
///
/// ```
/// let o: llm_tower_core::chat::ErrorObject =
///     serde_json::from_str(r#"{"message":"m","type":"t"}"#).unwrap();
/// assert_eq!(o.kind, "t");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// Human-readable message.
    pub message: String,
    /// Error type (`invalid_request_error`, `rate_limit_error`, ...).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The request parameter at fault.
    #[serde(default)]
    pub param: Option<String>,
    /// Machine-readable code.
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorBody {
    /// Builds an error body.
    ///
    /// ```
    /// let e = llm_tower_core::chat::ErrorBody::new("m", "t", None, Some("c"));
    /// assert_eq!(e.error.code.as_deref(), Some("c"));
    /// ```
    pub fn new(message: impl Into<String>, kind: &str, param: Option<&str>, code: Option<&str>) -> Self {
        ErrorBody {
            error: ErrorObject {
                message: message.into(),
                kind: kind.to_owned(),
                param: param.map(str::to_owned),
                code: code.map(str::to_owned),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KNOWN: &[&str] = &[
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "temperature",
        "top_p",
        "seed",
        "role",
        "content",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn extra_fields() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("[a-z_]{1,10}", json_value(), 0..5)
            .prop_map(|m| m.into_iter().filter(|(k, _)| !KNOWN.contains(&k.as_str())).collect())
    }

    proptest! {
        #[test]
        fn request_round_trips_unknown_fields(
            top in extra_fields(),
            msg in extra_fields(),
            stream in proptest::option::of(any::<bool>()),
            content_null in any::<bool>(),
        ) {
            let mut original = serde_json::json!({
                "model": "m",
                "messages": [{"role": "assistant", "content": if content_null { Value::Null } else { "x".into() }}],
            });
            if let Some(s) = stream { original["stream"] = s.into(); }
            for (k, v) in &top { original[k] = v.clone(); }
            for (k, v) in &msg { original["messages"][0][k] = v.clone(); }

            let parsed: ChatCompletionRequest = serde_json::from_value(original.clone()).unwrap();
            let back = serde_json::to_value(&parsed).unwrap();
            prop_assert_eq!(back, original);
        }

        #[test]
        fn response_round_trips_unknown_fields(top in extra_fields(), choice in extra_fields()) {
            let mut original = serde_json::json!({
                "id": "c", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                          "prompt_tokens_details": {"cached_tokens": 1}},
            });
            for (k, v) in &top {
                if !["id", "object", "created", "choices", "usage"].contains(&k.as_str()) { original[k] = v.clone(); }
            }
            for (k, v) in &choice {
                if !["index", "message", "finish_reason"].contains(&k.as_str()) { original["choices"][0][k] = v.clone(); }
            }
            let parsed: ChatCompletionResponse = serde_json::from_value(original.clone()).unwrap();
            prop_assert_eq!(serde_json::to_value(&parsed).unwrap(), original);
        }
    }

    #[test]
    fn usage_details_convert() {
        let u: CompletionUsage = serde_json::from_value(serde_json::json!({
            "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2}
        }))
        .unwrap();
        let usage = Usage::from(&u);
        assert_eq!(usage, Usage { input: 10, output: 5, cached_input: 4, reasoning: 2 });
        assert_eq!(Usage::from(&CompletionUsage::from(usage)), usage);
    }
}
