//! [`RequestInfo`]: what a request means, parsed once and shared by every layer.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

use serde_json::value::RawValue;

use crate::LlmBody;
use crate::error::InvalidRequest;
use crate::parts::SeenMessages;

#[doc(inline)]
pub use crate::json::borrowed_str;

/// Which LLM API a request targets, decided from its path.
///
/// ```
/// use llm_tower_core::Api;
/// assert_eq!(Api::from_path("/v1/chat/completions"), Api::ChatCompletions);
/// assert_eq!(Api::from_path("/v1/messages"), Api::AnthropicMessages);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// Anything else (passed through untouched).
    Other,
}

impl Api {
    /// Classifies a request path (the `/v1` prefix is optional).
    ///
    /// ```
    /// assert_eq!(llm_tower_core::Api::from_path("/embeddings"), llm_tower_core::Api::Embeddings);
    /// ```
    pub fn from_path(path: &str) -> Self {
        let p = path.strip_prefix("/v1").unwrap_or(path);
        match p {
            "/chat/completions" => Api::ChatCompletions,
            "/embeddings" => Api::Embeddings,
            "/responses" => Api::Responses,
            "/messages" => Api::AnthropicMessages,
            _ => Api::Other,
        }
    }
}

/// The meaning of one LLM request, parsed once from its JSON body.
///
/// The first layer that needs it calls [`RequestInfo::ensure`], which parses the
/// body and stores an `Arc<RequestInfo>` in the request's extensions; every later
/// layer reads that copy ([`RequestInfo::get`]). Parsing borrows from the body
/// and skips message contents without building a JSON tree.
///
/// `tenant` and `estimated_input_tokens` start empty: the layers that know them
/// (tenant resolution, token counting) fill them in by replacing the extension.
///
/// ```
/// use llm_tower_core::{Api, RequestInfo};
///
/// let body = br#"{"model":"gpt-4o-mini","stream":true,
///   "stream_options":{"include_usage":true},"max_tokens":64,
///   "messages":[{"role":"user","content":"hi"}]}"#;
/// let info = RequestInfo::parse(Api::ChatCompletions, body).unwrap();
/// assert_eq!(&*info.model, "gpt-4o-mini");
/// assert!(info.stream && info.include_usage);
/// assert_eq!(info.max_tokens, Some(64));
/// assert_eq!(info.message_count, 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The API the request targets.
    pub api: Api,
    /// The requested model, as the caller named it.
    pub model: Arc<str>,
    /// Whether a streamed (SSE) response was asked for.
    pub stream: bool,
    /// Whether `stream_options.include_usage` was set.
    pub include_usage: bool,
    /// Output cap: `max_completion_tokens`, else `max_tokens`, else `max_output_tokens`.
    pub max_tokens: Option<u32>,
    /// Number of choices asked for (`n`, default 1).
    pub n: u32,
    /// Sampling temperature, when given.
    pub temperature: Option<f64>,
    /// Sampling seed, when given.
    pub seed: Option<i64>,
    /// Number of messages (chat, Anthropic) or input items (embeddings, Responses).
    pub message_count: usize,
    /// The tenant the request is billed to, once a layer has resolved it.
    pub tenant: Option<Arc<str>>,
    /// Estimated input tokens, once a token-counting layer has computed them.
    pub estimated_input_tokens: Option<u32>,
    /// Size of the request body in bytes (a coarse size signal before any
    /// token counting: about 4 bytes a token for English JSON).
    pub body_bytes: usize,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<RawStreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(borrow, default, deserialize_with = "crate::parts::seen_messages")]
    messages: Option<SeenMessages<'a>>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "count_items")]
    input: Option<usize>,
}

#[derive(Deserialize)]
struct RawStreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Counts an array's items without materializing them; a string or scalar counts as one.
fn count_items<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array or a string")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut n = 0;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(Some(n))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Some(1))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Count)
}

impl RequestInfo {
    /// Parses a request body for `api`.
    ///
    /// Errors with [`InvalidRequest`] (HTTP 400) when the body is not a JSON
    /// object, a known field has the wrong type (`messages` that is not an
    /// array, a negative `n`, ...), `model` is missing, or, for chat
    /// completions and Anthropic messages, `messages` is missing: what the
    /// upstream would refuse is refused before any call.
    ///
    /// ```
    /// use llm_tower_core::{Api, RequestInfo};
    /// let err = RequestInfo::parse(Api::ChatCompletions, b"{\"messages\":[]}").unwrap_err();
    /// assert_eq!(err.param(), Some("model"));
    /// ```
    pub fn parse(api: Api, body: &[u8]) -> Result<Self, InvalidRequest> {
        Self::read(api, body).map(|(info, _)| info)
    }

    /// [`parse`](Self::parse) of an [`LlmBody`]; in the same pass, for a
    /// chat completions request, where its messages and tools lie, kept by
    /// the body itself ([`LlmBody::chat_parts`]), so a layer that reads them
    /// (the exact token count) need not parse the body again.
    ///
    /// ```
    /// use llm_tower_core::{Api, LlmBody, RequestInfo};
    /// let mut body = LlmBody::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    /// let info = RequestInfo::parse_body(Api::ChatCompletions, &mut body)?;
    /// assert_eq!(info.message_count, 1);
    /// let first = body.chat_parts().unwrap().messages().next().unwrap();
    /// assert_eq!(first.content, Some(r#""hi""#));
    /// # Ok::<(), llm_tower_core::InvalidRequest>(())
    /// ```
    pub fn parse_body(api: Api, body: &mut LlmBody) -> Result<Self, InvalidRequest> {
        let bytes = body.as_bytes();
        let (info, raw) = Self::read(api, bytes)?;
        let spans = match (api, raw.messages) {
            (Api::ChatCompletions, Some(seen)) => seen.into_spans(bytes, raw.tools).map(Arc::new),
            _ => None,
        };
        body.set_parts(spans);
        Ok(info)
    }

    fn read(api: Api, body: &[u8]) -> Result<(Self, Raw<'_>), InvalidRequest> {
        let mut raw: Raw<'_> = crate::json::from_bytes(body).map_err(|e| {
            let msg = if e.is_data() {
                format!("invalid request body: {e}")
            } else {
                format!("request body is not valid JSON: {e}")
            };
            InvalidRequest::new(msg)
        })?;
        let model = match raw.model.take() {
            Some(m) if !m.is_empty() => Arc::<str>::from(m.as_ref()),
            _ => {
                return Err(InvalidRequest::new("you must provide a model parameter").with_param("model"));
            }
        };
        if raw.messages.is_none() && matches!(api, Api::ChatCompletions | Api::AnthropicMessages) {
            return Err(InvalidRequest::new("you must provide a messages parameter").with_param("messages"));
        }
        let info = RequestInfo {
            api,
            model,
            stream: raw.stream.unwrap_or(false),
            include_usage: raw.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false),
            max_tokens: raw.max_completion_tokens.or(raw.max_tokens).or(raw.max_output_tokens),
            n: raw.n.unwrap_or(1),
            temperature: raw.temperature,
            seed: raw.seed,
            message_count: raw.messages.as_ref().map(|m| m.count).or(raw.input).unwrap_or(0),
            tenant: None,
            estimated_input_tokens: None,
            body_bytes: body.len(),
        };
        Ok((info, raw))
    }

    /// The info a previous layer stored in `req`'s extensions, if any.
    ///
    /// ```
    /// let req = http::Request::new(());
    /// assert!(llm_tower_core::RequestInfo::get(&req).is_none());
    /// ```
    pub fn get<B>(req: &http::Request<B>) -> Option<&Arc<RequestInfo>> {
        req.extensions().get::<Arc<RequestInfo>>()
    }

    /// Returns the request's info, parsing the body and storing the result in
    /// the extensions if no layer has done so yet (parse once).
    ///
    /// ```
    /// use llm_tower_core::{LlmBody, RequestInfo};
    /// let mut req = http::Request::post("/v1/chat/completions")
    ///     .body(LlmBody::from(r#"{"model":"m","messages":[]}"#)).unwrap();
    /// let first = RequestInfo::ensure(&mut req).unwrap();
    /// let again = RequestInfo::ensure(&mut req).unwrap();
    /// assert!(std::sync::Arc::ptr_eq(&first, &again));
    /// ```
    pub fn ensure(req: &mut http::Request<LlmBody>) -> Result<Arc<RequestInfo>, InvalidRequest> {
        if let Some(info) = Self::get(req) {
            return Ok(info.clone());
        }
        Self::parse_into(req)
    }

    /// Parses `req`'s body ([`parse_body`](Self::parse_body)) and stores its
    /// info in the extensions (replacing any there).
    pub(crate) fn parse_into(req: &mut http::Request<LlmBody>) -> Result<Arc<RequestInfo>, InvalidRequest> {
        let info = Arc::new(Self::parse_body(Api::from_path(req.uri().path()), req.body_mut())?);
        req.extensions_mut().insert(info.clone());
        Ok(info)
    }

    /// [`ensure`](Self::ensure) for layers generic over the body: when `req`'s
    /// body is an [`LlmBody`], its info is parsed once and shared through the
    /// extensions like `ensure` does; for any other body (a tonic stream), or
    /// a body that does not parse (not this layer's to refuse), `None` unless
    /// a layer above already stored it.
    ///
    /// ```
    /// use llm_tower_core::{LlmBody, RequestInfo};
    /// let mut req = http::Request::post("/v1/chat/completions")
    ///     .body(LlmBody::from(r#"{"model":"m","max_tokens":4000,"messages":[]}"#)).unwrap();
    /// assert_eq!(RequestInfo::ensure_any(&mut req).unwrap().max_tokens, Some(4000));
    /// assert!(RequestInfo::get(&req).is_some(), "shared with the layers below");
    /// let mut other = http::Request::new(String::from("not an LlmBody"));
    /// assert!(RequestInfo::ensure_any(&mut other).is_none());
    /// ```
    pub fn ensure_any<B: 'static>(req: &mut http::Request<B>) -> Option<Arc<RequestInfo>> {
        if let Some(info) = Self::get(req) {
            return Some(info.clone());
        }
        let req = (req as &mut dyn std::any::Any).downcast_mut::<http::Request<LlmBody>>()?;
        Self::parse_into(req).ok()
    }
}

/// Replaces the top-level `"model"` string of a JSON object, leaving every other
/// byte of the body as it was (field order, whitespace, unknown fields).
///
/// Returns `None` when the body is not an object with a string `model`.
///
/// ```
/// let body = br#"{ "messages": [], "model" : "fast", "x": 1 }"#;
/// let out = llm_tower_core::info::rewrite_model(body, "gpt-4o-mini").unwrap();
/// assert_eq!(&out[..], br#"{ "messages": [], "model" : "gpt-4o-mini", "x": 1 }"#);
/// ```
pub fn rewrite_model(body: &[u8], model: &str) -> Option<Bytes> {
    let (start, end) = find_top_level_string(body, "model")?;
    let quoted = serde_json::to_string(model).ok()?;
    let mut out = BytesMut::with_capacity(body.len() - (end - start) + quoted.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[end..]);
    Some(out.freeze())
}

/// Byte span (quotes included) of the string value of `key` in a top-level object.
/// Sets `stream_options.include_usage` to `true` in a JSON object body by a
/// byte splice: every other byte (field order, whitespace, unknown fields)
/// stays as it was, and nothing is parsed into a tree. `None` when the body
/// is not a JSON object (or its `stream_options` cannot take the field).
///
/// ```
/// use llm_tower_core::info::with_include_usage;
/// let out = with_include_usage(br#"{"model":"m","stream":true}"#).unwrap();
/// assert_eq!(&out[..], br#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#);
/// let out = with_include_usage(br#"{"stream_options": {"x": 1}}"#).unwrap();
/// assert_eq!(&out[..], br#"{"stream_options": {"include_usage":true,"x": 1}}"#);
/// let out = with_include_usage(br#"{"stream_options":{"include_usage":false}}"#).unwrap();
/// assert_eq!(&out[..], br#"{"stream_options":{"include_usage":true}}"#);
/// ```
pub fn with_include_usage(body: &[u8]) -> Option<Bytes> {
    let splice = |at: usize, end: usize, text: &[u8]| {
        let mut out = BytesMut::with_capacity(body.len() - (end - at) + text.len());
        out.extend_from_slice(&body[..at]);
        out.extend_from_slice(text);
        out.extend_from_slice(&body[end..]);
        Some(out.freeze())
    };
    let open = skip_ws(body, 0);
    if body.get(open) != Some(&b'{') {
        return None;
    }
    let Some((start, end)) = find_top_level(body, "stream_options")? else {
        let empty = body.get(skip_ws(body, open + 1)) == Some(&b'}');
        let field: &[u8] = if empty {
            br#""stream_options":{"include_usage":true}"#
        } else {
            br#""stream_options":{"include_usage":true},"#
        };
        return splice(open + 1, open + 1, field);
    };
    if body[start] != b'{' {
        // `null` or another non-object: replaced by the object we need.
        return splice(start, end, br#"{"include_usage":true}"#);
    }
    match find_in_object(body, start, "include_usage")? {
        Some((a, b)) => splice(a, b, b"true"),
        None => {
            let empty = body.get(skip_ws(body, start + 1)) == Some(&b'}');
            let field: &[u8] = if empty { br#""include_usage":true"# } else { br#""include_usage":true,"# };
            splice(start + 1, start + 1, field)
        }
    }
}

/// The span of the value of top-level `key` in the object `s`: `Some(None)`
/// when the object has no such key, `None` when `s` is not a JSON object.
fn find_top_level(s: &[u8], key: &str) -> Option<Option<(usize, usize)>> {
    find_in_object(s, skip_ws(s, 0), key)
}

/// [`find_top_level`] for the object that starts at `open`.
fn find_in_object(s: &[u8], open: usize, key: &str) -> Option<Option<(usize, usize)>> {
    let mut i = open;
    if s.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(s, i);
        match s.get(i)? {
            b'}' => return Some(None),
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_string(s, i)?;
        let raw_key = &s[i + 1..key_end - 1];
        let matches = if raw_key.contains(&b'\\') {
            serde_json::from_slice::<String>(&s[i..key_end]).ok()? == key
        } else {
            raw_key == key.as_bytes()
        };
        i = skip_ws(s, key_end);
        if s.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(s, i + 1);
        let value_end = skip_value(s, i)?;
        if matches {
            return Some(Some((i, value_end)));
        }
        i = skip_ws(s, value_end);
        match s.get(i)? {
            b',' => i += 1,
            b'}' => return Some(None),
            _ => return None,
        }
    }
}

fn find_top_level_string(s: &[u8], key: &str) -> Option<(usize, usize)> {
    find_top_level(s, key)?.filter(|&(start, _)| s[start] == b'"')
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// `s[i]` is an opening quote; returns the index after the closing quote.
fn skip_string(s: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match s.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

fn skip_value(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => skip_string(s, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match s.get(j)? {
                    b'"' => {
                        j = skip_string(s, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(c) = s.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn include_usage_splice_matches_a_tree_edit_and_keeps_every_other_field() {
        let cases = [
            r#"{"model":"m","stream":true,"messages":[]}"#,
            r#"{}"#,
            r#"  { }  "#,
            r#"{"stream_options":{}}"#,
            r#"{"stream_options": { } , "model":"m"}"#,
            r#"{"stream_options":null,"n":2}"#,
            r#"{"stream_options":{"include_usage":false,"x":[1,{"include_usage":false}]}}"#,
            r#"{"messages":[{"content":"{\"stream_options\":1}"}],"stream_options":{"y":"}"}}"#,
            r#"{"str\u0065am_options":{"a":1}}"#,
        ];
        for case in cases {
            let out = super::with_include_usage(case.as_bytes()).unwrap_or_else(|| panic!("{case}"));
            let got: serde_json::Value =
                serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{case}: {e}"));
            let mut want: serde_json::Value = serde_json::from_str(case).unwrap();
            let obj = want.as_object_mut().unwrap();
            let opts = obj.entry("stream_options").or_insert_with(|| serde_json::json!({}));
            if !opts.is_object() {
                *opts = serde_json::json!({});
            }
            opts.as_object_mut().unwrap().insert("include_usage".into(), true.into());
            assert_eq!(got, want, "{case} -> {}", String::from_utf8_lossy(&out));
        }
        for not_an_object in ["[]", "\"x\"", "", "{\"a\":", "nul"] {
            assert!(super::with_include_usage(not_an_object.as_bytes()).is_none(), "{not_an_object}");
        }
    }

    use super::*;

    #[test]
    fn parses_all_fields() {
        let body = br#"{"model":"gpt-4o","stream":false,"n":2,"temperature":0.5,"seed":7,
            "max_tokens":10,"max_completion_tokens":20,
            "messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"x"}]}],
            "tools":[{"type":"function"}]}"#;
        let info = RequestInfo::parse(Api::ChatCompletions, body).unwrap();
        assert_eq!(&*info.model, "gpt-4o");
        assert!(!info.stream);
        assert_eq!(info.n, 2);
        assert_eq!(info.temperature, Some(0.5));
        assert_eq!(info.seed, Some(7));
        assert_eq!(info.max_tokens, Some(20), "max_completion_tokens wins");
        assert_eq!(info.message_count, 2);
    }

    #[test]
    fn escaped_model_and_inputs() {
        let info = RequestInfo::parse(Api::Embeddings, br#"{"model":"a\"b","input":["x","y","z"]}"#).unwrap();
        assert_eq!(&*info.model, "a\"b");
        assert_eq!(info.message_count, 3);
        let info = RequestInfo::parse(Api::Responses, br#"{"model":"m","input":"hello"}"#).unwrap();
        assert_eq!(info.message_count, 1);
    }

    #[test]
    fn rejects_bad_bodies() {
        for (body, needle) in [
            (&b"not json"[..], "not valid JSON"),
            (b"[1,2]", "invalid request body"),
            (br#"{"model":""}"#, "model"),
            (br#"{"model":null}"#, "model"),
            (br#"{"model":"m","stream":"yes"}"#, "invalid request body"),
            (br#"{"model":"m","n":-1}"#, "invalid request body"),
            (br#"{"model":"m","messages":"hi"}"#, "expected an array of messages"),
            (br#"{"model":"m"}"#, "you must provide a messages parameter"),
        ] {
            let err = RequestInfo::parse(Api::ChatCompletions, body).unwrap_err();
            assert!(err.to_string().contains(needle), "{body:?}: {err}");
        }
    }

    #[test]
    fn rewrite_keeps_everything_else() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (br#"{"model":"a"}"#, Some(br#"{"model":"NEW"}"#)),
            (
                br#"{"nested":{"model":"x"},"s":"\"model\"","model":"a","z":[1,{"model":2}]}"#,
                Some(br#"{"nested":{"model":"x"},"s":"\"model\"","model":"NEW","z":[1,{"model":2}]}"#),
            ),
            (br#"{"mod\u0065l":"a"}"#, Some(br#"{"mod\u0065l":"NEW"}"#)),
            (br#"{"model":1}"#, None),
            (br#"{"other":"a"}"#, None),
            (br#"["model","a"]"#, None),
            (br#"{"model":"unterminated"#, None),
        ];
        for (input, want) in cases {
            let got = rewrite_model(input, "NEW");
            assert_eq!(got.as_deref(), *want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn rewrite_escapes_the_new_name() {
        let out = rewrite_model(br#"{"model":"a"}"#, "we\"ird").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "we\"ird");
    }
}
