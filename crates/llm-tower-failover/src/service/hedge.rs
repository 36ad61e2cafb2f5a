//! Hedging: a route's hedging state (recent times to head, the budget), and
//! two calls at once where the first usable outcome wins.

use super::*;

/// Hedges the budget may hold at once, in thousandths. It starts full (a
/// route's first requests may be hedged: a backend hanging from the start
/// is met by hedges at once), unless the ratio is zero.
const HEDGE_BURST: i64 = 10_000;
/// Times to head kept for percentiles.
const RECENT: usize = 256;
/// Samples needed before a percentile delay is trusted; the percentile is
/// recomputed every this many samples (a sort of `RECENT` values, once per
/// 16 heads instead of once per request).
const MIN_SAMPLES: usize = 16;

/// One route's hedging: its settings, its recent times to head (any
/// backend's) and its budget. Atomics only.
pub(crate) struct HedgeState {
    pub(crate) hedge: Hedge,
    /// Budget in thousandths of a hedge.
    budget: AtomicI64,
    /// The last `RECENT` times to head, seconds as `f64` bits (0: no sample yet).
    recent: Box<[AtomicU64]>,
    recent_at: AtomicU64,
    /// The percentile delay last computed, nanoseconds (0: not yet).
    percentile_ns: AtomicU64,
}

impl HedgeState {
    pub(crate) fn new(hedge: Hedge) -> Self {
        HedgeState {
            hedge,
            budget: AtomicI64::new(if hedge.max_ratio > 0.0 { HEDGE_BURST } else { 0 }),
            recent: (0..RECENT).map(|_| AtomicU64::new(0)).collect(),
            recent_at: AtomicU64::new(0),
            percentile_ns: AtomicU64::new(0),
        }
    }

    /// A response head arrived after `rtt` on one of the route's backends.
    pub(crate) fn observe(&self, rtt: Duration) {
        let n = self.recent_at.fetch_add(1, Ordering::Relaxed) as usize;
        // A zero sample would read as "none": the smallest positive instead.
        let v = rtt.as_secs_f64().max(f64::MIN_POSITIVE).to_bits();
        self.recent[n % RECENT].store(v, Ordering::Relaxed);
        if let (HedgeDelay::Percentile { p, .. }, true) = (self.hedge.delay, (n + 1) % MIN_SAMPLES == 0) {
            let mut r: Vec<f64> = self
                .recent
                .iter()
                .map(|v| v.load(Ordering::Relaxed))
                .filter(|&v| v != 0)
                .map(f64::from_bits)
                .collect();
            r.sort_by(f64::total_cmp);
            let at = ((r.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
            let ns = (r[at] * 1e9) as u64;
            self.percentile_ns.store(ns.max(1), Ordering::Relaxed);
        }
    }

    /// How long to wait for a head before hedging. A percentile delay with
    /// fewer than `MIN_SAMPLES` samples is one second (at least `min`).
    pub(crate) fn delay(&self) -> Duration {
        match self.hedge.delay {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::Percentile { min, .. } => match self.percentile_ns.load(Ordering::Relaxed) {
                0 => min.max(Duration::from_secs(1)),
                ns => Duration::from_nanos(ns).max(min),
            },
        }
    }

    /// Takes a hedge from the budget.
    pub(crate) fn take(&self) -> bool {
        if self.budget.fetch_sub(1_000, Ordering::Relaxed) >= 1_000 {
            return true;
        }
        self.budget.fetch_add(1_000, Ordering::Relaxed);
        false
    }

    /// One request's deposit: `max_ratio` of a hedge.
    pub(crate) fn refill(&self) {
        let add = (self.hedge.max_ratio * 1_000.0) as i64;
        let b = self.budget.fetch_add(add, Ordering::Relaxed) + add;
        if b > HEDGE_BURST {
            self.budget.fetch_sub(b - HEDGE_BURST, Ordering::Relaxed);
        }
    }
}

/// Who races: the two backends and when each call started, and the
/// request's estimated input tokens (what a cancelled call was likely billed).
pub(crate) struct Racers {
    pub(crate) backends: [usize; 2],
    pub(crate) started: [Instant; 2],
    pub(crate) input_tokens: Option<u32>,
}

/// Two calls at once: the first usable outcome wins, the other is dropped
/// (cancelled) and counted against its backend.
pub(crate) async fn race<S>(
    shared: &Shared<S>,
    racers: Racers,
    a: impl Future<Output = Outcome>,
    b: impl Future<Output = Outcome>,
    attempts: &mut Vec<BackendAttempt>,
    tried: &mut usize,
) -> Outcome {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut a_done, mut b_done) = (false, false);
    loop {
        let (o, winner) = tokio::select! {
            o = &mut a, if !a_done => { a_done = true; (o, 0) }
            o = &mut b, if !b_done => { b_done = true; (o, 1) }
        };
        match o {
            Outcome::Failed(f, _) if !(a_done && b_done) => {
                attempts.push(f);
                *tried += 1;
            }
            other => {
                if !(a_done && b_done) {
                    cancelled(shared, &racers, 1 - winner);
                }
                return other;
            }
        }
    }
}

/// The losing call of a race is dropped before its head: what it cost is
/// recorded against its backend; how long it had taken so far is a latency
/// sample (a lower bound: a hanging backend's estimate grows), and having
/// lost counts against its success score (not its health: it did not fail,
/// it was slower than the hedge delay plus the other's answer).
fn cancelled<S>(shared: &Shared<S>, racers: &Racers, loser: usize) {
    let state = &shared.backends[racers.backends[loser]].state;
    let now = Instant::now();
    state.observe_latency(now.saturating_duration_since(racers.started[loser]), now);
    state.lost_race(now);
    state.hedges_cancelled.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("llm_tower_failover_hedge_cancelled_total", "backend" => state.name.to_string())
        .increment(1);
    if let Some(t) = racers.input_tokens {
        metrics::counter!(
            "llm_tower_failover_hedge_cancelled_input_tokens_total",
            "backend" => state.name.to_string()
        )
        .increment(u64::from(t));
    }
}
