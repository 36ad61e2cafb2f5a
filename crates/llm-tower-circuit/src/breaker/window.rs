//! The outcome window: the last N calls, or per-second buckets over the last N seconds.

use super::*;

#[derive(Debug)]
pub(crate) enum Win {
    Count {
        slots: Box<[AtomicU8]>,
        cursor: AtomicU64,
        calls: AtomicU32,
        failures: AtomicU32,
        slow: AtomicU32,
    },
    Time {
        width: Duration,
        buckets: Box<[TimeBucket]>,
    },
}

#[derive(Debug, Default)]
pub(crate) struct TimeBucket {
    pub(crate) epoch: AtomicU64,
    pub(crate) calls: AtomicU32,
    pub(crate) failures: AtomicU32,
    pub(crate) slow: AtomicU32,
}

pub(crate) const SEEN: u8 = 1;
pub(crate) const FAIL: u8 = 2;
pub(crate) const SLOW: u8 = 4;

impl Win {
    pub(crate) fn new(w: Window) -> Self {
        match w {
            Window::Count(n) => Win::Count {
                slots: (0..n.max(1)).map(|_| AtomicU8::new(0)).collect(),
                cursor: AtomicU64::new(0),
                calls: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                slow: AtomicU32::new(0),
            },
            Window::Time { buckets, bucket } => Win::Time {
                width: bucket.max(Duration::from_millis(1)),
                buckets: (0..buckets.max(1)).map(|_| TimeBucket::default()).collect(),
            },
        }
    }

    pub(crate) fn epoch(width: Duration, since: Duration) -> u64 {
        since.as_nanos() as u64 / width.as_nanos() as u64 + 1
    }

    pub(crate) fn record(&self, failed: bool, slow: bool, since: impl FnOnce() -> Duration) {
        match self {
            Win::Count { slots, cursor, calls, failures, slow: slows } => {
                let i = (cursor.fetch_add(1, Relaxed) % slots.len() as u64) as usize;
                let new = SEEN | if failed { FAIL } else { 0 } | if slow { SLOW } else { 0 };
                let old = slots[i].swap(new, AcqRel);
                if old & SEEN == 0 {
                    calls.fetch_add(1, Relaxed);
                }
                adjust(failures, old & FAIL != 0, failed);
                adjust(slows, old & SLOW != 0, slow);
            }
            Win::Time { width, buckets } => {
                let e = Self::epoch(*width, since());
                let b = &buckets[(e % buckets.len() as u64) as usize];
                let seen = b.epoch.load(Acquire);
                if seen != e && b.epoch.compare_exchange(seen, e, AcqRel, Acquire).is_ok() {
                    b.calls.store(0, Relaxed);
                    b.failures.store(0, Relaxed);
                    b.slow.store(0, Relaxed);
                }
                b.calls.fetch_add(1, Relaxed);
                if failed {
                    b.failures.fetch_add(1, Relaxed);
                }
                if slow {
                    b.slow.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// (calls, failures, slow) in the window.
    pub(crate) fn totals(&self, since: impl FnOnce() -> Duration) -> (u32, u32, u32) {
        match self {
            Win::Count { calls, failures, slow, .. } => {
                (calls.load(Relaxed), failures.load(Relaxed), slow.load(Relaxed))
            }
            Win::Time { width, buckets } => {
                let e = Self::epoch(*width, since());
                let n = buckets.len() as u64;
                buckets
                    .iter()
                    .filter(|b| {
                        let be = b.epoch.load(Acquire);
                        be <= e && be + n > e
                    })
                    .fold((0, 0, 0), |(c, f, s), b| {
                        (c + b.calls.load(Relaxed), f + b.failures.load(Relaxed), s + b.slow.load(Relaxed))
                    })
            }
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Win::Count { slots, calls, failures, slow, .. } => {
                for s in slots.iter() {
                    s.store(0, Relaxed);
                }
                calls.store(0, Relaxed);
                failures.store(0, Relaxed);
                slow.store(0, Relaxed);
            }
            Win::Time { buckets, .. } => {
                for b in buckets.iter() {
                    b.epoch.store(0, Relaxed);
                }
            }
        }
    }
}

pub(crate) fn adjust(counter: &AtomicU32, was: bool, is: bool) {
    match (was, is) {
        (false, true) => {
            counter.fetch_add(1, Relaxed);
        }
        (true, false) => {
            counter.fetch_sub(1, Relaxed);
        }
        _ => {}
    }
}
