//! The answer as the client receives it: x-llm-backend, and the call held in flight until its body ends.

use super::*;

pub(crate) fn answer<S, B>(res: Response<B>, guard: InFlight<S>) -> Response<LlmResponseBody>
where
    S: Send + Sync + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let sse = BodyKind::from_headers(res.headers()) == BodyKind::Sse;
    let backend = guard.state().header.clone();
    let mut res = llm_tower_core::response::observe(res, guard);
    // A stream that breaks mid-way ends with an SSE `event: error`, never a clean end.
    if sse {
        res.body_mut().guard_sse();
    }
    res.headers_mut().insert(X_LLM_BACKEND, backend);
    res
}

/// Counts a call in flight on its backend until its body ends or it is dropped.
pub(crate) struct InFlight<S> {
    pub(crate) shared: Arc<Shared<S>>,
    pub(crate) backend: usize,
}

impl<S> InFlight<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, backend: usize) -> Self {
        shared.backends[backend].state.started();
        InFlight { shared, backend }
    }

    pub(crate) fn state(&self) -> &State {
        &self.shared.backends[self.backend].state
    }
}

impl<S> Drop for InFlight<S> {
    fn drop(&mut self) {
        self.state().finished();
    }
}

/// Observes the answer's body: the call stays in flight until the body ends,
/// and a body that breaks counts against its backend.
impl<S: Send + Sync + 'static> BodyObserver for InFlight<S> {
    fn on_end(self: Box<Self>, end: &mut BodyEnd) {
        if end.end == StreamEnd::Failed {
            self.state().failure(&self.shared.health, Instant::now());
        }
    }
}
