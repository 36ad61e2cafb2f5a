//! `--compare A.json B.json`: two reports side by side, run by run, with
//! the ratio B / A of each figure.

use std::fmt::Write as _;

use crate::report::{Report, Run};

type Figure = (&'static str, fn(&Run) -> Option<f64>);

const FIGURES: &[Figure] = &[
    ("throughput req/s", |r| Some(r.summary.throughput_rps)),
    ("success rate %", |r| Some(r.summary.success_rate * 100.0)),
    ("latency avg ms", |r| r.summary.latency.as_ref().map(|d| d.avg)),
    ("latency p50 ms", |r| r.summary.latency.as_ref().map(|d| d.p50)),
    ("latency p95 ms", |r| r.summary.latency.as_ref().map(|d| d.p95)),
    ("latency p99 ms", |r| r.summary.latency.as_ref().map(|d| d.p99)),
    ("latency max ms", |r| r.summary.latency.as_ref().map(|d| d.max)),
    ("ttft p50 ms", |r| r.summary.ttft.as_ref().map(|d| d.p50)),
    ("cache hit rate %", |r| Some(r.summary.cache_hit_ratio * 100.0)),
    ("429s", |r| Some(r.summary.rate_limited as f64)),
    ("upstream calls/request", |r| r.gateway.as_ref().and_then(|g| g.upstream_calls_per_request)),
    ("breaker transitions", |r| r.gateway.as_ref().map(|g| g.breaker_transitions as f64)),
    ("added p99 ms (baseline)", |r| r.baseline.as_ref().map(|b| b.added_p99_ms)),
];

/// The comparison of `a` (before) and `b` (after) as a table; runs are
/// matched by scenario and label, and runs found in only one are listed.
///
/// ```
/// let a: llm_tower_bench::Report = serde_json::from_str(include_str!("../tests/fixtures/report-a.json")).unwrap();
/// let mut b = a.clone();
/// b.runs[0].summary.throughput_rps *= 2.0;
/// let table = llm_tower_bench::compare(&a, &b);
/// assert!(table.contains("x2.00"), "{table}");
/// ```
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = format!("A: {} (seed {})\nB: {} (seed {})\n", a.target, a.seed, b.target, b.seed);
    for ra in &a.runs {
        let Some(rb) = b.runs.iter().find(|r| r.scenario == ra.scenario && r.label == ra.label) else {
            let _ = writeln!(out, "\n[{}] {}: only in A", ra.scenario, ra.label);
            continue;
        };
        let _ = writeln!(
            out,
            "\n[{}] {}\n  {:<24} {:>12} {:>12} {:>9}",
            ra.scenario, ra.label, "", "A", "B", "B/A"
        );
        for (name, get) in FIGURES {
            let (x, y) = (get(ra), get(rb));
            if x.is_none() && y.is_none() {
                continue;
            }
            let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
            let ratio = match (x, y) {
                (Some(x), Some(y)) if x != 0.0 => format!("x{:.2}", y / x),
                _ => "-".to_owned(),
            };
            let _ = writeln!(out, "  {name:<24} {:>12} {:>12} {ratio:>9}", show(x), show(y));
        }
    }
    for rb in
        b.runs.iter().filter(|rb| !a.runs.iter().any(|r| r.scenario == rb.scenario && r.label == rb.label))
    {
        let _ = writeln!(out, "\n[{}] {}: only in B", rb.scenario, rb.label);
    }
    out
}
