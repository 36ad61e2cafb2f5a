//! Response bodies the gateway sends: streams that fail mid-way end with an
//! SSE `error` event instead of ending as if complete.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The SSE event that ends a stream that broke after it started (core's).
pub use llm_tower_core::sse::error_event as sse_error_event;

/// Ends a broken stream with an SSE error event (core's).
pub use llm_tower_core::sse::GuardBody;

pin_project! {
    /// Calls `on_end` once, with how the body ended: at its end, on its first
    /// error, or when it is dropped before either.
    pub struct NotifyEnd<B, F>
    where
        F: FnOnce(llm_tower_core::usage::StreamEnd),
    {
        #[pin]
        inner: B,
        on_end: Option<F>,
    }

    impl<B, F> PinnedDrop for NotifyEnd<B, F>
    where
        F: FnOnce(llm_tower_core::usage::StreamEnd),
    {
        fn drop(this: Pin<&mut Self>) {
            if let Some(f) = this.project().on_end.take() {
                f(llm_tower_core::usage::StreamEnd::EndedEarly);
            }
        }
    }
}

impl<B, F: FnOnce(llm_tower_core::usage::StreamEnd)> NotifyEnd<B, F> {
    /// Wraps `inner`.
    pub fn new(inner: B, on_end: F) -> Self {
        Self { inner, on_end: Some(on_end) }
    }
}

impl<B, F> Body for NotifyEnd<B, F>
where
    B: Body<Data = Bytes>,
    F: FnOnce(llm_tower_core::usage::StreamEnd),
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        use llm_tower_core::usage::StreamEnd;
        let mut this = self.project();
        let out = ready!(this.inner.as_mut().poll_frame(cx));
        let end = match &out {
            Some(Ok(_)) if this.inner.is_end_stream() => Some(StreamEnd::Complete),
            Some(Ok(_)) => None,
            Some(Err(_)) => Some(StreamEnd::Failed),
            None => Some(StreamEnd::Complete),
        };
        if let Some(end) = end {
            if let Some(f) = this.on_end.take() {
                f(end);
            }
        }
        Poll::Ready(out)
    }

    fn is_end_stream(&self) -> bool {
        self.on_end.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
