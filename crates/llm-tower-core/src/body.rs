//! [`LlmBody`]: the replayable request body every LLM-aware layer works with.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::parts::{ChatParts, Spans};

/// A complete, `Bytes`-backed HTTP body.
///
/// LLM requests are small JSON documents that several layers need to read
/// (token estimation, cache keys) and that retry and failover need to send more
/// than once. `LlmBody` holds the whole payload in one reference-counted
/// [`Bytes`], so cloning it is a pointer copy and the body can be replayed.
///
/// A clone copies the body's state: clone a request *before* sending it (as
/// retry layers do) to keep an unsent copy.
///
/// ```
/// use http_body::Body;
/// use llm_tower_core::LlmBody;
///
/// let body = LlmBody::from(r#"{"model":"gpt-4o-mini"}"#);
/// assert_eq!(body.size_hint().exact(), Some(23));
/// let replay = body.clone();
/// assert_eq!(replay.as_bytes(), body.as_bytes());
/// ```
#[derive(Clone, Default)]
pub struct LlmBody {
    data: Option<Bytes>,
    /// Where a chat request's messages lie in `data`, when a parse kept it.
    parts: Option<Arc<Spans>>,
}

impl LlmBody {
    /// An empty body.
    ///
    /// ```
    /// assert!(llm_tower_core::LlmBody::empty().as_bytes().is_empty());
    /// ```
    pub fn empty() -> Self {
        Self { data: None, parts: None }
    }

    /// The bytes not yet polled out of this body (all of them for a fresh body).
    ///
    /// ```
    /// let body = llm_tower_core::LlmBody::from("hi");
    /// assert_eq!(&body.as_bytes()[..], b"hi");
    /// ```
    pub fn as_bytes(&self) -> &Bytes {
        static EMPTY: Bytes = Bytes::from_static(b"");
        self.data.as_ref().unwrap_or(&EMPTY)
    }

    /// Consumes the body and returns its bytes.
    ///
    /// ```
    /// let body = llm_tower_core::LlmBody::from(vec![1u8, 2, 3]);
    /// assert_eq!(&body.into_bytes()[..], &[1, 2, 3]);
    /// ```
    pub fn into_bytes(self) -> Bytes {
        self.data.unwrap_or_default()
    }

    /// Where this chat request's messages and tools lie in its bytes, when
    /// [`RequestInfo::parse_body`](crate::RequestInfo::parse_body) (or
    /// [`ensure`](crate::RequestInfo::ensure), or the edge) read them; `None`
    /// for a body made any other way, and once the body has been polled.
    ///
    /// ```
    /// use llm_tower_core::{Api, LlmBody, RequestInfo};
    /// let mut body = LlmBody::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    /// assert!(body.chat_parts().is_none(), "not parsed yet");
    /// RequestInfo::parse_body(Api::ChatCompletions, &mut body)?;
    /// assert_eq!(body.chat_parts().unwrap().messages().len(), 1);
    /// # Ok::<(), llm_tower_core::InvalidRequest>(())
    /// ```
    pub fn chat_parts(&self) -> Option<ChatParts<'_>> {
        Some(ChatParts::new(self.data.as_ref()?, self.parts.as_deref()?))
    }

    pub(crate) fn set_parts(&mut self, parts: Option<Arc<Spans>>) {
        self.parts = parts;
    }
}

impl std::fmt::Debug for LlmBody {
    // Bodies can hold prompts and credentials sent by callers: show only the size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmBody").field("len", &self.as_bytes().len()).finish()
    }
}

impl Body for LlmBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.as_bytes().len() as u64)
    }
}

impl From<Bytes> for LlmBody {
    fn from(b: Bytes) -> Self {
        if b.is_empty() { Self::empty() } else { Self { data: Some(b), parts: None } }
    }
}

impl From<String> for LlmBody {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<Vec<u8>> for LlmBody {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<&'static str> for LlmBody {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<&'static [u8]> for LlmBody {
    fn from(s: &'static [u8]) -> Self {
        Bytes::from_static(s).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn yields_once_and_replays_from_clone() {
        let body = LlmBody::from("hello");
        let copy = body.clone();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(copy.size_hint().exact(), Some(5));
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn empty_body_is_end_of_stream() {
        let body = LlmBody::from(String::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
    }

    #[test]
    fn debug_shows_length_not_content() {
        let body = LlmBody::from("sk-secret-in-a-prompt");
        let dbg = format!("{body:?}");
        assert!(!dbg.contains("sk-secret"), "{dbg}");
        assert!(dbg.contains("21"));
    }
}
