//! The two ways of sending load: a closed loop (N clients, each sending its
//! next request when the last one is answered) and an open loop (requests at
//! fixed intended times, whatever the answers do).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::Shooter;
use crate::progress::Progress;
use crate::record::Recorder;
use crate::work::Workload;

/// When a closed loop stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Stop {
    /// After this many requests.
    Requests(u64),
    /// After this long (requests in flight then are completed and counted).
    Duration(Duration),
}

/// Shared by the tasks of one run.
struct Shared {
    rec: Mutex<Recorder>,
    progress: Progress,
}

impl Shared {
    fn record(&self, from: Instant, o: &crate::client::Outcome) {
        let done = Instant::now();
        let mut rec = self.rec.lock().unwrap_or_else(|p| p.into_inner());
        rec.record(from, done, o);
        self.progress.update(&rec.total, rec.elapsed());
    }
}

fn finish(shared: Arc<Shared>) -> Recorder {
    let shared = Arc::into_inner(shared).expect("every task of the run has ended");
    shared.rec.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Runs `clients` closed-loop clients until `stop`; request `i` (counted from
/// `first`) sends `work.prompt(i)`. Latency runs from each send to the end of
/// its answer.
pub(crate) async fn closed(
    shooter: &Shooter,
    work: &Workload,
    clients: usize,
    stop: Stop,
    first: u64,
    rec: Recorder,
    progress: Progress,
) -> Recorder {
    let start = Instant::now();
    let shared = Arc::new(Shared { rec: Mutex::new(rec), progress });
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (shooter, work, shared, next) = (shooter.clone(), work.clone(), shared.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let more = match stop {
                    Stop::Requests(n) => i < n,
                    Stop::Duration(d) => start.elapsed() < d,
                };
                if !more {
                    return;
                }
                let from = Instant::now();
                let o = shooter.send(from, first + i, &work.prompt(first + i)).await;
                shared.record(from, &o);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    finish(shared)
}

/// The schedule of an open loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    /// Requests per second.
    pub(crate) qps: f64,
    /// How long to send.
    pub(crate) duration: Duration,
    /// At most this many outstanding requests.
    pub(crate) max_in_flight: usize,
}

/// Sends at `qps` for `duration`: request `i` is due at `start + i / qps` and
/// its latency is measured from then, not from when it could be sent, so a
/// slow answer that holds up later requests shows in their latency (the
/// correction for coordinated omission). At most `max_in_flight` requests are
/// outstanding; beyond that, sends wait (and their waiting counts).
pub(crate) async fn open(
    shooter: &Shooter,
    work: &Workload,
    pace: Pace,
    first: u64,
    rec: Recorder,
    progress: Progress,
) -> Recorder {
    let Pace { qps, duration, max_in_flight } = pace;
    let start = Instant::now();
    let shared = Arc::new(Shared { rec: Mutex::new(rec), progress });
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let total = (qps.max(0.0) * duration.as_secs_f64()).floor() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / qps);
        tokio::time::sleep_until(due).await;
        let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (shooter, prompt, shared) = (shooter.clone(), work.prompt(first + i), shared.clone());
        tasks.spawn(async move {
            let o = shooter.send(due, first + i, &prompt).await;
            shared.record(due, &o);
            drop(permit);
        });
        // Reap finished tasks as we go, so the set stays the size of what is in flight.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    finish(shared)
}
