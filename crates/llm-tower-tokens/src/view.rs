//! A borrowed view of a chat request for counting its tokens: one pass over
//! the body that keeps only what the count reads (roles, text, names, tool
//! calls, tools), with the text borrowed from the body where it has no
//! escapes. The owned `ChatCompletionRequest` (every field kept, unknown ones
//! in a JSON map) is for code that edits a request; counting does not need it.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use llm_tower_core::ChatParts;
use llm_tower_core::info::borrowed_str;
use llm_tower_core::json::as_str;

use crate::TokenCounter;

#[derive(Deserialize)]
struct ChatView<'a> {
    #[serde(borrow)]
    messages: Vec<MessageView<'a>>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PartView<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "borrowed_str")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    image_url: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ImageView<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    detail: Option<Cow<'a, str>>,
}

/// `raw` as compact JSON text, as `Value`'s `to_string` writes it (what the
/// owned count measures for tools and tool calls).
fn compact(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw).map(|v| v.to_string()).unwrap_or_default()
}

/// The tokens of a chat request's body, counted as
/// [`TokenCounter::count_chat`] counts the parsed request; `None` when the
/// body is not a chat request with a `messages` array.
pub(crate) fn count_chat_body(counter: &dyn TokenCounter, body: &[u8]) -> Option<u32> {
    let view: ChatView<'_> = llm_tower_core::json::from_bytes(body).ok()?;
    let mut n = 3u32;
    for m in &view.messages {
        n += 3 + m.role.as_deref().map_or(0, |r| role_tokens(counter, r));
        n += count_members(
            counter,
            m.content.map(RawValue::get),
            m.name.map(RawValue::get),
            m.tool_calls.map(RawValue::get),
        );
    }
    Some(n + view.tools.map_or(0, |t| count_tools(counter, t.get())))
}

/// [`count_chat_body`] from the [`ChatParts`] the request's parse kept: the
/// same count, with no parse of the body (only of multi-part contents,
/// tools and tool calls, which are counted by their JSON).
pub(crate) fn count_chat_parts(counter: &dyn TokenCounter, parts: ChatParts<'_>) -> u32 {
    let mut n = 3u32;
    for m in parts.messages() {
        let role = m.role.and_then(as_str);
        n += 3 + role.as_deref().map_or(0, |r| role_tokens(counter, r));
        n += count_members(counter, m.content, m.name, m.tool_calls);
    }
    n + parts.tools().map_or(0, |t| count_tools(counter, t))
}

/// A message's content, name and tool calls (their JSON texts).
fn count_members(
    counter: &dyn TokenCounter,
    content: Option<&str>,
    name: Option<&str>,
    calls: Option<&str>,
) -> u32 {
    let mut n = content.map_or(0, |c| count_content(counter, c));
    if let Some(name) = name.and_then(as_str) {
        n += 1 + counter.count_text(&name);
    }
    if let Some(calls) = calls {
        n += counter.count_text(&compact(calls));
    }
    n
}

/// The `tools` array (its JSON text): each tool's compact JSON and 8 tokens.
fn count_tools(counter: &dyn TokenCounter, tools: &str) -> u32 {
    let Ok(tools) = serde_json::from_str::<Vec<&RawValue>>(tools) else { return 0 };
    tools.iter().map(|t| 8 + counter.count_text(&compact(t.get()))).sum()
}

/// The chat roles, each one token in both OpenAI encodings (`tests`).
const ROLES: [&str; 6] = ["user", "assistant", "system", "tool", "developer", "function"];

/// A message's role: a known role is one token for an exact counter, without
/// a tokenizer pass; anything else is counted.
fn role_tokens(counter: &dyn TokenCounter, role: &str) -> u32 {
    if counter.is_exact() && ROLES.contains(&role) { 1 } else { counter.count_text(role) }
}

fn count_content(counter: &dyn TokenCounter, content: &str) -> u32 {
    if let Some(text) = as_str(content) {
        return counter.count_text(&text);
    }
    let Ok(parts) = serde_json::from_str::<Vec<&RawValue>>(content) else {
        return 0;
    };
    let mut n = 0;
    for part in parts {
        let view = serde_json::from_str::<PartView<'_>>(part.get()).ok();
        match view.as_ref().and_then(|v| v.kind.as_deref()) {
            Some("text") => {
                n += view
                    .and_then(|v| v.text)
                    .and_then(|t| as_str(t.get()))
                    .map_or(0, |t| counter.count_text(&t));
            }
            Some("image_url") => {
                let low = view
                    .and_then(|v| v.image_url)
                    .and_then(|i| serde_json::from_str::<ImageView<'_>>(i.get()).ok())
                    .is_some_and(|i| i.detail.as_deref() == Some("low"));
                n += if low { 85 } else { 765 };
            }
            _ => n += counter.count_text(&compact(part.get())),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Family, Heuristic, Tiktoken};
    use llm_tower_core::chat::ChatCompletionRequest;
    use llm_tower_core::{Api, LlmBody, RequestInfo};

    #[test]
    fn every_known_role_is_one_token_in_both_encodings() {
        for family in [Family::O200k, Family::Cl100k] {
            let t = Tiktoken::new(family).unwrap();
            for role in ROLES {
                assert_eq!(t.count_text(role), 1, "{role} in {family:?}");
                assert_eq!(role_tokens(&t, role), 1);
            }
            assert_eq!(role_tokens(&t, "narrator"), t.count_text("narrator"));
        }
    }

    /// The borrowed count agrees with the owned one on every shape it reads.
    #[test]
    fn the_borrowed_count_is_the_owned_count() {
        let bodies = [
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there, how are you?"}]}"#,
            r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be \"brief\"\n\u00e9t\u00e9"},{"role":"user","name":"ann","content":"hi"}]}"#,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}},{"type":"image_url","image_url":{"url":"data:..."}},{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}"#,
            r#"{"model":"gpt-4o","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]},{"role":"tool","tool_call_id":"c1","content":"42"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer"}}}}}]}"#,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],  "tools" : [ { "type" : "function" , "function" : { "name" : "g" } } ] }"#,
            r#"{"model":"gpt-4o","messages":[]}"#,
            r#"{"model":"gpt-4o","messages":[{"role":"us\u0065r","content":"a"},{"role":"user","name":7,"content":"b"},{"role":"user","content":"c"},{"role":"user","content":"d"},{"role":"narrator","content":"e"}],"tools":null}"#,
            // `null` members are absent members, in every count.
            r#"{"model":"gpt-4o","messages":[{"role":"assistant","content":"ok","tool_calls":null,"name":null},{"role":null,"content":null}]}"#,
        ];
        let counters: [Box<dyn TokenCounter>; 2] =
            [Box::new(Tiktoken::new(Family::O200k).unwrap()), Box::new(Heuristic::default())];
        for c in &counters {
            for body in bodies {
                let owned: ChatCompletionRequest = serde_json::from_str(body).unwrap();
                let want = c.count_chat(&owned);
                assert_eq!(count_chat_body(&**c, body.as_bytes()), Some(want), "{body}");
                let mut parsed = LlmBody::from(body.to_owned());
                RequestInfo::parse_body(Api::ChatCompletions, &mut parsed).unwrap();
                assert_eq!(count_chat_parts(&**c, parsed.chat_parts().expect("chat parts")), want, "{body}");
            }
        }
        assert_eq!(count_chat_body(&*counters[0], br#"{"model":"m"}"#), None);
        assert_eq!(count_chat_body(&*counters[0], b"not json"), None);
    }
}
