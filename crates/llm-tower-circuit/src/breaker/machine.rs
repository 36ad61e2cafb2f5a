//! One breaker: the state machine, its admission and what each outcome does to it.

use super::*;

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
