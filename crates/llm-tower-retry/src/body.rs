//! The body a retry layer returns.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use llm_tower_core::BoxError;
use pin_project_lite::pin_project;

pin_project! {
    /// The inner service's body, or a body the retry layer had to read (a 429
    /// it inspected for `insufficient_quota`).
    pub struct RetryBody<R> {
        #[pin]
        kind: Kind<R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<R> {
        Inner { #[pin] inner: R },
        Buffered { data: Option<Bytes> },
    }
}

impl<R> RetryBody<R> {
    pub(crate) fn inner(inner: R) -> Self {
        RetryBody { kind: Kind::Inner { inner } }
    }

    pub(crate) fn buffered(data: Bytes) -> Self {
        RetryBody { kind: Kind::Buffered { data: Some(data) } }
    }

    /// Whether the retry layer read this body itself.
    ///
    /// ```
    /// # let _ = llm_tower_retry::RetryBody::<http_body_util::Empty<bytes::Bytes>>::is_buffered;
    /// ```
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
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
            KindProj::Buffered { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { inner } => inner.is_end_stream(),
            Kind::Buffered { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { inner } => inner.size_hint(),
            Kind::Buffered { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
