//! Backends, their live state (load, latency, success, health) and stats.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::Request;
use llm_tower_core::LlmBody;
use serde::Serialize;
use tokio::time::Instant;

/// Whether a backend may take a request now (e.g. its breaker is closed).
pub type AvailableFn = Arc<dyn Fn(&Request<LlmBody>) -> bool + Send + Sync>;
/// How long a request would wait in a backend's limiter now (`None`: unknown).
pub type WaitFn = Arc<dyn Fn(&Request<LlmBody>) -> Option<Duration> + Send + Sync>;

/// One provider's full stack (retry, breaker, limits, timeouts, HTTP), named.
///
/// ```
/// use llm_tower_failover::Backend;
/// let b = Backend::new("openai", tower::service_fn(|_r: http::Request<llm_tower_core::LlmBody>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// }))
/// .weight(3)
/// .available_when(|_req| true);
/// assert_eq!(b.name(), "openai");
/// ```
pub struct Backend<S> {
    pub(crate) name: Arc<str>,
    pub(crate) service: S,
    pub(crate) weight: u32,
    pub(crate) available: Option<AvailableFn>,
    pub(crate) wait: Option<WaitFn>,
}

impl<S> Backend<S> {
    /// A backend called `name` served by `service`.
    pub fn new(name: impl Into<Arc<str>>, service: S) -> Self {
        Backend { name: name.into(), service, weight: 1, available: None, wait: None }
    }

    /// Its weight for weighted strategies (default 1).
    pub fn weight(mut self, w: u32) -> Self {
        self.weight = w;
        self
    }

    /// Skipped, without a call, while `f` says no (wire a breaker's
    /// `CircuitHandle::is_available` here).
    pub fn available_when(mut self, f: impl Fn(&Request<LlmBody>) -> bool + Send + Sync + 'static) -> Self {
        self.available = Some(Arc::new(f));
        self
    }

    /// How long a request would wait in its limiter (wire
    /// `RateLimitLayer::wait_for` here): a backend that would make a request
    /// wait longer than another is skipped.
    pub fn wait_estimate(
        mut self,
        f: impl Fn(&Request<LlmBody>) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.wait = Some(Arc::new(f));
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<S> fmt::Debug for Backend<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend").field("name", &self.name).field("weight", &self.weight).finish()
    }
}

/// Passive and active health checking, and slow start.
///
/// Defaults: 5 consecutive failures mark a backend down for 30 s (it is then
/// tried only when every other backend has failed); a backend that comes back
/// gets a share of its traffic growing from 10 % to 100 % over 30 s; no
/// active probe.
///
/// ```
/// use std::time::Duration;
/// let h = llm_tower_failover::HealthConfig::default().probe_every(Duration::from_secs(10));
/// assert_eq!(h.failures_to_down, 5);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Consecutive failures that mark a backend down (0: never).
    pub failures_to_down: u32,
    /// How long it stays down before it is tried again (in slow start).
    pub down_for: Duration,
    /// How long a recovered backend takes to get its full share (zero: at once).
    pub slow_start: Duration,
    /// Probe each backend this often (`GET probe_path` through its stack).
    pub probe_interval: Option<Duration>,
    /// The probe's path. Default `/v1/models`.
    pub probe_path: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            failures_to_down: 5,
            down_for: Duration::from_secs(30),
            slow_start: Duration::from_secs(30),
            probe_interval: None,
            probe_path: "/v1/models".into(),
        }
    }
}

impl HealthConfig {
    /// Probes every backend every `d`.
    pub fn probe_every(mut self, d: Duration) -> Self {
        self.probe_interval = Some(d);
        self
    }

    /// Sets the failures that mark a backend down.
    pub fn failures_to_down(mut self, n: u32) -> Self {
        self.failures_to_down = n;
        self
    }

    /// Sets how long a backend stays down.
    pub fn down_for(mut self, d: Duration) -> Self {
        self.down_for = d;
        self
    }

    /// Sets the slow-start ramp.
    pub fn slow_start(mut self, d: Duration) -> Self {
        self.slow_start = d;
        self
    }
}

/// A backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Taking its full share.
    Up,
    /// Marked down (by failures or a probe): tried last.
    Down,
    /// Back after being down: taking a growing share.
    SlowStart,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HealthAt {
    Up,
    Down { until: Instant },
    SlowStart { since: Instant },
}

/// An `f64` in an atomic (its bits), for estimates updated by many requests:
/// a lost update between two racing writers costs one sample, never a lock.
#[derive(Debug)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// The live state of one backend, shared by every request: atomics only (no
/// lock on the request path).
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) name: Arc<str>,
    /// `x-llm-backend`'s value, made once (a clone is a reference count).
    pub(crate) header: http::HeaderValue,
    pub(crate) weight: u32,
    pub(crate) in_flight: AtomicU64,
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    pub(crate) hedges: AtomicU64,
    pub(crate) hedges_cancelled: AtomicU64,
    /// Times are nanoseconds since `base` (+1: 0 means none).
    base: Instant,
    /// Peak-EWMA of the time to the response head, seconds.
    ewma: AtomicF64,
    ewma_at: AtomicU64,
    /// EWMA of outcomes (1 success, 0 failure).
    success: AtomicF64,
    /// When the last outcome was recorded (nanoseconds since `base`, +1).
    success_at: AtomicU64,
    consecutive_failures: AtomicU32,
    /// `HealthAt`, encoded: the top two bits the state, the rest its time.
    health: AtomicU64,
    /// Seen unavailable (breaker open) since it last took traffic.
    was_unavailable: AtomicBool,
}

/// How fast the latency estimate forgets (time constant).
const DECAY: Duration = Duration::from_secs(10);
/// Weight of the newest outcome in the success rate.
const SUCCESS_ALPHA: f64 = 0.1;
/// The share a backend starts its slow start with.
const MIN_SHARE: f64 = 0.1;

const TAG_SHIFT: u32 = 62;
const TIME_MASK: u64 = (1 << TAG_SHIFT) - 1;
const UP: u64 = 0;
const DOWN: u64 = 1;
const SLOW_START: u64 = 2;

impl State {
    pub(crate) fn new(name: Arc<str>, weight: u32, default_rtt: Duration) -> Self {
        let header =
            http::HeaderValue::from_str(&name).unwrap_or_else(|_| http::HeaderValue::from_static("-"));
        State {
            name,
            header,
            weight,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
            hedges_cancelled: AtomicU64::new(0),
            base: Instant::now(),
            ewma: AtomicF64::new(default_rtt.as_secs_f64()),
            ewma_at: AtomicU64::new(0),
            success: AtomicF64::new(1.0),
            success_at: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            health: AtomicU64::new(UP << TAG_SHIFT),
            was_unavailable: AtomicBool::new(false),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.base).as_nanos() as u64).min(TIME_MASK - 1) + 1
    }

    fn instant(&self, n: u64) -> Instant {
        self.base + Duration::from_nanos(n.saturating_sub(1))
    }

    fn encode(&self, h: HealthAt) -> u64 {
        match h {
            HealthAt::Up => UP << TAG_SHIFT,
            HealthAt::Down { until } => (DOWN << TAG_SHIFT) | self.nanos(until),
            HealthAt::SlowStart { since } => (SLOW_START << TAG_SHIFT) | self.nanos(since),
        }
    }

    fn decode(&self, v: u64) -> HealthAt {
        let at = self.instant(v & TIME_MASK);
        match v >> TAG_SHIFT {
            DOWN => HealthAt::Down { until: at },
            SLOW_START => HealthAt::SlowStart { since: at },
            _ => HealthAt::Up,
        }
    }

    fn health_at(&self) -> HealthAt {
        self.decode(self.health.load(Ordering::Acquire))
    }

    fn set_health(&self, h: HealthAt) {
        self.health.store(self.encode(h), Ordering::Release);
    }

    /// Moves from `from` to `to` unless another request moved it first.
    fn move_health(&self, from: HealthAt, to: HealthAt) {
        let _ = self.health.compare_exchange(
            self.encode(from),
            self.encode(to),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Health now, moving on from `Down` and `SlowStart` as time passes.
    pub(crate) fn health(&self, cfg: &HealthConfig, now: Instant) -> (Health, f64) {
        loop {
            let h = self.health_at();
            match h {
                HealthAt::Up => return (Health::Up, 1.0),
                HealthAt::Down { until } if now < until => return (Health::Down, 0.0),
                HealthAt::Down { until } => self.move_health(h, HealthAt::SlowStart { since: until }),
                HealthAt::SlowStart { since } => {
                    let ramp = cfg.slow_start.as_secs_f64();
                    let done = now.saturating_duration_since(since).as_secs_f64();
                    if ramp <= 0.0 || done >= ramp {
                        self.move_health(h, HealthAt::Up);
                    } else {
                        return (Health::SlowStart, (done / ramp).max(MIN_SHARE));
                    }
                }
            }
        }
    }

    /// Its availability (e.g. breaker) as a request saw it: coming back after
    /// being unavailable starts a slow start, as recovering from down does.
    pub(crate) fn seen_available(&self, available: bool, now: Instant) {
        if !available {
            if !self.was_unavailable.load(Ordering::Relaxed) {
                self.was_unavailable.store(true, Ordering::Relaxed);
            }
        } else if self.was_unavailable.load(Ordering::Relaxed)
            && self.was_unavailable.swap(false, Ordering::AcqRel)
        {
            self.move_health(HealthAt::Up, HealthAt::SlowStart { since: now });
        }
    }

    pub(crate) fn started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A response head arrived after `rtt`.
    pub(crate) fn observe_latency(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_secs_f64();
        let ewma = self.ewma.get();
        let next = match self.ewma_at.load(Ordering::Relaxed) {
            // Peak: a slower sample is taken at once; faster ones decay in.
            0 => rtt,
            _ if rtt > ewma => rtt,
            at => {
                let since = now.saturating_duration_since(self.instant(at)).as_secs_f64();
                let w = (-since / DECAY.as_secs_f64()).exp();
                ewma * w + rtt * (1.0 - w)
            }
        };
        self.ewma.set(next);
        self.ewma_at.store(self.nanos(now), Ordering::Relaxed);
    }

    pub(crate) fn success(&self, now: Instant) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.success.set(self.success.get() * (1.0 - SUCCESS_ALPHA) + SUCCESS_ALPHA);
        self.success_at.store(self.nanos(now), Ordering::Relaxed);
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if let h @ HealthAt::Down { .. } = self.health_at() {
            // A last-resort call succeeded: it is back.
            self.move_health(h, HealthAt::SlowStart { since: now });
        }
    }

    /// Its call lost a hedge race: a bad outcome for the success score only.
    pub(crate) fn lost_race(&self, now: Instant) {
        self.success.set(self.success.get() * (1.0 - SUCCESS_ALPHA));
        self.success_at.store(self.nanos(now), Ordering::Relaxed);
    }

    /// Returns whether this failure marked the backend down.
    pub(crate) fn failure(&self, cfg: &HealthConfig, now: Instant) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.success.set(self.success.get() * (1.0 - SUCCESS_ALPHA));
        self.success_at.store(self.nanos(now), Ordering::Relaxed);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let h = self.health_at();
        if !matches!(h, HealthAt::Down { .. }) && cfg.failures_to_down > 0 && failures >= cfg.failures_to_down
        {
            let down = HealthAt::Down { until: now + cfg.down_for };
            // Only the request that moves it says so.
            return self
                .health
                .compare_exchange(self.encode(h), self.encode(down), Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        }
        false
    }

    /// An active probe's verdict.
    pub(crate) fn probed(&self, ok: bool, cfg: &HealthConfig, now: Instant) {
        match (ok, self.health_at()) {
            (true, h @ HealthAt::Down { .. }) => self.move_health(h, HealthAt::SlowStart { since: now }),
            (false, HealthAt::Down { until }) => {
                self.set_health(HealthAt::Down { until: until.max(now + cfg.down_for) })
            }
            (false, _) => self.set_health(HealthAt::Down { until: now + cfg.down_for }),
            (true, _) => {}
        }
    }

    /// The latency estimate, seconds, once a head has been measured.
    pub(crate) fn measured_latency(&self) -> Option<f64> {
        (self.ewma_at.load(Ordering::Relaxed) != 0).then(|| self.ewma.get())
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_secs_f64(self.ewma.get().max(0.0))
    }

    pub(crate) fn success_rate(&self) -> f64 {
        self.success.get()
    }

    /// The success rate as evidence now: what was learnt fades back towards
    /// 1 with the time constant `DECAY` when no outcome arrives, so a backend
    /// that got less traffic for its errors is trusted again if it is left
    /// alone long enough to have recovered.
    pub(crate) fn success_score(&self, now: Instant) -> f64 {
        let s = self.success.get();
        match self.success_at.load(Ordering::Relaxed) {
            0 => s,
            at => {
                let idle = now.saturating_duration_since(self.instant(at)).as_secs_f64();
                1.0 - (1.0 - s) * (-idle / DECAY.as_secs_f64()).exp()
            }
        }
    }

    pub(crate) fn stats(&self, cfg: &HealthConfig, now: Instant) -> BackendStats {
        let (state, share) = self.health(cfg, now);
        BackendStats {
            name: self.name.to_string(),
            state,
            share,
            requests: self.requests.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            hedges: self.hedges.load(Ordering::Relaxed),
            hedges_cancelled: self.hedges_cancelled.load(Ordering::Relaxed),
            latency_ewma_ms: self.latency().as_secs_f64() * 1e3,
            success_rate: self.success_rate(),
        }
    }
}

/// One backend's counters and state.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BackendStats {
    /// Its name.
    pub name: String,
    /// Up, down or in slow start.
    pub state: Health,
    /// The share of its traffic it takes now (slow start), 0..=1.
    pub share: f64,
    /// Calls sent to it (hedges included).
    pub requests: u64,
    /// Calls it answered (not a retryable failure).
    pub successes: u64,
    /// Calls that failed over (retryable statuses, connection errors, timeouts).
    pub failures: u64,
    /// Calls in flight now (until their body ends).
    pub in_flight: u64,
    /// Hedged calls sent to it.
    pub hedges: u64,
    /// Its calls cancelled because the other call of a hedge answered first
    /// (the provider may still bill them: see [`Hedge`](crate::Hedge)).
    pub hedges_cancelled: u64,
    /// Peak-EWMA time to the response head, ms.
    pub latency_ewma_ms: f64,
    /// EWMA of outcomes, 0..=1.
    pub success_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_mark_down_then_slow_start_ramps_up() {
        let cfg = HealthConfig::default()
            .failures_to_down(3)
            .down_for(Duration::from_secs(30))
            .slow_start(Duration::from_secs(20));
        let s = State::new("b".into(), 1, Duration::from_millis(50));
        let now = Instant::now();
        assert!(!s.failure(&cfg, now));
        assert!(!s.failure(&cfg, now));
        assert!(s.failure(&cfg, now), "the third in a row marks it down");
        assert_eq!(s.health(&cfg, now).0, Health::Down);
        assert_eq!(s.health(&cfg, now + Duration::from_secs(29)).0, Health::Down);
        let (h, share) = s.health(&cfg, now + Duration::from_secs(30));
        assert_eq!((h, share), (Health::SlowStart, MIN_SHARE));
        let (h, share) = s.health(&cfg, now + Duration::from_secs(40));
        assert_eq!(h, Health::SlowStart);
        assert!((share - 0.5).abs() < 1e-9, "{share}");
        assert_eq!(s.health(&cfg, now + Duration::from_secs(50)).0, Health::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_between_failures_resets_the_count_and_probes_move_health() {
        let cfg = HealthConfig::default().failures_to_down(2);
        let s = State::new("b".into(), 1, Duration::from_millis(50));
        let now = Instant::now();
        s.failure(&cfg, now);
        s.success(now);
        assert!(!s.failure(&cfg, now), "not two in a row");
        s.probed(false, &cfg, now);
        assert_eq!(s.health(&cfg, now).0, Health::Down);
        s.probed(true, &cfg, now);
        assert_eq!(s.health(&cfg, now).0, Health::SlowStart);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_a_peak_ewma() {
        let s = State::new("b".into(), 1, Duration::from_millis(50));
        let t = Instant::now();
        s.observe_latency(Duration::from_millis(100), t);
        s.observe_latency(Duration::from_millis(400), t + Duration::from_millis(1));
        assert_eq!(s.latency(), Duration::from_millis(400), "a slow sample is taken at once");
        s.observe_latency(Duration::from_millis(100), t + Duration::from_secs(10));
        let ms = s.latency().as_secs_f64() * 1e3;
        // One time constant later: 400·e⁻¹ + 100·(1 − e⁻¹) ≈ 210 ms.
        assert!((ms - 210.4).abs() < 1.0, "{ms}");
    }
}
