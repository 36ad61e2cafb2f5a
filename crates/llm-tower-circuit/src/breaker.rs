//! One breaker: state machine, windows, transitions. Lock-free on the call path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use std::time::Duration;

use llm_tower_core::{Classification, Key, OutcomeClass};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{CircuitConfig, Window};

/// The state of one breaker.
///
/// ```
/// assert_eq!(llm_tower_circuit::CircuitState::Closed.to_string(), "closed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A few probe calls pass; their outcomes decide.
    HalfOpen,
    /// Refused until an operator says otherwise.
    ForcedOpen,
    /// Passes everything and never trips, until an operator says otherwise.
    ForcedClosed,
}

impl CircuitState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => CircuitState::Closed,
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            3 => CircuitState::ForcedOpen,
            _ => CircuitState::ForcedClosed,
        }
    }
}

impl std::fmt::Display for CircuitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::ForcedClosed => "forced_closed",
        })
    }
}

/// A state change of one breaker.
///
/// ```
/// # let t: Option<llm_tower_circuit::Transition> = None;
/// # if let Some(t) = t { println!("{} {} -> {}", t.key, t.from, t.to); }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The breaker's key.
    pub key: Key,
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// When (tokio time).
    pub at: Instant,
}

#[derive(Debug)]
enum Win {
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
struct TimeBucket {
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

const SEEN: u8 = 1;
const FAIL: u8 = 2;
const SLOW: u8 = 4;

impl Win {
    fn new(w: Window) -> Self {
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

    fn epoch(width: Duration, since: Duration) -> u64 {
        since.as_nanos() as u64 / width.as_nanos() as u64 + 1
    }

    fn record(&self, failed: bool, slow: bool, since: impl FnOnce() -> Duration) {
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
    fn totals(&self, since: impl FnOnce() -> Duration) -> (u32, u32, u32) {
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

    fn reset(&self) {
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

fn adjust(counter: &AtomicU32, was: bool, is: bool) {
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

/// A clock read at most once, and only if something needs the time.
pub(crate) struct Clock(Option<Instant>);

impl Clock {
    pub(crate) fn lazy() -> Self {
        Clock(None)
    }
    #[cfg(test)]
    pub(crate) fn at(now: Instant) -> Self {
        Clock(Some(now))
    }
    pub(crate) fn now(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// Why a call was refused.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) retry_after: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    pub(crate) key: Key,
    base: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    window: Win,
    open_until: AtomicU64,
    hint_until: AtomicU64,
    trips: AtomicU32,
    probes: AtomicU32,
    probe_successes: AtomicU32,
    pub(crate) last_used: AtomicU64,
    pub(crate) probing: AtomicBool,
    rng: AtomicU64,
    transition: Mutex<()>,
    pub(crate) calls: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) slow: AtomicU64,
    pub(crate) rejections: AtomicU64,
    pub(crate) transitions: AtomicU64,
}

/// What the registry does after a transition.
pub(crate) type Notify<'a> = &'a dyn Fn(&Breaker, CircuitState, CircuitState);

impl Breaker {
    pub(crate) fn new(key: Key, cfg: &CircuitConfig, base: Instant) -> Self {
        let seed = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(&key) | 1
        };
        Breaker {
            key,
            base,
            state: AtomicU8::new(0),
            consecutive: AtomicU32::new(0),
            window: Win::new(cfg.window),
            open_until: AtomicU64::new(0),
            hint_until: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            probes: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            last_used: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            rng: AtomicU64::new(seed),
            transition: Mutex::new(()),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
        }
    }

    fn since(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.base)
    }

    fn nanos(&self, now: Instant) -> u64 {
        self.since(now).as_nanos() as u64
    }

    pub(crate) fn state(&self) -> CircuitState {
        CircuitState::from_u8(self.state.load(Acquire))
    }

    /// The state, with an elapsed open period seen as half-open.
    pub(crate) fn effective_state(&self, now: Instant) -> CircuitState {
        match self.state() {
            CircuitState::Open if self.nanos(now) >= self.open_until.load(Acquire) => CircuitState::HalfOpen,
            s => s,
        }
    }

    pub(crate) fn failure_rate(&self, now: Instant) -> f64 {
        let (calls, failures, _) = self.window.totals(|| self.since(now));
        if calls == 0 { 0.0 } else { f64::from(failures) / f64::from(calls) }
    }

    pub(crate) fn open_remaining(&self, now: Instant) -> Option<Duration> {
        (self.state() == CircuitState::Open)
            .then(|| Duration::from_nanos(self.open_until.load(Acquire).saturating_sub(self.nanos(now))))
    }

    /// Would a call be admitted now (without admitting it)?
    pub(crate) fn is_available(&self, cfg: &CircuitConfig, now: Instant) -> bool {
        match self.effective_state(now) {
            CircuitState::Closed | CircuitState::ForcedClosed => true,
            CircuitState::HalfOpen => self.probes.load(Acquire) < cfg.half_open_probes,
            CircuitState::Open | CircuitState::ForcedOpen => false,
        }
    }

    /// Admits a call (`Ok(probe?)`) or refuses it.
    pub(crate) fn acquire(
        &self,
        cfg: &CircuitConfig,
        clock: &mut Clock,
        track_use: bool,
        notify: Notify<'_>,
    ) -> Result<bool, Refused> {
        if track_use {
            self.last_used.store(self.nanos(clock.now()), Relaxed);
        }
        loop {
            match self.state() {
                CircuitState::Closed | CircuitState::ForcedClosed => return Ok(false),
                CircuitState::ForcedOpen => {
                    self.rejections.fetch_add(1, Relaxed);
                    return Err(Refused { retry_after: None });
                }
                CircuitState::Open => {
                    let until = self.open_until.load(Acquire);
                    let now = clock.now();
                    let t = self.nanos(now);
                    if t < until {
                        self.rejections.fetch_add(1, Relaxed);
                        return Err(Refused { retry_after: Some(Duration::from_nanos(until - t)) });
                    }
                    // Lazy Open -> HalfOpen: no timer task per key.
                    self.move_to(CircuitState::Open, CircuitState::HalfOpen, now, notify, |b| {
                        b.probes.store(0, Release);
                        b.probe_successes.store(0, Release);
                    });
                }
                CircuitState::HalfOpen => {
                    if self.probes.fetch_add(1, AcqRel) < cfg.half_open_probes {
                        return Ok(true);
                    }
                    self.probes.fetch_sub(1, AcqRel);
                    self.rejections.fetch_add(1, Relaxed);
                    return Err(Refused { retry_after: None });
                }
            }
        }
    }

    /// A probe ended without an outcome (cancelled, or our own rejection).
    pub(crate) fn release_probe(&self) {
        let _ = self.probes.fetch_update(AcqRel, Acquire, |p| p.checked_sub(1));
    }

    /// Records an outcome of an admitted call.
    /// `start` is when the call began (needed only by the slow-call rule).
    pub(crate) fn record(
        &self,
        cfg: &CircuitConfig,
        probe: bool,
        class: &Classification,
        start: Option<Instant>,
        clock: &mut Clock,
        notify: Notify<'_>,
    ) {
        let slow = match (cfg.slow_calls, start) {
            (Some(r), Some(s)) => clock.now().saturating_duration_since(s) >= r.slower_than,
            _ => false,
        };
        let failed = match class.class {
            OutcomeClass::UpstreamFailure => true,
            OutcomeClass::Success | OutcomeClass::ClientError => false,
            OutcomeClass::Rejected => {
                // Our own inner layer refused: says nothing about the upstream.
                if probe {
                    self.release_probe();
                }
                return;
            }
        };
        self.calls.fetch_add(1, Relaxed);
        if failed {
            self.failures.fetch_add(1, Relaxed);
        }
        if slow {
            self.slow.fetch_add(1, Relaxed);
        }
        if failed && cfg.honor_retry_after {
            if let Some(after) = class.retry_after() {
                let until = self.nanos(clock.now() + after.min(cfg.max_retry_after));
                self.hint_until.fetch_max(until, AcqRel);
            }
        }
        let bad = failed || slow;
        match self.state() {
            CircuitState::HalfOpen if probe => {
                if bad {
                    self.trip(cfg, CircuitState::HalfOpen, clock.now(), notify);
                } else if self.probe_successes.fetch_add(1, AcqRel) + 1 >= cfg.half_open_successes {
                    self.move_to(CircuitState::HalfOpen, CircuitState::Closed, clock.now(), notify, |b| {
                        b.clear()
                    });
                }
            }
            CircuitState::Closed => {
                // Client errors prove the upstream answered: they end a run of
                // failures but are not counted in the rates.
                let run = if failed {
                    self.consecutive.fetch_add(1, AcqRel) + 1
                } else {
                    // Load first: a store per success would bounce the cache line between cores.
                    if self.consecutive.load(Relaxed) != 0 {
                        self.consecutive.store(0, Relaxed);
                    }
                    0
                };
                if class.class == OutcomeClass::ClientError {
                    return;
                }
                let since = match self.window {
                    Win::Time { .. } => Some(self.since(clock.now())),
                    Win::Count { .. } => None,
                };
                let since = || since.unwrap_or_default();
                self.window.record(failed, slow, since);
                let (calls, failures, slows) = self.window.totals(since);
                let ratio = |n: u32| if calls == 0 { 0.0 } else { f64::from(n) / f64::from(calls) };
                let trip = cfg.consecutive_failures.is_some_and(|n| run >= n)
                    || cfg
                        .failure_rate
                        .is_some_and(|r| calls >= r.min_calls && ratio(failures) >= r.threshold)
                    || cfg.slow_calls.is_some_and(|r| calls >= r.min_calls && ratio(slows) >= r.threshold);
                if trip {
                    self.trip(cfg, CircuitState::Closed, clock.now(), notify);
                }
            }
            _ => {}
        }
    }

    fn clear(&self) {
        self.consecutive.store(0, Relaxed);
        self.window.reset();
        self.trips.store(0, Relaxed);
        self.hint_until.store(0, Relaxed);
        self.probes.store(0, Release);
        self.probe_successes.store(0, Release);
    }

    fn next_random(&self) -> f64 {
        let mut x = self.rng.load(Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn trip(&self, cfg: &CircuitConfig, from: CircuitState, now: Instant, notify: Notify<'_>) {
        self.move_to(from, CircuitState::Open, now, notify, |b| {
            let n = b.trips.fetch_add(1, AcqRel);
            let grown = cfg.open_duration.as_secs_f64() * cfg.open_backoff.max(1.0).powi(n.min(64) as i32);
            let jitter = 1.0 + cfg.open_jitter.clamp(0.0, 1.0) * (2.0 * b.next_random() - 1.0);
            let secs = (grown.min(cfg.max_open_duration.as_secs_f64()) * jitter).max(0.0);
            let until = b.nanos(now) + Duration::from_secs_f64(secs).as_nanos() as u64;
            b.open_until.store(until.max(b.hint_until.load(Acquire)), Release);
            b.consecutive.store(0, Relaxed);
            b.window.reset();
            b.probes.store(0, Release);
            b.probe_successes.store(0, Release);
        });
    }

    /// Moves `from -> to` if still in `from`, running `prepare` first; notifies.
    fn move_to(
        &self,
        from: CircuitState,
        to: CircuitState,
        now: Instant,
        notify: Notify<'_>,
        prepare: impl FnOnce(&Self),
    ) {
        let _g = self.transition.lock().unwrap_or_else(|e| e.into_inner());
        if self.state() != from {
            return;
        }
        prepare(self);
        self.state.store(to as u8, Release);
        self.transitions.fetch_add(1, Relaxed);
        let _ = now;
        notify(self, from, to);
    }

    /// Operator override: any state to `to`.
    pub(crate) fn force(&self, to: CircuitState, now: Instant, notify: Notify<'_>) {
        let _g = self.transition.lock().unwrap_or_else(|e| e.into_inner());
        let from = self.state();
        self.clear();
        if to == CircuitState::Open {
            self.open_until.store(self.nanos(now), Release);
        }
        self.state.store(to as u8, Release);
        if from != to {
            self.transitions.fetch_add(1, Relaxed);
            notify(self, from, to);
        }
    }

    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &Breaker, _: CircuitState, _: CircuitState) {}

    #[test]
    fn count_window_is_a_ring() {
        let w = Win::new(Window::Count(4));
        for f in [true, true, true, true] {
            w.record(f, false, || Duration::ZERO);
        }
        assert_eq!(w.totals(|| Duration::ZERO), (4, 4, 0));
        for _ in 0..4 {
            w.record(false, false, || Duration::ZERO);
        }
        assert_eq!(w.totals(|| Duration::ZERO), (4, 0, 0), "only the last 4 outcomes count");
        w.record(true, true, || Duration::ZERO);
        assert_eq!(w.totals(|| Duration::ZERO), (4, 1, 1));
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let w = Win::new(Window::Time { buckets: 3, bucket: Duration::from_secs(1) });
        w.record(true, false, || Duration::from_millis(100));
        w.record(true, false, || Duration::from_millis(1100));
        assert_eq!(w.totals(|| Duration::from_millis(1200)), (2, 2, 0));
        assert_eq!(w.totals(|| Duration::from_millis(3100)), (1, 1, 0), "the first second left the window");
        assert_eq!(w.totals(|| Duration::from_millis(4100)), (0, 0, 0));
        w.record(false, false, || Duration::from_millis(4100));
        assert_eq!(w.totals(|| Duration::from_millis(4100)), (1, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn open_period_grows_and_is_capped() {
        let cfg = CircuitConfig::default()
            .consecutive_failures(Some(1))
            .open_duration(Duration::from_secs(10))
            .open_backoff(2.0)
            .max_open_duration(Duration::from_secs(30))
            .open_jitter(0.0)
            .half_open_probes(1)
            .half_open_successes(1);
        let b = Breaker::new(Key::from_static("k"), &cfg, Instant::now());
        let fail = Classification::upstream_failure(true);
        let mut periods = Vec::new();
        let now = Instant::now();
        assert!(!b.acquire(&cfg, &mut Clock::at(now), true, &none).unwrap());
        b.record(&cfg, false, &fail, None, &mut Clock::at(now), &none);
        for _ in 0..4 {
            let left = b.open_remaining(Instant::now()).unwrap();
            periods.push(left.as_secs());
            tokio::time::advance(left).await;
            let now = Instant::now();
            assert!(
                b.acquire(&cfg, &mut Clock::at(now), true, &none).unwrap(),
                "a probe after the open period"
            );
            b.record(&cfg, true, &fail, None, &mut Clock::at(now), &none);
        }
        assert_eq!(periods, vec![10, 20, 30, 30]);
    }

    /// A small sequential model of the same rules, written independently.
    struct Model {
        state: CircuitState,
        run: u32,
        ring: std::collections::VecDeque<bool>,
        open_until: u64,
        probes: u32,
        successes: u32,
    }

    const N: u32 = 3;
    const WIN: usize = 8;
    const MIN: usize = 6;
    const OPEN_MS: u64 = 1000;
    const K: u32 = 2;

    impl Model {
        fn new() -> Self {
            Model {
                state: CircuitState::Closed,
                run: 0,
                ring: Default::default(),
                open_until: 0,
                probes: 0,
                successes: 0,
            }
        }

        /// Returns whether the call was admitted.
        fn call(&mut self, now_ms: u64, failed: bool) -> bool {
            if self.state == CircuitState::Open {
                if now_ms < self.open_until {
                    return false;
                }
                self.state = CircuitState::HalfOpen;
                self.probes = 0;
                self.successes = 0;
            }
            match self.state {
                CircuitState::HalfOpen => {
                    if self.probes >= K {
                        return false;
                    }
                    self.probes += 1;
                    if failed {
                        self.trip(now_ms);
                    } else {
                        self.successes += 1;
                        if self.successes >= K {
                            self.state = CircuitState::Closed;
                            self.run = 0;
                            self.ring.clear();
                        }
                    }
                }
                _ => {
                    self.run = if failed { self.run + 1 } else { 0 };
                    self.ring.push_back(failed);
                    if self.ring.len() > WIN {
                        self.ring.pop_front();
                    }
                    let fails = self.ring.iter().filter(|f| **f).count();
                    if self.run >= N || (self.ring.len() >= MIN && fails * 2 >= self.ring.len()) {
                        self.trip(now_ms);
                    }
                }
            }
            true
        }

        fn trip(&mut self, now_ms: u64) {
            self.state = CircuitState::Open;
            self.open_until = now_ms + OPEN_MS;
            self.run = 0;
            self.ring.clear();
        }
    }

    proptest::proptest! {
        /// Random outcome sequences with random gaps: the breaker and the model
        /// agree on every admission and every state.
        #[test]
        fn matches_reference_model(steps in proptest::collection::vec((0u64..700, proptest::bool::weighted(0.4)), 1..200)) {
            let cfg = CircuitConfig::default()
                .consecutive_failures(Some(N))
                .failure_rate(Some(crate::RateRule { threshold: 0.5, min_calls: MIN as u32 }))
                .window(Window::Count(WIN as u32))
                .open_duration(Duration::from_millis(OPEN_MS))
                .open_backoff(1.0)
                .open_jitter(0.0)
                .half_open_probes(K)
                .half_open_successes(K);
            let base = Instant::now();
            let b = Breaker::new(Key::from_static("k"), &cfg, base);
            let mut model = Model::new();
            let mut t = 0u64;
            for (gap, failed) in steps {
                t += gap;
                let now = base + Duration::from_millis(t);
                let admitted = b.acquire(&cfg, &mut Clock::at(now), true, &none);
                let expect = model.call(t, failed);
                proptest::prop_assert_eq!(admitted.is_ok(), expect, "admission at {}ms", t);
                if let Ok(probe) = admitted {
                    let class = if failed { Classification::upstream_failure(true) } else { Classification::success() };
                    b.record(&cfg, probe, &class, None, &mut Clock::at(now), &none);
                }
                proptest::prop_assert_eq!(b.effective_state(now), model.state_at(t), "state at {}ms", t);
            }
        }
    }

    impl Model {
        fn state_at(&self, now_ms: u64) -> CircuitState {
            if self.state == CircuitState::Open && now_ms >= self.open_until {
                CircuitState::HalfOpen
            } else {
                self.state
            }
        }
    }
}
