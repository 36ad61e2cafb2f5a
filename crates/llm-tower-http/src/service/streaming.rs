//! A streamed body with idle and total timeouts on one lazily re-armed timer.

use super::*;

/// A streamed upstream body with idle and total timeouts.
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
        self.guard.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Streaming {
    /// Ends the call as failed (counted as an upstream error).
    pub(crate) fn fail(&self) {
        if let Some(g) = &self.guard {
            g.fail();
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        let Some(guard) = this.guard.as_ref() else { return Poll::Ready(None) };
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.timeouts.idle.is_some() {
                    this.last_activity = Instant::now();
                }
                if let (Some(limit), Some(data)) = (this.events.as_mut(), frame.data_ref())
                    && let Err(e) = limit.check(data)
                {
                    guard.fail();
                    this.guard = None;
                    this.timer = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                guard.fail();
                this.guard = None;
                Poll::Ready(Some(Err(StreamAborted::new(e).into())))
            }
            Poll::Ready(None) => {
                this.guard = None;
                this.timer = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.check_deadlines(cx) {
                None => Poll::Pending,
                Some(t) => {
                    if let Some(g) = this.guard.take() {
                        g.fail();
                    }
                    Poll::Ready(Some(Err(t.into())))
                }
            },
        }
    }
}
