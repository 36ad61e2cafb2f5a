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
        assert!(b.acquire(&cfg, &mut Clock::at(now), true, &none).unwrap(), "a probe after the open period");
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
