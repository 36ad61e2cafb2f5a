//! Recent successful latencies, for the adaptive per-attempt timeout.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const CAPACITY: usize = 256;
const RECOMPUTE_EVERY: u64 = 16;

/// A ring of recent latencies and a cached quantile of them.
#[derive(Debug)]
pub(crate) struct LatencyTracker {
    quantile: f64,
    ring: Mutex<Vec<u64>>,
    seen: AtomicU64,
    cached_micros: AtomicU64,
}

impl LatencyTracker {
    pub(crate) fn new(quantile: f64) -> Self {
        Self {
            quantile: quantile.clamp(0.0, 1.0),
            ring: Mutex::new(Vec::with_capacity(CAPACITY)),
            seen: AtomicU64::new(0),
            cached_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let micros = d.as_micros() as u64;
        if ring.len() < CAPACITY {
            ring.push(micros);
        } else {
            ring[(n as usize) % CAPACITY] = micros;
        }
        if n % RECOMPUTE_EVERY == 0 || ring.len() < CAPACITY {
            let mut sorted = ring.clone();
            drop(ring);
            sorted.sort_unstable();
            let idx = ((sorted.len() - 1) as f64 * self.quantile).round() as usize;
            self.cached_micros.store(sorted[idx], Ordering::Relaxed);
        }
    }

    pub(crate) fn samples(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    pub(crate) fn quantile(&self) -> Duration {
        Duration::from_micros(self.cached_micros.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_the_quantile() {
        let t = LatencyTracker::new(0.9);
        for ms in 1..=100u64 {
            t.record(Duration::from_millis(ms));
        }
        assert_eq!(t.samples(), 100);
        assert_eq!(t.quantile(), Duration::from_millis(90));
    }
}
