//! What a streamed body uses to hand on the chunks that arrive together as
//! one frame: the chunks it holds, and the executor's turn it waits for.
//!
//! hyper's client hands a response body over one chunk at a time (its body
//! channel holds one), so a burst of events the connection read in one
//! segment reaches the body one chunk per switch between the connection's
//! task and the body's. Handed on one by one, each event costs the caller's
//! connection a write of its own and a pass through every layer above. The
//! body instead takes what is there, waits one turn of the executor (the
//! connection task runs and queues the next chunk) and hands on all it holds
//! once a turn brings nothing new.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use bytes::{Bytes, BytesMut};

/// The most a streamed body joins into one frame; a burst larger than this
/// is handed on in frames of about this size.
pub(crate) const MAX_JOINED_BYTES: usize = 64 * 1024;

/// One pass of the executor's queue: woken by tokio once the tasks that were
/// ready when it was asked for have run (`yield_now`'s deferred wake), it
/// marks itself passed and wakes the body's task. The mark tells a poll in
/// the next turn from a poll hyper's dispatcher makes again in this one.
#[derive(Default)]
pub(crate) struct Turn {
    passed: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Turn {
    /// Asks for a wake of `cx`'s task once the executor's queue has passed.
    pub(crate) fn wait(self: &Arc<Self>, cx: &Context<'_>) {
        self.passed.store(false, Ordering::Release);
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        let waker = Waker::from(self.clone());
        let yielded = std::pin::pin!(tokio::task::yield_now());
        // Outside a tokio runtime the wake is immediate; inside, deferred.
        let _ = yielded.poll(&mut Context::from_waker(&waker));
    }

    pub(crate) fn passed(&self) -> bool {
        self.passed.load(Ordering::Acquire)
    }
}

impl Wake for Turn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.passed.store(true, Ordering::Release);
        if let Some(w) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }
}

/// Chunks taken from upstream and not handed on yet: one as it came, or
/// several copied into one buffer.
#[derive(Default)]
pub(crate) enum Held {
    #[default]
    Nothing,
    One(Bytes),
    Joined(BytesMut),
}

impl Held {
    pub(crate) fn len(&self) -> usize {
        match self {
            Held::Nothing => 0,
            Held::One(b) => b.len(),
            Held::Joined(b) => b.len(),
        }
    }

    pub(crate) fn push(&mut self, data: Bytes) {
        *self = match std::mem::take(self) {
            Held::Nothing => Held::One(data),
            Held::One(first) => {
                let mut joined = BytesMut::with_capacity((first.len() + data.len()) * 2);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&data);
                Held::Joined(joined)
            }
            Held::Joined(mut joined) => {
                joined.extend_from_slice(&data);
                Held::Joined(joined)
            }
        }
    }

    pub(crate) fn take(&mut self) -> Option<Bytes> {
        match std::mem::take(self) {
            Held::Nothing => None,
            Held::One(b) => Some(b),
            Held::Joined(b) => Some(b.freeze()),
        }
    }
}
