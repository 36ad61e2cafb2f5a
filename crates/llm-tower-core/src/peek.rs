//! Reading the start of a body without taking it: [`peek`] and [`Prefixed`].
//!
//! A layer that must look into an answer before it decides (a retry layer
//! reading a 429 for `insufficient_quota`, failover reading a 400 for
//! `context_length_exceeded`) reads at most a bounded prefix, and passes the
//! whole answer on afterwards, however large: the prefix first, then the rest
//! of the body as it comes. A body that fails while it is peeked keeps its
//! error for the reader after the prefix. Nothing is ever dropped or emptied.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;

/// Reads up to `limit` bytes of `body` (a little more when a frame crosses the
/// limit: frames are not split). See the [module docs](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
/// use http_body_util::{BodyExt, Full};
/// let body = Full::new(bytes::Bytes::from(vec![b'x'; 100_000]));
/// let peeked = llm_tower_core::peek::peek(body, 1024).await;
/// assert!(peeked.prefix().len() >= 1024 && !peeked.is_whole());
/// let all = peeked.collect().await?.to_bytes();
/// assert_eq!(all.len(), 100_000); // nothing lost
/// # Ok(()) }
/// ```
pub fn peek<B>(body: B, limit: usize) -> Peek<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    Peek { body: Some(Box::pin(body)), first: None, rest: BytesMut::new(), limit, ended: false }
}

/// The future of [`peek`].
pub struct Peek<B> {
    body: Option<Pin<Box<B>>>,
    first: Option<Bytes>,
    rest: BytesMut,
    limit: usize,
    ended: bool,
}

impl<B> Peek<B> {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.rest.len()
    }

    fn push(&mut self, data: Bytes) {
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(data),
            first => {
                if let Some(f) = first {
                    self.rest.extend_from_slice(&f);
                }
                self.rest.extend_from_slice(&data);
            }
        }
    }

    fn finish(&mut self, error: Option<BoxError>) -> Prefixed<B> {
        let prefix = match self.first.take() {
            Some(b) => b,
            None => std::mem::take(&mut self.rest).freeze(),
        };
        let body = if self.ended || error.is_some() { None } else { self.body.take() };
        Prefixed {
            prefix: (!prefix.is_empty()).then_some(prefix.clone()),
            seen: prefix,
            body,
            error,
            trailers_first: None,
        }
    }
}

impl<B> std::fmt::Debug for Peek<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peek").field("read", &self.len()).field("limit", &self.limit).finish()
    }
}

impl<B> Future for Peek<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Prefixed<B>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Prefixed<B>> {
        let this = &mut *self;
        loop {
            if this.len() >= this.limit {
                return Poll::Ready(this.finish(None));
            }
            let Some(body) = this.body.as_mut() else { return Poll::Ready(this.finish(None)) };
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(this.finish(None));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(this.finish(Some(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.push(data),
                    // Trailers end the data: keep them for the reader.
                    Err(frame) => {
                        let out = this.finish(None);
                        return Poll::Ready(Prefixed { trailers_first: Some(frame), ..out });
                    }
                },
            }
        }
    }
}

/// A body whose first bytes were read by [`peek`]: yields them, then the rest.
pub struct Prefixed<B> {
    /// What was read, for [`prefix`](Self::prefix).
    seen: Bytes,
    /// The same bytes, until they are yielded.
    prefix: Option<Bytes>,
    /// The rest of the body (`None` once it ended or failed during the peek).
    body: Option<Pin<Box<B>>>,
    /// An error the body returned during the peek, yielded after the prefix.
    error: Option<BoxError>,
    trailers_first: Option<Frame<Bytes>>,
}

impl<B> Prefixed<B> {
    /// The bytes read (at most the limit, plus the rest of the frame that crossed it).
    pub fn prefix(&self) -> &Bytes {
        &self.seen
    }

    /// Whether the prefix is the whole body (it ended within the limit, without error).
    pub fn is_whole(&self) -> bool {
        self.body.is_none() && self.error.is_none()
    }

    /// A body of exactly `data`, as if it had been peeked whole.
    ///
    /// ```
    /// use http_body::Body;
    /// let b = llm_tower_core::peek::Prefixed::<http_body_util::Empty<bytes::Bytes>>::whole("abc".into());
    /// assert_eq!(b.size_hint().exact(), Some(3));
    /// ```
    pub fn whole(data: Bytes) -> Self {
        Prefixed {
            prefix: (!data.is_empty()).then_some(data.clone()),
            seen: data,
            body: None,
            error: None,
            trailers_first: None,
        }
    }
}

impl<B> std::fmt::Debug for Prefixed<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefixed")
            .field("prefix_len", &self.seen.len())
            .field("whole", &self.is_whole())
            .finish()
    }
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(p) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        if let Some(t) = this.trailers_first.take() {
            return Poll::Ready(Some(Ok(t)));
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let Some(body) = this.body.as_mut() else { return Poll::Ready(None) };
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(None) => {
                this.body = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(r)) => Poll::Ready(Some(r.map_err(Into::into))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.trailers_first.is_none()
            && self.error.is_none()
            && self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let pending = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.body {
            None => SizeHint::with_exact(pending),
            Some(b) => {
                let inner = b.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(inner.lower().saturating_add(pending));
                if let Some(u) = inner.upper() {
                    h.set_upper(u.saturating_add(pending));
                }
                h
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;

    use super::*;
    use http_body_util::BodyExt;

    /// Frames given in advance, one per poll (the response body's tests use it too).
    pub(crate) struct Chunks(VecDeque<Result<Bytes, BoxError>>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|r| r.map(Frame::data)))
        }
    }

    pub(crate) fn chunks(parts: &[Result<&'static str, &'static str>]) -> Chunks {
        Chunks(
            parts
                .iter()
                .map(|p| (*p).map(|s| Bytes::from_static(s.as_bytes())).map_err(BoxError::from))
                .collect(),
        )
    }

    #[tokio::test]
    async fn small_body_is_whole() {
        let p = peek(chunks(&[Ok("ab"), Ok("cd")]), 100).await;
        assert_eq!(&p.prefix()[..], b"abcd");
        assert!(p.is_whole());
        assert_eq!(p.size_hint().exact(), Some(4));
        assert_eq!(p.collect().await.unwrap().to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn large_body_passes_on_whole_after_the_prefix() {
        let p = peek(chunks(&[Ok("abc"), Ok("def"), Ok("ghi")]), 4).await;
        assert_eq!(&p.prefix()[..], b"abcdef");
        assert!(!p.is_whole());
        assert_eq!(p.collect().await.unwrap().to_bytes(), "abcdefghi");
    }

    #[tokio::test]
    async fn an_error_during_the_peek_reaches_the_reader_after_the_prefix() {
        let mut p = peek(chunks(&[Ok("ab"), Err("reset")]), 100).await;
        assert_eq!(&p.prefix()[..], b"ab");
        assert!(!p.is_whole());
        let first = p.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        let err = p.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "reset");
    }
}
