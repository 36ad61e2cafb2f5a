//! Deterministic text, token estimates and provider-style limits.

use std::time::Duration;

use tokio::time::Instant;

/// splitmix64: small, fast, good enough for mock output.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// FNV-1a, to derive a per-request seed from its content.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

const WORDS: &[&str] = &[
    "the", "model", "answers", "with", "careful", "tokens", "while", "latency", "stays", "low", "and",
    "requests", "flow", "through", "layers", "of", "tower", "retry", "breaker", "cache", "limits", "every",
    "call", "returns", "usage", "so", "costs", "are", "known", "before", "budgets", "break",
];

/// `n` words (one token each), deterministic from `seed`.
pub fn tokens(seed: u64, n: u32) -> Vec<&'static str> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]).collect()
}

/// A provider-like prompt token estimate: ~4 characters a token, plus framing.
pub fn prompt_tokens(text_chars: usize, messages: usize) -> u64 {
    text_chars.div_ceil(4) as u64 + 4 * messages as u64 + 3
}

/// Formats a duration the way OpenAI's `x-ratelimit-reset-*` headers do.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s) = (ms / 3_600_000, (ms / 60_000) % 60, (ms % 60_000) as f64 / 1000.0);
    let secs = format!("{s}s");
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// A continuously refilled bucket of `per_minute` units.
#[derive(Debug)]
pub struct Bucket {
    capacity: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(per_minute: u32) -> Self {
        Bucket { capacity: f64::from(per_minute), level: f64::from(per_minute), at: Instant::now() }
    }

    fn refill(&mut self, now: Instant) {
        let rate = self.capacity / 60.0;
        self.level =
            (self.level + now.saturating_duration_since(self.at).as_secs_f64() * rate).min(self.capacity);
        self.at = now;
    }

    /// Time until `cost` units are available (zero if they are now).
    pub fn wait_for(&mut self, cost: f64, now: Instant) -> Duration {
        self.refill(now);
        if self.level >= cost {
            return Duration::ZERO;
        }
        let rate = self.capacity / 60.0;
        Duration::from_secs_f64(((cost.min(self.capacity) - self.level) / rate).max(0.001))
    }

    pub fn take(&mut self, cost: f64) {
        self.level -= cost;
    }

    pub fn remaining(&self) -> u64 {
        self.level.max(0.0) as u64
    }

    pub fn limit(&self) -> u64 {
        self.capacity as u64
    }

    /// Time until the bucket is full again.
    pub fn reset_in(&self) -> Duration {
        let rate = self.capacity / 60.0;
        Duration::from_secs_f64(((self.capacity - self.level) / rate).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn text_is_deterministic() {
        assert_eq!(tokens(7, 5), tokens(7, 5));
        assert_ne!(tokens(7, 5), tokens(8, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_continuously() {
        let mut b = Bucket::new(60);
        let now = Instant::now();
        assert_eq!(b.wait_for(60.0, now), Duration::ZERO);
        b.take(60.0);
        let wait = b.wait_for(1.0, now);
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.wait_for(1.0, Instant::now()), Duration::ZERO);
    }
}
