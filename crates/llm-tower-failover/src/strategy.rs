//! Routing strategies: the order in which a request tries its backends.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What a strategy knows of one available backend of a route.
///
/// ```
/// let c = llm_tower_failover::Candidate::new(0, 1.0);
/// assert_eq!(c.position, 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Candidate {
    /// Position in the route's configured order (0 = first).
    pub position: usize,
    /// Weight (configured, times the slow-start share).
    pub weight: f64,
    /// Requests in flight on the backend.
    pub in_flight: u64,
    /// Peak-EWMA time to the response head.
    pub latency: Duration,
    /// Recent success rate, 0..=1 (EWMA of outcomes).
    pub success_rate: f64,
}

impl Candidate {
    /// A candidate at `position` with `weight`, idle, never measured.
    pub fn new(position: usize, weight: f64) -> Self {
        Candidate { position, weight, in_flight: 0, latency: Duration::ZERO, success_rate: 1.0 }
    }

    /// With requests in flight.
    pub fn in_flight(mut self, n: u64) -> Self {
        self.in_flight = n;
        self
    }

    /// With a latency estimate.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// With a success rate.
    pub fn success_rate(mut self, r: f64) -> Self {
        self.success_rate = r;
        self
    }

    /// The peak-EWMA cost: latency scaled by the load it would join.
    pub fn cost(&self) -> f64 {
        self.latency.as_secs_f64() * (self.in_flight + 1) as f64
    }
}

/// Orders a route's available backends for one request; the request tries
/// them in that order (failing over down the list). `random` gives uniform
/// numbers in `0..1`, seeded by the failover.
///
/// ```
/// use llm_tower_failover::{Candidate, RouteStrategy};
/// /// Cheapest first: the backend configured last is the cheapest.
/// struct Cheapest;
/// impl RouteStrategy for Cheapest {
///     fn order(&self, c: &mut Vec<Candidate>, _random: &mut dyn FnMut() -> f64) {
///         c.sort_by_key(|c| std::cmp::Reverse(c.position));
///     }
/// }
/// let mut c = vec![Candidate::new(0, 1.0), Candidate::new(1, 1.0)];
/// Cheapest.order(&mut c, &mut || 0.5);
/// assert_eq!(c[0].position, 1);
/// ```
pub trait RouteStrategy: Send + Sync + 'static {
    /// Reorders `candidates` (all available) into the order to try them.
    fn order(&self, candidates: &mut Vec<Candidate>, random: &mut dyn FnMut() -> f64);
}

/// The configured order: a fallback chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct Priority;

impl RouteStrategy for Priority {
    fn order(&self, c: &mut Vec<Candidate>, _: &mut dyn FnMut() -> f64) {
        c.sort_by_key(|c| c.position);
    }
}

/// Weighted random without replacement: the first pick is proportional to
/// weight, the next among the rest, and so on.
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightedRandom;

impl RouteStrategy for WeightedRandom {
    fn order(&self, c: &mut Vec<Candidate>, random: &mut dyn FnMut() -> f64) {
        for i in 0..c.len() {
            let total: f64 = c[i..].iter().map(|c| c.weight.max(0.0)).sum();
            if total <= 0.0 {
                break;
            }
            let mut x = random() * total;
            let mut pick = c.len() - 1;
            for (j, cand) in c.iter().enumerate().skip(i) {
                x -= cand.weight.max(0.0);
                if x < 0.0 {
                    pick = j;
                    break;
                }
            }
            c.swap(i, pick);
        }
    }
}

/// Each request starts one further along the route (then the rest in order).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RouteStrategy for RoundRobin {
    fn order(&self, c: &mut Vec<Candidate>, _: &mut dyn FnMut() -> f64) {
        c.sort_by_key(|c| c.position);
        if !c.is_empty() {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % c.len();
            c.rotate_left(n);
        }
    }
}

/// Fewest requests in flight first (ties: configured order).
#[derive(Clone, Copy, Debug, Default)]
pub struct LeastInFlight;

impl RouteStrategy for LeastInFlight {
    fn order(&self, c: &mut Vec<Candidate>, _: &mut dyn FnMut() -> f64) {
        c.sort_by_key(|c| (c.in_flight, c.position));
    }
}

/// Highest recent success rate first (ties within 1 %: lower latency).
#[derive(Clone, Copy, Debug, Default)]
pub struct SuccessRate;

impl RouteStrategy for SuccessRate {
    fn order(&self, c: &mut Vec<Candidate>, _: &mut dyn FnMut() -> f64) {
        c.sort_by(|a, b| {
            let (ra, rb) = ((a.success_rate * 100.0).round(), (b.success_rate * 100.0).round());
            rb.total_cmp(&ra).then(a.latency.cmp(&b.latency)).then(a.position.cmp(&b.position))
        });
    }
}

/// Power of two choices over peak-EWMA cost (latency × (in flight + 1)), as
/// in tower's balancer: two backends drawn at random, the cheaper first; the
/// rest follow by cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeakEwma;

impl RouteStrategy for PeakEwma {
    fn order(&self, c: &mut Vec<Candidate>, random: &mut dyn FnMut() -> f64) {
        c.sort_by(|a, b| a.cost().total_cmp(&b.cost()).then(a.position.cmp(&b.position)));
        if c.len() >= 2 {
            let n = c.len();
            let i = ((random() * n as f64) as usize).min(n - 1);
            let mut j = ((random() * (n - 1) as f64) as usize).min(n - 2);
            if j >= i {
                j += 1;
            }
            let best = if c[i].cost() <= c[j].cost() { i } else { j };
            let first = c.remove(best);
            c.insert(0, first);
        }
    }
}

/// The built-in strategies by name (for configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteStrategyKind {
    /// [`Priority`].
    Priority,
    /// [`WeightedRandom`].
    WeightedRandom,
    /// [`RoundRobin`].
    RoundRobin,
    /// [`LeastInFlight`].
    LeastInFlight,
    /// [`SuccessRate`].
    SuccessRate,
    /// [`PeakEwma`].
    PeakEwma,
}

impl RouteStrategyKind {
    /// The strategy.
    ///
    /// ```
    /// let s = llm_tower_failover::RouteStrategyKind::Priority.build();
    /// # let _ = s;
    /// ```
    pub fn build(self) -> std::sync::Arc<dyn RouteStrategy> {
        match self {
            RouteStrategyKind::Priority => std::sync::Arc::new(Priority),
            RouteStrategyKind::WeightedRandom => std::sync::Arc::new(WeightedRandom),
            RouteStrategyKind::RoundRobin => std::sync::Arc::new(RoundRobin::default()),
            RouteStrategyKind::LeastInFlight => std::sync::Arc::new(LeastInFlight),
            RouteStrategyKind::SuccessRate => std::sync::Arc::new(SuccessRate),
            RouteStrategyKind::PeakEwma => std::sync::Arc::new(PeakEwma),
        }
    }
}

impl fmt::Display for RouteStrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteStrategyKind::Priority => "priority",
            RouteStrategyKind::WeightedRandom => "weighted_random",
            RouteStrategyKind::RoundRobin => "round_robin",
            RouteStrategyKind::LeastInFlight => "least_in_flight",
            RouteStrategyKind::SuccessRate => "success_rate",
            RouteStrategyKind::PeakEwma => "peak_ewma",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(c: &[Candidate]) -> Vec<usize> {
        c.iter().map(|c| c.position).collect()
    }

    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut x = seed;
        move || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn priority_round_robin_and_least_in_flight() {
        let base = vec![Candidate::new(2, 1.0), Candidate::new(0, 1.0).in_flight(5), Candidate::new(1, 1.0)];
        let mut c = base.clone();
        Priority.order(&mut c, &mut rng(1));
        assert_eq!(positions(&c), [0, 1, 2]);
        let rr = RoundRobin::default();
        let firsts: Vec<usize> = (0..6)
            .map(|_| {
                let mut c = base.clone();
                rr.order(&mut c, &mut rng(1));
                c[0].position
            })
            .collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        let mut c = base.clone();
        LeastInFlight.order(&mut c, &mut rng(1));
        assert_eq!(positions(&c), [1, 2, 0]);
    }

    #[test]
    fn weighted_random_follows_the_weights() {
        let mut r = rng(7);
        let mut first = [0u32; 3];
        for _ in 0..30_000 {
            let mut c = vec![Candidate::new(0, 1.0), Candidate::new(1, 3.0), Candidate::new(2, 0.0)];
            WeightedRandom.order(&mut c, &mut r);
            first[c[0].position] += 1;
            assert_eq!(c.len(), 3, "every backend stays in the list");
        }
        let share = f64::from(first[1]) / 30_000.0;
        assert!((share - 0.75).abs() < 0.02, "{first:?}");
        assert_eq!(first[2], 0, "weight 0 is never first");
    }

    #[test]
    fn success_rate_then_latency() {
        let mut c = vec![
            Candidate::new(0, 1.0).success_rate(0.70),
            Candidate::new(1, 1.0).success_rate(0.99).latency(Duration::from_millis(300)),
            Candidate::new(2, 1.0).success_rate(0.991).latency(Duration::from_millis(100)),
        ];
        SuccessRate.order(&mut c, &mut rng(1));
        assert_eq!(positions(&c), [2, 1, 0]);
    }

    #[test]
    fn p2c_never_picks_the_costliest_of_its_two_and_spreads_load() {
        let ms = Duration::from_millis;
        let mut r = rng(3);
        let mut first = [0u32; 3];
        for _ in 0..3_000 {
            let mut c = vec![
                Candidate::new(0, 1.0).latency(ms(100)),
                Candidate::new(1, 1.0).latency(ms(100)).in_flight(1),
                Candidate::new(2, 1.0).latency(ms(900)),
            ];
            PeakEwma.order(&mut c, &mut r);
            first[c[0].position] += 1;
            assert_ne!(c[0].position, 2, "the slowest loses to whichever it is drawn against");
        }
        assert!(first[0] > first[1] && first[1] > 0, "{first:?}");
    }
}
