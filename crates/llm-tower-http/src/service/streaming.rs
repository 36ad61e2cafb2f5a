//! A streamed body with idle and total timeouts on one lazily re-armed timer,
//! which hands on the chunks that arrive together as one frame.

use super::join::{Held, MAX_JOINED_BYTES, Turn};
use super::*;

/// A streamed upstream body with idle and total timeouts, which joins the
/// chunks that arrive together (`join`, on for a streamed answer).
///
/// One timer serves both limits and is re-armed lazily: a chunk only records
/// when it arrived; when the timer fires, the body checks the idle and total
/// deadlines and either fails or re-arms for the earlier one.
pub(crate) struct Streaming {
    pub(crate) inner: Incoming,
    pub(crate) timer: Option<Pin<Box<Sleep>>>,
    pub(crate) timeouts: Timeouts,
    pub(crate) total_deadline: Option<Instant>,
    pub(crate) last_activity: Instant,
    pub(crate) guard: Option<InFlight>,
    /// The per-event size limit of an event stream.
    pub(crate) events: Option<EventSizeLimit>,
    /// Whether chunks that arrive together are joined (a streamed answer;
    /// a body read whole is joined by its reader).
    pub(crate) join: bool,
    /// Data taken from upstream and not yet handed on.
    held: Held,
    /// Whether this poll took a chunk: the body yields to the executor
    /// once more before it hands on what it holds.
    took: bool,
    /// What came after held data (trailers, an error or the end), handed on
    /// after it.
    after: Option<Option<Result<Frame<Bytes>, BoxError>>>,
    /// The executor's turn the body waits for before it hands on held data
    /// (made on the first yield, reused for the stream's later ones).
    turn: Option<Arc<Turn>>,
}

impl Streaming {
    pub(crate) fn new(
        inner: Incoming,
        timeouts: Timeouts,
        total_deadline: Option<Instant>,
        guard: InFlight,
        timer: Option<Pin<Box<Sleep>>>,
    ) -> Self {
        Streaming {
            inner,
            timer,
            timeouts,
            total_deadline,
            last_activity: Instant::now(),
            guard: Some(guard),
            events: None,
            join: false,
            held: Held::Nothing,
            took: false,
            after: None,
            turn: None,
        }
    }

    /// The deadline to wait for now: the earlier of idle and total.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let idle = self.timeouts.idle.map(|d| self.last_activity + d);
        match (idle, self.total_deadline) {
            (Some(i), Some(t)) => Some(i.min(t)),
            (i, t) => i.or(t),
        }
    }

    /// `Some(timeout)` if a limit has expired; otherwise arms the timer
    /// for the next deadline and registers the waker.
    pub(crate) fn check_deadlines(&mut self, cx: &mut Context<'_>) -> Option<Timeout> {
        loop {
            let deadline = self.deadline()?;
            let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = Instant::now();
            if self.total_deadline.is_some_and(|t| t <= now) {
                return Some(Timeout {
                    phase: TimeoutPhase::Total,
                    after: self.timeouts.total.unwrap_or_default(),
                });
            }
            if self.timeouts.idle.is_some_and(|d| self.last_activity + d <= now) {
                return Some(Timeout {
                    phase: TimeoutPhase::Idle,
                    after: self.timeouts.idle.unwrap_or_default(),
                });
            }
            // Fired for a deadline that has since moved (a chunk arrived): re-arm.
        }
    }
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Streaming::poll_frame(&mut self, cx)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.held, Held::Nothing)
            && self.after.is_none()
            && (self.guard.is_none() || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let held = self.held.len() as u64;
        if held > 0 {
            hint.set_lower(hint.lower() + held);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + held);
            }
        }
        hint
    }
}

impl Streaming {
    /// Ends the call as failed (counted as an upstream error).
    pub(crate) fn fail(&self) {
        if let Some(g) = &self.guard {
            g.fail();
        }
    }

    /// Hands on what is held, keeping `next` for the poll after; or `next`
    /// itself when nothing is held.
    fn then(
        &mut self,
        next: Option<Result<Frame<Bytes>, BoxError>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.held.take() {
            Some(data) => {
                self.after = Some(next);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => Poll::Ready(next),
        }
    }

    /// The next frame. With `join` on, the chunks hyper's client has
    /// already read are handed on as one frame (see [`super::join`]): having
    /// taken a chunk, the body asks for a wake once the executor has run the
    /// tasks that are ready (`yield_now`'s deferred wake) and returns
    /// `Pending`; the upstream connection's task queues its next chunk
    /// meanwhile. The body takes chunks for as long as a turn brings one, and
    /// hands on what it holds when a turn brings none (or at
    /// `MAX_JOINED_BYTES`). A burst costs the caller one write instead of
    /// one per event; an event that arrives alone waits for one turn of the
    /// executor, not for the next event. Trailers, an error or the end come
    /// after the data held before them.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(next) = self.after.take() {
            return Poll::Ready(next);
        }
        loop {
            let Some(guard) = self.guard.as_ref() else { return self.then(None) };
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if self.timeouts.idle.is_some() {
                        self.last_activity = Instant::now();
                    }
                    if let (Some(limit), Some(data)) = (self.events.as_mut(), frame.data_ref())
                        && let Err(e) = limit.check(data)
                    {
                        guard.fail();
                        self.guard = None;
                        self.timer = None;
                        return self.then(Some(Err(e.into())));
                    }
                    if !self.join {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    match frame.into_data() {
                        Ok(data) => {
                            self.held.push(data);
                            if self.held.len() >= MAX_JOINED_BYTES {
                                return self.then_more();
                            }
                            self.took = true;
                        }
                        Err(trailers) => return self.then(Some(Ok(trailers))),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    guard.fail();
                    self.guard = None;
                    return self.then(Some(Err(StreamAborted::new(e).into())));
                }
                Poll::Ready(None) => {
                    self.guard = None;
                    self.timer = None;
                    return self.then(None);
                }
                Poll::Pending if self.took => {
                    // Yield: the connection task may have the next chunk.
                    self.took = false;
                    self.turn.get_or_insert_with(Default::default).wait(cx);
                    return Poll::Pending;
                }
                Poll::Pending if !matches!(self.held, Held::Nothing) => {
                    // Polled again before the executor's turn came round
                    // (hyper's dispatcher loops): the turn's wake is still due.
                    if self.turn.as_ref().is_some_and(|t| !t.passed()) {
                        return Poll::Pending;
                    }
                    return self.then_more();
                }
                Poll::Pending => {
                    return match self.check_deadlines(cx) {
                        None => Poll::Pending,
                        Some(t) => {
                            if let Some(g) = self.guard.take() {
                                g.fail();
                            }
                            Poll::Ready(Some(Err(t.into())))
                        }
                    };
                }
            }
        }
    }

    /// Hands on what is held; the stream goes on.
    fn then_more(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.took = false;
        Poll::Ready(Some(Ok(Frame::data(self.held.take().unwrap_or_default()))))
    }
}
