//! [`ChatParts`]: where a chat request's messages and tools lie in its body,
//! found by the same pass that reads its [`RequestInfo`](crate::RequestInfo).
//!
//! The edge (or the first layer that calls [`RequestInfo::ensure`](crate::RequestInfo::ensure))
//! parses the body once. While that pass walks `messages` it keeps, for each
//! message, the byte spans of its `role`, `content`, `name` and `tool_calls`
//! values, and the span of the top-level `tools`: offsets into the body's
//! bytes, no copy of any text, kept by the [`LlmBody`](crate::LlmBody)
//! itself. A layer that reads the messages (the exact token count) takes
//! them from there instead of parsing the body again; a layer that replaces
//! the body (a model alias) makes a new `LlmBody`, which has none.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Messages kept inline, with no allocation beyond the spans' one `Arc`:
/// most chat requests have a system and a user message, a few turns at most.
const INLINE: usize = 4;

/// A value's byte span in the body; `end == 0` is "absent" (no JSON value
/// ends at offset 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// The spans of one message's members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MessageSpans {
    role: Span,
    content: Span,
    name: Span,
    tool_calls: Span,
}

#[derive(Debug, PartialEq, Eq)]
enum List {
    Inline([MessageSpans; INLINE], u8),
    Heap(Box<[MessageSpans]>),
}

/// The spans a parse kept, held by the body they are spans of.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spans {
    messages: List,
    tools: Span,
}

/// Where a chat request's messages and tools lie in its body
/// ([`LlmBody::chat_parts`](crate::LlmBody::chat_parts)).
///
/// A parse keeps them for a chat completions body whose `messages` is an
/// array of objects, each with at most one of `role` (a string or `null`),
/// `content`, `name` and `tool_calls`; any other shape has no parts (a
/// reader falls back to its own parse).
///
/// Its `Debug` output shows counts, never the text.
///
/// ```
/// use llm_tower_core::{LlmBody, RequestInfo};
///
/// let mut req = http::Request::post("/v1/chat/completions").body(LlmBody::from(
///     r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
///         {"role":"user","name":"ann","content":[{"type":"text","text":"hi"}]}],
///         "tools":[{"type":"function","function":{"name":"f"}}]}"#,
/// )).unwrap();
/// RequestInfo::ensure(&mut req)?;
/// let parts = req.body().chat_parts().expect("read by the same pass");
/// let roles: Vec<_> = parts.messages().map(|m| m.role.unwrap()).collect();
/// assert_eq!(roles, [r#""system""#, r#""user""#]);
/// let user = parts.messages().nth(1).unwrap();
/// assert_eq!(user.name, Some(r#""ann""#));
/// assert_eq!(user.content, Some(r#"[{"type":"text","text":"hi"}]"#));
/// assert!(parts.tools().unwrap().starts_with('['));
///
/// // A layer that replaces the body replaces its parts: the new one has none.
/// *req.body_mut() = LlmBody::from(r#"{"model":"m","messages":[]}"#);
/// assert!(req.body().chat_parts().is_none());
/// # Ok::<(), llm_tower_core::InvalidRequest>(())
/// ```
#[derive(Clone, Copy)]
pub struct ChatParts<'a> {
    body: &'a [u8],
    spans: &'a Spans,
}

/// One message of a [`ChatParts`]: each member's JSON text exactly as it is
/// in the body (a string keeps its quotes and escapes; [`json::as_str`](crate::json::as_str)
/// decodes it). `None` for a member that is absent or `null`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageText<'a> {
    /// `role`: a JSON string.
    pub role: Option<&'a str>,
    /// `content`: a string or an array of parts.
    pub content: Option<&'a str>,
    /// `name`.
    pub name: Option<&'a str>,
    /// `tool_calls`.
    pub tool_calls: Option<&'a str>,
}

impl<'a> ChatParts<'a> {
    pub(crate) fn new(body: &'a [u8], spans: &'a Spans) -> Self {
        Self { body, spans }
    }

    /// The messages, in order.
    pub fn messages(&self) -> impl ExactSizeIterator<Item = MessageText<'a>> + 'a {
        let list: &'a [MessageSpans] = match &self.spans.messages {
            List::Inline(items, n) => &items[..usize::from(*n)],
            List::Heap(items) => items,
        };
        let body = self.body;
        list.iter().map(move |m| MessageText {
            role: text(body, m.role),
            content: text(body, m.content),
            name: text(body, m.name),
            tool_calls: text(body, m.tool_calls),
        })
    }

    /// The JSON text of the top-level `tools`, when present and not `null`.
    pub fn tools(&self) -> Option<&'a str> {
        text(self.body, self.spans.tools)
    }
}

fn text(body: &[u8], span: Span) -> Option<&str> {
    if span.end == 0 {
        return None;
    }
    // The span is of a value the parse borrowed from these very bytes (the
    // body keeps the spans with its bytes and drops them with them), so it is
    // UTF-8 on char boundaries; checked all the same (the standard library's
    // ASCII path: a fraction of the parse it saves).
    std::str::from_utf8(body.get(span.start as usize..span.end as usize)?).ok()
}

impl fmt::Debug for ChatParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatParts")
            .field("messages", &self.messages().len())
            .field("tools", &(self.spans.tools.end != 0))
            .finish()
    }
}

/// One message as the parse saw it: members' JSON texts, borrowed.
#[derive(Clone, Copy, Default)]
pub(crate) struct Seen<'a> {
    role: Option<&'a str>,
    content: Option<&'a str>,
    name: Option<&'a str>,
    tool_calls: Option<&'a str>,
}

/// The `messages` array as the parse saw it: its length, and its messages
/// when every one has the shape [`ChatParts`] describes.
pub(crate) struct SeenMessages<'a> {
    pub(crate) count: usize,
    shaped: bool,
    first: [Seen<'a>; INLINE],
    rest: Vec<Seen<'a>>,
}

impl<'a> SeenMessages<'a> {
    /// The spans these messages (and `tools`) have in `body`, the bytes the
    /// parse read; `None` when a message had another shape or the body is
    /// over 4 GiB.
    pub(crate) fn into_spans(self, body: &[u8], tools: Option<&'a RawValue>) -> Option<Spans> {
        if !self.shaped || u32::try_from(body.len()).is_err() {
            return None;
        }
        let base = body.as_ptr() as usize;
        let span = |text: Option<&str>| match text {
            // Every text is a slice of `body` (borrowed by the parse); one that
            // is not (impossible) would be dropped rather than mis-placed.
            Some(t)
                if (t.as_ptr() as usize) >= base && t.as_ptr() as usize + t.len() <= base + body.len() =>
            {
                let start = (t.as_ptr() as usize - base) as u32;
                Span { start, end: start + t.len() as u32 }
            }
            _ => Span::default(),
        };
        let spans = |m: &Seen<'_>| MessageSpans {
            role: span(m.role),
            content: span(m.content),
            name: span(m.name),
            tool_calls: span(m.tool_calls),
        };
        let messages = if self.count <= INLINE {
            let mut items = [MessageSpans::default(); INLINE];
            for (to, from) in items.iter_mut().zip(&self.first[..self.count]) {
                *to = spans(from);
            }
            List::Inline(items, self.count as u8)
        } else {
            List::Heap(self.first.iter().chain(&self.rest).map(spans).collect())
        };
        Some(Spans { messages, tools: span(tools.map(RawValue::get)) })
    }
}

/// Deserializes `messages`: an array (anything else is refused, as every API
/// that has the field refuses it), whose items may be anything; they are
/// counted, and kept while each is a message object.
pub(crate) fn seen_messages<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SeenMessages<'de>>, D::Error> {
    struct Messages;
    impl<'de> Visitor<'de> for Messages {
        type Value = Option<SeenMessages<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of messages")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut seen =
                SeenMessages { count: 0, shaped: true, first: [Seen::default(); INLINE], rest: Vec::new() };
            while let Some(m) = seq.next_element_seed(Message)? {
                match m {
                    Some(m) if seen.count < INLINE => seen.first[seen.count] = m,
                    Some(m) => seen.rest.push(m),
                    None => seen.shaped = false,
                }
                seen.count = seen.count.saturating_add(1);
            }
            if !seen.shaped {
                seen.rest = Vec::new();
            }
            Ok(Some(seen))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Messages)
}

/// One item of `messages`: `Some` for a message object, `None` for any other
/// value (consumed all the same: the count does not refuse it).
struct Message;

impl<'de> DeserializeSeed<'de> for Message {
    type Value = Option<Seen<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// Member names a message's parts are read from.
enum Member {
    Role,
    Content,
    Name,
    ToolCalls,
    Other,
}

impl<'de> Visitor<'de> for Message {
    type Value = Option<Seen<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = Seen::default();
        let mut shaped = true;
        let mut got = [false; 4];
        while let Some(key) = map.next_key::<MemberName>()? {
            let (slot, index) = match key.0 {
                Member::Role => (&mut m.role, 0),
                Member::Content => (&mut m.content, 1),
                Member::Name => (&mut m.name, 2),
                Member::ToolCalls => (&mut m.tool_calls, 3),
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            // A member given twice is not a message a reader can trust.
            shaped &= !std::mem::replace(&mut got[index], true);
            *slot = map.next_value::<Option<&'de RawValue>>()?.map(RawValue::get);
        }
        // A role must be a string (or null): what a typed message accepts.
        shaped &= m.role.is_none_or(|r| r.starts_with('"'));
        Ok(shaped.then_some(m))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
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

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A message's member name, matched where it lies (no allocation).
struct MemberName(Member);

impl<'de> de::Deserialize<'de> for MemberName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = MemberName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, v: &str) -> Result<MemberName, E> {
                Ok(MemberName(match v {
                    "role" => Member::Role,
                    "content" => Member::Content,
                    "name" => Member::Name,
                    "tool_calls" => Member::ToolCalls,
                    _ => Member::Other,
                }))
            }
        }
        d.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Api, LlmBody, RequestInfo};

    fn parsed(body: &'static str) -> LlmBody {
        let mut body = LlmBody::from(body);
        RequestInfo::parse_body(Api::ChatCompletions, &mut body).unwrap();
        body
    }

    #[test]
    fn spans_are_the_members_text() {
        let body = parsed(
            r#"{"model":"m","tools":null,"messages":[
            {"role":"us\u0065r","content":"a \"quoted\" word","extra":{"role":"x"}},
            {"content":null,"tool_calls":[{"id":"c1"}],"role":null},
            {"role":"tool","content":"42","name":"n"}, {"role":"user","content":"4"}, {"role":"user","content":"5"}]}"#,
        );
        let p = body.chat_parts().unwrap();
        let got: Vec<_> = p.messages().collect();
        assert_eq!(got.len(), 5, "past the inline four");
        assert_eq!(got[0].role, Some(r#""us\u0065r""#));
        assert_eq!(got[0].content, Some(r#""a \"quoted\" word""#));
        assert_eq!((got[0].name, got[0].tool_calls), (None, None));
        assert_eq!((got[1].role, got[1].content), (None, None), "null is absent");
        assert_eq!(got[1].tool_calls, Some(r#"[{"id":"c1"}]"#));
        assert_eq!(got[2].name, Some(r#""n""#));
        assert_eq!(got[4].content, Some(r#""5""#));
        assert_eq!(p.tools(), None);
        assert_eq!(format!("{p:?}"), "ChatParts { messages: 5, tools: false }");
    }

    #[test]
    fn other_shapes_have_no_parts_but_still_parse() {
        for text in [
            r#"{"model":"m","messages":["hi"]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"a"},[1,2]]}"#,
            r#"{"model":"m","messages":[{"role":1,"content":"a"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"a","content":"b"}]}"#,
        ] {
            let mut body = LlmBody::from(text);
            let info = RequestInfo::parse_body(Api::ChatCompletions, &mut body).unwrap();
            assert!(body.chat_parts().is_none(), "{text}");
            assert!(info.message_count >= 1, "{text}");
        }
        let plain =
            RequestInfo::parse(Api::ChatCompletions, br#"{"model":"m","messages":[{"role":1}, 2, "x"]}"#);
        assert_eq!(plain.unwrap().message_count, 3, "the count accepts any item, as before");
        let mut other = LlmBody::from(r#"{"model":"m","messages":[{"role":"user","content":"a"}]}"#);
        RequestInfo::parse_body(Api::AnthropicMessages, &mut other).unwrap();
        assert!(other.chat_parts().is_none(), "chat completions only");
    }

    #[tokio::test]
    async fn parts_go_with_the_bytes() {
        use http_body_util::BodyExt;
        let body = parsed(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#);
        let replay = body.clone();
        assert_eq!(replay.chat_parts().unwrap().messages().len(), 1, "a clone keeps them");
        let mut polled = body;
        let frame = polled.frame().await.unwrap().unwrap();
        assert!(frame.is_data());
        assert!(polled.chat_parts().is_none(), "a polled body has neither bytes nor parts");
        assert!(replay.chat_parts().is_some());
    }
}
