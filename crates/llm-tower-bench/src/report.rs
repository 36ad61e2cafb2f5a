//! What a bench run reports, as JSON (`--json`) and as tables on stdout.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::observe::GatewayFigures;
use crate::record::{Distribution, Summary, Tick};

/// Everything one invocation measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// `"llm-tower-bench"`.
    pub tool: String,
    /// The bench's version.
    pub version: String,
    /// The seed of every prompt set and fault plan.
    pub seed: u64,
    /// What was measured.
    pub target: String,
    /// The runs, in order.
    pub runs: Vec<Run>,
}

/// One measured run: a scenario, or one step of a rate list or stress ramp.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// `load`, `rate`, `stress`, `breaker` or `cache`.
    pub scenario: String,
    /// Which step: `"c=16"`, `"200 qps"`, ...
    pub label: String,
    /// The parameters the run used.
    pub params: serde_json::Value,
    /// What the client saw.
    pub summary: Summary,
    /// What the gateway's `/stats` (and the mocks' counters) saw over the run;
    /// `None` when the target has no readable `/stats`.
    pub gateway: Option<GatewayFigures>,
    /// Per-bucket figures over time.
    pub timeline: Vec<Tick>,
    /// The same load sent to the upstream directly (`--baseline`).
    pub baseline: Option<Baseline>,
    /// The breaker scenario's figures.
    pub breaker: Option<BreakerFigures>,
    /// The stress scenario's verdict for this step.
    pub knee: Option<Knee>,
}

/// The upstream measured directly with the same load, and what the gateway adds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    /// The upstream's base URL.
    pub url: String,
    /// What the client saw from it.
    pub summary: Summary,
    /// Gateway p50 minus upstream p50, ms.
    pub added_p50_ms: f64,
    /// Gateway p99 minus upstream p99, ms.
    pub added_p99_ms: f64,
    /// Gateway p99 over upstream p99.
    pub p99_ratio: f64,
    /// Gateway throughput over upstream throughput.
    pub throughput_ratio: f64,
}

impl Baseline {
    /// Compares `gateway` with `upstream` (both must have latencies).
    pub fn of(url: &str, gateway: &Summary, upstream: Summary) -> Self {
        let (g, u) = (gateway.latency.as_ref(), upstream.latency.as_ref());
        let f = |pick: fn(&Distribution) -> f64| g.zip(u).map(|(g, u)| (pick(g), pick(u)));
        let (g50, u50) = f(|d| d.p50).unwrap_or_default();
        let (g99, u99) = f(|d| d.p99).unwrap_or_default();
        Self {
            url: url.to_owned(),
            added_p50_ms: g50 - u50,
            added_p99_ms: g99 - u99,
            p99_ratio: if u99 > 0.0 { g99 / u99 } else { 0.0 },
            throughput_ratio: if upstream.throughput_rps > 0.0 {
                gateway.throughput_rps / upstream.throughput_rps
            } else {
                0.0
            },
            summary: upstream,
        }
    }
}

/// A breaker state change seen in `/stats`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    /// Seconds from the run's start (polled every 20 ms: up to 20 ms late).
    pub t_s: f64,
    /// The provider.
    pub provider: String,
    /// The breaker's key (`*` for one per provider).
    pub key: String,
    /// State before.
    pub from: String,
    /// State after.
    pub to: String,
}

/// The breaker scenario: a healthy phase, an outage of one provider, a recovery.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BreakerFigures {
    /// The provider made to fail.
    pub failing: String,
    /// When the outage started and ended, seconds from the run's start.
    pub outage_s: [f64; 2],
    /// From the outage's start to the failing provider's breaker opening, ms.
    pub time_to_open_ms: Option<f64>,
    /// LLM requests the failing provider received during the outage.
    pub calls_to_failing_during_outage: Option<u64>,
    /// Of them, after its breaker opened (probes).
    pub calls_to_failing_while_open: Option<u64>,
    /// From the outage's end to the breaker closing again, ms.
    pub time_to_close_ms: Option<f64>,
    /// Of the successful answers during the outage, the share another backend served.
    pub failover_share: f64,
    /// Requests that failed during the outage.
    pub failed_during_outage: u64,
    /// Every state change, in order.
    pub transitions: Vec<Transition>,
}

/// A stress step's verdict.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Knee {
    /// The rate offered, requests per second.
    pub offered_qps: f64,
    /// Whether the step stayed within the thresholds.
    pub held: bool,
    /// Why not, when it did not.
    pub reason: Option<String>,
}

fn dist_row(out: &mut String, name: &str, d: &Option<Distribution>) {
    if let Some(d) = d {
        let _ = writeln!(
            out,
            "  {name:<14} avg {:>8.2}  min {:>8.2}  p50 {:>8.2}  p90 {:>8.2}  p95 {:>8.2}  p99 {:>8.2}  p99.9 {:>8.2}  max {:>8.2}  ms",
            d.avg, d.min, d.p50, d.p90, d.p95, d.p99, d.p999, d.max
        );
    }
}

impl Run {
    /// The run as a block of text for stdout.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let _ = writeln!(out, "[{}] {}", self.scenario, self.label);
        let _ = writeln!(
            out,
            "  requests {}  successes {}  success rate {:.2} %  throughput {:.1} req/s over {:.1} s",
            s.requests,
            s.successes,
            s.success_rate * 100.0,
            s.throughput_rps,
            s.elapsed_s
        );
        dist_row(&mut out, "latency", &s.latency);
        dist_row(&mut out, "ttft", &s.ttft);
        dist_row(&mut out, "inter-token", &s.inter_token);
        dist_row(&mut out, "cache hit", &s.cache_hit_latency);
        dist_row(&mut out, "cache miss", &s.cache_miss_latency);
        let _ = writeln!(
            out,
            "  tokens {} in / {} out ({:.0} out/s)  cache hit rate {:.1} % ({} of {})  429s {}",
            s.prompt_tokens,
            s.completion_tokens,
            s.tokens_per_s,
            s.cache_hit_ratio * 100.0,
            s.cache_hits,
            s.cache_hits + s.cache_misses,
            s.rate_limited
        );
        if !s.failures.is_empty() {
            let f: Vec<String> = s.failures.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(out, "  failures {}", f.join(", "));
        }
        if !s.backends.is_empty() {
            let b: Vec<String> = s.backends.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(out, "  served by {}", b.join(", "));
        }
        if let Some(g) = &self.gateway {
            let upstream = match (g.upstream_calls, g.upstream_calls_per_request) {
                (Some(n), Some(r)) => format!("  upstream calls {n} ({r:.2} per request)"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  gateway: rate-limit denials {}  breaker transitions {}  cache hits {} misses {}  tokens saved {}  cost saved ${:.6}{upstream}",
                g.rate_limit_denials,
                g.breaker_transitions,
                g.cache_hits,
                g.cache_misses,
                g.tokens_saved,
                g.cost_saved_usd
            );
        }
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                out,
                "  baseline {}: p50 +{:.2} ms, p99 +{:.2} ms (x{:.2}), throughput x{:.2}",
                b.url, b.added_p50_ms, b.added_p99_ms, b.p99_ratio, b.throughput_ratio
            );
            dist_row(&mut out, "upstream", &b.summary.latency);
        }
        if let Some(b) = &self.breaker {
            let opt = |v: Option<f64>| v.map_or("never".to_owned(), |v| format!("{v:.0} ms"));
            let calls = |v: Option<u64>| v.map_or("unknown".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "  breaker: {} failed {:.1}-{:.1} s; opened after {}, calls to it during the outage {} (while open {}), closed {} after recovery; failover served {:.1} %, {} failed",
                b.failing,
                b.outage_s[0],
                b.outage_s[1],
                opt(b.time_to_open_ms),
                calls(b.calls_to_failing_during_outage),
                calls(b.calls_to_failing_while_open),
                opt(b.time_to_close_ms),
                b.failover_share * 100.0,
                b.failed_during_outage
            );
            for t in &b.transitions {
                let _ =
                    writeln!(out, "    {:>7.3} s  {} [{}] {} -> {}", t.t_s, t.provider, t.key, t.from, t.to);
            }
        }
        if let Some(k) = &self.knee {
            let verdict = match &k.reason {
                None => "held".to_owned(),
                Some(r) => format!("crossed: {r}"),
            };
            let _ = writeln!(out, "  offered {:.0} qps: {verdict}", k.offered_qps);
        }
        out
    }
}

impl Report {
    /// The highest offered rate that held in the stress ramp, if there was one.
    pub fn knee_qps(&self) -> Option<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.knee.as_ref())
            .filter(|k| k.held)
            .map(|k| k.offered_qps)
            .reduce(f64::max)
    }

    /// Every run's table, then the knee.
    pub fn table(&self) -> String {
        let mut out =
            format!("llm-tower-bench {} against {} (seed {})\n\n", self.version, self.target, self.seed);
        for r in &self.runs {
            out.push_str(&r.table());
            out.push('\n');
        }
        if self.runs.iter().any(|r| r.knee.is_some()) {
            let crossed = self.runs.iter().filter_map(|r| r.knee.as_ref()).any(|k| !k.held);
            let _ = match (self.knee_qps(), crossed) {
                (Some(q), true) => {
                    writeln!(out, "stress knee: {q:.0} qps held, the next step crossed a threshold")
                }
                (Some(q), false) => {
                    writeln!(out, "stress knee: every step held, up to {q:.0} qps (ramp further)")
                }
                (None, _) => writeln!(out, "stress knee: not even the first step held"),
            };
        }
        out
    }
}
