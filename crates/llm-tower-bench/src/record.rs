//! What a run records: HDR histograms, counters, and a timeline in buckets.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::Outcome;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, at three
/// significant digits (0.1 % error).
const MAX_MICROS: u64 = 600_000_000;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig).expect("static bounds are valid")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

/// Counts and histograms of a run, or of one bucket of its timeline.
#[derive(Clone)]
pub(crate) struct Tally {
    pub latency: Histogram<u64>,
    pub ttft: Histogram<u64>,
    pub gaps: Histogram<u64>,
    pub hit_latency: Histogram<u64>,
    pub miss_latency: Histogram<u64>,
    pub requests: u64,
    pub successes: u64,
    pub failures: BTreeMap<String, u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub backends: BTreeMap<String, u64>,
}

impl Tally {
    fn new(sigfig: u8) -> Self {
        Self {
            latency: histogram(sigfig),
            ttft: histogram(sigfig),
            gaps: histogram(sigfig),
            hit_latency: histogram(sigfig),
            miss_latency: histogram(sigfig),
            requests: 0,
            successes: 0,
            failures: BTreeMap::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cache_hits: 0,
            cache_misses: 0,
            backends: BTreeMap::new(),
        }
    }

    fn add(&mut self, latency: Duration, o: &Outcome) {
        let us = micros(latency);
        self.latency.saturating_record(us);
        self.requests += 1;
        match &o.error {
            None => self.successes += 1,
            Some(e) => *self.failures.entry(e.clone()).or_default() += 1,
        }
        if let Some(t) = o.ttft {
            self.ttft.saturating_record(micros(t));
        }
        for g in &o.gaps {
            self.gaps.saturating_record(micros(*g));
        }
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        match o.cache_hit {
            Some(true) => {
                self.cache_hits += 1;
                self.hit_latency.saturating_record(us);
            }
            Some(false) => {
                self.cache_misses += 1;
                self.miss_latency.saturating_record(us);
            }
            None => {}
        }
        if let Some(b) = &o.backend {
            match self.backends.get_mut(b.as_str()) {
                Some(n) => *n += 1,
                None => {
                    self.backends.insert(b.clone(), 1);
                }
            }
        }
    }

    /// The client-side 429s: the gateway's (or provider's) rate-limit denials.
    pub fn denials(&self) -> u64 {
        self.failures.iter().filter(|(k, _)| k.starts_with("429")).map(|(_, n)| n).sum()
    }
}

/// One completed request, for scenarios that look at when things happened
/// (the breaker run): milliseconds from the run's start, the backend that
/// answered, and whether it succeeded.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub at_ms: u32,
    pub backend: Option<String>,
    pub ok: bool,
}

/// Records outcomes into a whole-run tally and a timeline of fixed buckets.
pub(crate) struct Recorder {
    start: Instant,
    bucket: Duration,
    pub total: Tally,
    pub buckets: Vec<Tally>,
    /// Kept only when asked for (bounded by the scenario's planned requests).
    pub events: Option<Vec<Event>>,
    last: Instant,
}

impl Recorder {
    pub fn new(start: Instant, bucket: Duration) -> Self {
        Self { start, bucket, total: Tally::new(3), buckets: Vec::new(), events: None, last: start }
    }

    pub fn with_events(mut self) -> Self {
        self.events = Some(Vec::new());
        self
    }

    /// Records `o`: sent at (or meant to be sent at) `from`, done at `done`.
    pub fn record(&mut self, from: Instant, done: Instant, o: &Outcome) {
        let latency = done.saturating_duration_since(from);
        self.total.add(latency, o);
        let at = done.saturating_duration_since(self.start);
        let i = (at.as_nanos() / self.bucket.as_nanos().max(1)) as usize;
        while self.buckets.len() <= i {
            self.buckets.push(Tally::new(2));
        }
        self.buckets[i].add(latency, o);
        if let Some(ev) = &mut self.events {
            ev.push(Event {
                at_ms: at.as_millis() as u32,
                backend: o.backend.clone(),
                ok: o.error.is_none(),
            });
        }
        self.last = self.last.max(done);
    }

    /// Time from the start to the last completion (at least one bucket).
    pub fn elapsed(&self) -> Duration {
        self.last.saturating_duration_since(self.start).max(Duration::from_millis(1))
    }

    /// The summary of everything recorded, over `wall` (the run's length).
    pub fn summary(&self, wall: Duration) -> Summary {
        Summary::of(&self.total, wall)
    }

    /// The timeline: one tick per bucket.
    pub fn timeline(&self) -> Vec<Tick> {
        let secs = self.bucket.as_secs_f64();
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| Tick {
                t_s: (i as f64 + 1.0) * secs,
                requests: b.requests,
                errors: b.requests - b.successes,
                throughput_rps: b.successes as f64 / secs,
                p50_ms: ms(b.latency.value_at_quantile(0.50), b.requests),
                p95_ms: ms(b.latency.value_at_quantile(0.95), b.requests),
                p99_ms: ms(b.latency.value_at_quantile(0.99), b.requests),
                cache_hits: b.cache_hits,
                cache_misses: b.cache_misses,
            })
            .collect()
    }
}

fn ms(us: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { us as f64 / 1000.0 }
}

/// One bucket of a run's timeline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tick {
    /// End of the bucket, seconds from the run's start.
    pub t_s: f64,
    /// Requests completed in the bucket.
    pub requests: u64,
    /// Of them, failed.
    pub errors: u64,
    /// Successes per second in the bucket.
    pub throughput_rps: f64,
    /// Latency percentiles of the bucket's requests, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Responses marked `x-llm-cache: hit`.
    pub cache_hits: u64,
    /// Responses marked as a cache miss.
    pub cache_misses: u64,
}

/// A latency distribution: the usual figures, in milliseconds, and the
/// histogram itself (`[value_ms, count]` for each recorded value at the
/// histogram's precision; the counts add up to `count`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Distribution {
    /// Values recorded.
    pub count: u64,
    /// Mean, ms.
    pub avg: f64,
    /// Smallest, ms.
    pub min: f64,
    /// Largest, ms.
    pub max: f64,
    /// Median, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// 99.9th percentile, ms.
    pub p999: f64,
    /// The histogram: `[value_ms, count]`.
    pub histogram: Vec<[f64; 2]>,
}

impl Distribution {
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            avg: h.mean() / 1000.0,
            min: h.min() as f64 / 1000.0,
            max: h.max() as f64 / 1000.0,
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            histogram: h
                .iter_recorded()
                .map(|v| [v.value_iterated_to() as f64 / 1000.0, v.count_at_value() as f64])
                .collect(),
        })
    }
}

/// A run's figures, as the client saw them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Requests completed (successes and failures).
    pub requests: u64,
    /// 2xx answers read to the end without an error.
    pub successes: u64,
    /// Failures by status and error code (`"503 circuit_open"`) or by
    /// transport error (`"transport: connection reset"`, `"timeout"`).
    pub failures: BTreeMap<String, u64>,
    /// `successes / requests`.
    pub success_rate: f64,
    /// The run's length, seconds (warm-up excluded).
    pub elapsed_s: f64,
    /// Successes per second.
    pub throughput_rps: f64,
    /// Latency of every request (to the end of its body), ms.
    pub latency: Option<Distribution>,
    /// Time to the first content token (streams), ms.
    pub ttft: Option<Distribution>,
    /// Gaps between content tokens (streams), ms.
    pub inter_token: Option<Distribution>,
    /// Latency of cache hits, ms.
    pub cache_hit_latency: Option<Distribution>,
    /// Latency of cache misses, ms.
    pub cache_miss_latency: Option<Distribution>,
    /// Prompt tokens in the answers' usage.
    pub prompt_tokens: u64,
    /// Completion tokens in the answers' usage.
    pub completion_tokens: u64,
    /// Completion tokens per second.
    pub tokens_per_s: f64,
    /// Answers marked `x-llm-cache: hit`.
    pub cache_hits: u64,
    /// Answers marked as a miss.
    pub cache_misses: u64,
    /// `hits / (hits + misses)`, of the answers that carried the header.
    pub cache_hit_ratio: f64,
    /// 429 answers the client got.
    pub rate_limited: u64,
    /// Answers by the backend that served them (`x-llm-backend`).
    pub backends: BTreeMap<String, u64>,
}

impl Summary {
    pub(crate) fn of(t: &Tally, wall: Duration) -> Self {
        let secs = wall.as_secs_f64().max(1e-9);
        let looked = t.cache_hits + t.cache_misses;
        Self {
            requests: t.requests,
            successes: t.successes,
            failures: t.failures.clone(),
            success_rate: if t.requests == 0 { 0.0 } else { t.successes as f64 / t.requests as f64 },
            elapsed_s: secs,
            throughput_rps: t.successes as f64 / secs,
            latency: Distribution::of(&t.latency),
            ttft: Distribution::of(&t.ttft),
            inter_token: Distribution::of(&t.gaps),
            cache_hit_latency: Distribution::of(&t.hit_latency),
            cache_miss_latency: Distribution::of(&t.miss_latency),
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            tokens_per_s: t.completion_tokens as f64 / secs,
            cache_hits: t.cache_hits,
            cache_misses: t.cache_misses,
            cache_hit_ratio: if looked == 0 { 0.0 } else { t.cache_hits as f64 / looked as f64 },
            rate_limited: t.denials(),
            backends: t.backends.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> (Duration, Outcome) {
        (Duration::from_millis(ms), Outcome::default())
    }

    #[test]
    fn the_histogram_holds_every_request_and_its_percentiles_are_ordered() {
        let start = Instant::now();
        let mut r = Recorder::new(start, Duration::from_secs(1));
        for i in 1..=1000u64 {
            let (d, o) = ok(i);
            r.record(start, start + d, &o);
        }
        let failed = Outcome { error: Some("503 circuit_open".into()), ..Outcome::default() };
        r.record(start, start + Duration::from_millis(1), &failed);
        let s = r.summary(Duration::from_secs(2));
        let l = s.latency.unwrap();
        let counted: f64 = l.histogram.iter().map(|[_, n]| n).sum();
        assert_eq!((l.count, counted as u64, s.requests), (1001, 1001, 1001));
        assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max);
        assert!((l.p50 - 500.0).abs() < 1.0, "{}", l.p50);
        assert_eq!(s.failures["503 circuit_open"], 1);
        assert_eq!(s.successes, 1000);
        // 1000 successes over 2 s; the timeline's buckets split them by completion time.
        assert_eq!(s.throughput_rps, 500.0);
        let t = r.timeline();
        assert_eq!(t.iter().map(|t| t.requests).sum::<u64>(), 1001);
        assert_eq!(t[0].requests, 1000, "1..999 ms and the failure land in the first second");
    }
}
