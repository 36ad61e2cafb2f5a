//! Seeded prompt sets: every request's prompt is a pure function of the
//! seed and the request's index, so a run can be repeated exactly.

use serde::{Deserialize, Serialize};

/// How repeated prompts are drawn from the ones already sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Popularity {
    /// Zipf (s = 1): the k-th prompt ever sent is repeated in proportion to 1/k,
    /// as real traffic repeats a few prompts often and most rarely.
    Zipf,
    /// Every earlier prompt equally likely.
    Uniform,
}

/// Which prompt each request sends.
///
/// ```
/// use llm_tower_bench::{Popularity, Workload};
/// let unique = Workload::unique(7);
/// assert_ne!(unique.prompt(0), unique.prompt(1));
///
/// // Half the requests repeat an earlier prompt: about half of 10,000 are new.
/// let w = Workload::repeating(7, 0.5, Popularity::Zipf);
/// let distinct: std::collections::HashSet<String> = (0..10_000).map(|i| w.prompt(i)).collect();
/// assert!((4_700..5_300).contains(&distinct.len()), "{}", distinct.len());
/// // The same seed gives the same prompts.
/// assert_eq!(w.prompt(1234), Workload::repeating(7, 0.5, Popularity::Zipf).prompt(1234));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    seed: u64,
    repeat: f64,
    popularity: Popularity,
    tag: &'static str,
}

/// SplitMix64: a good 64-bit mix of a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

const WORDS: [&str; 16] = [
    "latency", "budget", "tokens", "gateway", "outage", "retry", "cache", "stream", "provider", "limit",
    "breaker", "failover", "tenant", "quota", "window", "backoff",
];

impl Workload {
    /// Every request a new prompt (nothing a cache can answer).
    pub fn unique(seed: u64) -> Self {
        Self { seed, repeat: 0.0, popularity: Popularity::Uniform, tag: "" }
    }

    /// Each request repeats an earlier prompt with probability `repeat`
    /// (clamped to 0..=0.99), chosen by `popularity`.
    pub fn repeating(seed: u64, repeat: f64, popularity: Popularity) -> Self {
        Self { seed, repeat: repeat.clamp(0.0, 0.99), popularity, tag: "" }
    }

    /// The same workload with prompts of their own (the warm-up's, so it
    /// fills no cache the measured run then hits).
    pub fn warmup(&self) -> Self {
        Self { tag: "warm-up ", ..self.clone() }
    }

    /// The fraction of requests that repeat an earlier prompt.
    pub fn repeat_ratio(&self) -> f64 {
        self.repeat
    }

    /// Whether request `i` sends a prompt of its own (request 0 always does).
    fn is_new(&self, i: u64) -> bool {
        i == 0 || unit(mix(self.seed ^ mix(i))) >= self.repeat
    }

    /// Which request first sent the prompt request `i` sends (itself when new).
    ///
    /// A repeat draws a rank among the distinct prompts sent so far (zipf or
    /// uniform over ranks, not over requests, so popular prompts do not get
    /// more popular by being repeated), maps the rank to the request index
    /// where that many new prompts are expected, and walks to the nearest new
    /// request: a pure function of `i`, in about `1 / (1 - repeat)` steps.
    fn origin(&self, i: u64) -> u64 {
        if self.is_new(i) {
            return i;
        }
        let fresh = 1.0 - self.repeat;
        let distinct = (fresh * i as f64).max(1.0);
        let u = unit(mix(mix(self.seed ^ mix(i))));
        let rank = match self.popularity {
            // P(rank k) ∝ 1/k over 1..=distinct: k = floor(distinct^u), the continuous inverse.
            Popularity::Zipf => distinct.powf(u).floor().max(1.0) - 1.0,
            Popularity::Uniform => (u * distinct).floor(),
        };
        let start = ((rank / fresh) as u64).min(i - 1);
        (start..i)
            .find(|&j| self.is_new(j))
            .or_else(|| (0..start).rev().find(|&j| self.is_new(j)))
            .unwrap_or(0)
    }

    /// The prompt of request `i`.
    pub fn prompt(&self, i: u64) -> String {
        let o = self.origin(i);
        let h = mix(self.seed.rotate_left(17) ^ o);
        let w = |k: u32| WORDS[((h >> (k * 4)) & 15) as usize];
        format!(
            "{}request {o} of seed {}: explain {} {} and {} in one line.",
            self.tag,
            self.seed,
            w(0),
            w(1),
            w(2)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_repeats_the_first_prompts_most_uniform_spreads_them() {
        let count_first = |p: Popularity| {
            let w = Workload::repeating(1, 0.9, p);
            let first = w.prompt(0);
            (1..20_000).filter(|&i| w.prompt(i) == first).count()
        };
        let (zipf, uniform) = (count_first(Popularity::Zipf), count_first(Popularity::Uniform));
        assert!(zipf > 10 * uniform.max(1), "zipf {zipf}, uniform {uniform}");
        let w = Workload::unique(3);
        assert!(w.warmup().prompt(5).starts_with("warm-up "));
        assert_ne!(w.warmup().prompt(5), w.prompt(5));
    }
}
