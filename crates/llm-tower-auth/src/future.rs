//! The response future of [`Auth`](crate::Auth).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use llm_tower_core::BoxError;
use pin_project_lite::pin_project;

use crate::Identity;

pin_project! {
    /// Refused at once, or the inner call with the identity to put on its answer.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Refused { err: Option<BoxError> },
        Calling { #[pin] fut: F, id: Option<Arc<Identity>> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn refused(err: BoxError) -> Self {
        ResponseFuture { state: State::Refused { err: Some(err) } }
    }

    pub(crate) fn calling(fut: F, id: Arc<Identity>) -> Self {
        ResponseFuture { state: State::Calling { fut, id: Some(id) } }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { err } => {
                Poll::Ready(Err(err.take().unwrap_or_else(|| "polled after completion".into())))
            }
            StateProj::Calling { fut, id } => {
                let mut res = std::task::ready!(fut.poll(cx)).map_err(Into::into)?;
                if let Some(id) = id.take() {
                    res.extensions_mut().insert(id);
                }
                Poll::Ready(Ok(res))
            }
        }
    }
}
