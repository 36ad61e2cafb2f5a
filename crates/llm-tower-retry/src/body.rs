//! The body a retry layer returns.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use llm_tower_core::BoxError;
use llm_tower_core::peek::Prefixed;
use pin_project_lite::pin_project;

pin_project! {
    /// The inner service's body, or a body whose start the retry layer read (a
    /// 429 it inspected for `insufficient_quota`): then the bytes it read come
    /// first and the rest of the body follows, whatever its size.
    pub struct RetryBody<R> {
        #[pin]
        kind: Kind<R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<R> {
        Inner { #[pin] inner: R },
        Peeked { #[pin] body: Prefixed<R> },
    }
}

impl<R> RetryBody<R> {
    pub(crate) fn inner(inner: R) -> Self {
        RetryBody { kind: Kind::Inner { inner } }
    }

    pub(crate) fn peeked(body: Prefixed<R>) -> Self {
        RetryBody { kind: Kind::Peeked { body } }
    }

    /// Whether the retry layer read the start of this body itself.
    ///
    /// ```
    /// # let _ = llm_tower_retry::RetryBody::<http_body_util::Empty<bytes::Bytes>>::is_buffered;
    /// ```
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Peeked { .. })
    }
}

impl<R> std::fmt::Debug for RetryBody<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBody").field("buffered", &self.is_buffered()).finish()
    }
}

impl<R> Body for RetryBody<R>
where
    R: Body<Data = Bytes>,
    R::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Inner { inner } => inner.poll_frame(cx).map(|o| o.map(|r| r.map_err(Into::into))),
            KindProj::Peeked { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { inner } => inner.is_end_stream(),
            Kind::Peeked { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { inner } => inner.size_hint(),
            Kind::Peeked { body } => body.size_hint(),
        }
    }
}
