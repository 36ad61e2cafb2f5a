//! The wire shapes of each dialect (OpenAI chat and Responses, Anthropic Messages) that carry usage, finish reasons, text and errors, read borrowed.

use super::*;

/// The parts of any known event or body that carry usage and finish state.
#[derive(Deserialize)]
pub(crate) struct Probe<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) usage: Option<UsageAny>,
    #[serde(borrow, default)]
    pub(super) choices: Option<Vec<ChoiceProbe<'a>>>,
    #[serde(borrow, default)]
    pub(super) stop_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub(super) message: Option<Box<Probe<'a>>>,
    #[serde(borrow, default)]
    pub(super) response: Option<Box<Probe<'a>>>,
    #[serde(borrow, default)]
    pub(super) status: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) incomplete_details: Option<IncompleteDetails>,
    #[serde(default)]
    pub(super) error: Option<ErrorProbe>,
    /// Anthropic message content blocks.
    #[serde(borrow, default)]
    pub(super) content: Option<Lenient<Vec<Block<'a>>>>,
    /// Responses output items.
    #[serde(borrow, default)]
    pub(super) output: Option<Lenient<Vec<OutputItem<'a>>>>,
}

#[derive(Deserialize)]
pub(crate) struct ChoiceProbe<'a> {
    #[serde(borrow, default)]
    pub(super) finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) delta: Option<MessagePart<'a>>,
    #[serde(borrow, default)]
    pub(super) message: Option<MessagePart<'a>>,
}

/// A chat message or delta: its text and tool calls.
#[derive(Deserialize)]
pub(crate) struct MessagePart<'a> {
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) tool_calls: Option<Lenient<Vec<ToolCall<'a>>>>,
}

#[derive(Deserialize)]
pub(crate) struct ToolCall<'a> {
    #[serde(borrow, default)]
    pub(super) function: Option<Function<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct Function<'a> {
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) name: Option<Cow<'a, str>>,
    /// A JSON string (OpenAI) or an object (Ollama: skipped).
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) arguments: Option<Cow<'a, str>>,
}

/// A part of a body whose shape varies by provider: read when it is the
/// expected one, skipped otherwise (never failing the probe, which carries usage).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Lenient<T> {
    Ok(T),
    #[allow(dead_code)]
    Other(IgnoredAny),
}

impl<T> Lenient<T> {
    pub(super) fn get(&self) -> Option<&T> {
        match self {
            Lenient::Ok(t) => Some(t),
            Lenient::Other(_) => None,
        }
    }
}

/// A string where one is expected, borrowed where it lies; any other value
/// (null, a list of parts, an object) is skipped as it is read. Every chat
/// chunk has a `content`: unlike an untagged enum, this buffers nothing.
pub(crate) fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

#[derive(Deserialize)]
pub(crate) struct Block<'a> {
    /// Anthropic / Responses text blocks; other blocks have none.
    #[serde(borrow, default)]
    pub(super) text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(crate) struct OutputItem<'a> {
    #[serde(borrow, default)]
    pub(super) content: Option<Lenient<Vec<Block<'a>>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Delta<'a> {
    Object(#[serde(borrow)] DeltaProbe<'a>),
    Text(#[serde(borrow)] Cow<'a, str>),
    #[allow(dead_code)]
    Other(IgnoredAny),
}

#[derive(Deserialize)]
pub(crate) struct DeltaProbe<'a> {
    #[serde(borrow, default)]
    pub(super) stop_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) thinking: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(crate) struct IncompleteDetails {
    #[serde(default)]
    pub(super) reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ErrorProbe {
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(rename = "type", default)]
        kind: Option<String>,
    },
    Text(String),
}

#[derive(Deserialize, Default)]
pub(crate) struct UsageAny {
    #[serde(default)]
    pub(super) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(super) completion_tokens: Option<u64>,
    #[serde(default)]
    pub(super) input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<Details>,
    #[serde(default)]
    pub(super) input_tokens_details: Option<Details>,
    #[serde(default)]
    pub(super) completion_tokens_details: Option<Details>,
    #[serde(default)]
    pub(super) output_tokens_details: Option<Details>,
    #[serde(default)]
    pub(super) cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
pub(crate) struct Details {
    #[serde(default)]
    pub(super) cached_tokens: Option<u64>,
    #[serde(default)]
    pub(super) reasoning_tokens: Option<u64>,
}
