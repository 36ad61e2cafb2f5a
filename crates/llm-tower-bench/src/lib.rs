//! Load, stress, circuit-breaker and cache benchmarks for LLM gateways: the
//! library behind the `llm-tower-bench` binary.
//!
//! A [`Target`] is any OpenAI-compatible base URL, or the llm-tower gateway
//! started in-process on a config ([`Target::embedded`], with its mock
//! providers), so every scenario runs offline. A [`Bench`] runs the
//! scenarios against it:
//!
//! - [`Bench::load`]: a closed loop of N clients;
//! - [`Bench::rate`]: an open loop at fixed rates, latency measured from each
//!   request's intended send time (corrected for coordinated omission);
//! - [`Bench::stress`]: a ramp of rates until errors or latency cross a
//!   threshold (the knee);
//! - [`Bench::breaker`]: a scripted outage of one mock provider, with the
//!   breaker's transitions, calls that still reached it, and failover;
//! - [`Bench::cache`]: a workload with repeated prompts, hit vs miss latency;
//! - [`Bench::suite`]: all of them.
//!
//! Each returns [`Run`]s: client-side figures in HDR histograms
//! ([`Summary`]), the gateway's own counters from `/stats`
//! ([`GatewayFigures`]) and a timeline. A [`Report`] collects them as JSON,
//! [`plot`] draws them, [`compare`] sets two side by side.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use llm_tower_bench::{Ask, Bench, Options, RateParams, Report, Target};
//! let target = Target::embedded(None, 1)?;
//! let bench = Bench::new(&target, Ask::new("bench"), None, None, Options::default())?;
//! let runs = bench.rate(&RateParams { qps: vec![100.0], duration: 5.0, max_in_flight: 1024 }).await;
//! let report = Report::new(1, &target, runs);
//! println!("{}", report.table());
//! llm_tower_bench::plot(&report, std::path::Path::new("bench-plots"))?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod breaker;
mod client;
mod compare;
mod drive;
mod observe;
mod plot;
mod progress;
mod record;
mod report;
mod scenario;
mod suite;
mod target;
mod work;

pub use breaker::BreakerParams;
pub use client::Ask;
pub use compare::compare;
pub use observe::GatewayFigures;
pub use plot::plot;
pub use record::{Distribution, Summary, Tick};
pub use report::{Baseline, BreakerFigures, Knee, Report, Run, Transition};
pub use scenario::{Bench, CacheParams, LoadParams, Options, PopularityArg, RateParams, StressParams};
pub use suite::SuiteParams;
pub use target::{EMBEDDED_CONFIG, Target, is_loopback};
pub use work::{Popularity, Workload};

impl Report {
    /// A report of `runs` against `target`, made with `seed`.
    pub fn new(seed: u64, target: &Target, runs: Vec<Run>) -> Self {
        Self {
            tool: "llm-tower-bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            seed,
            target: target.name().to_owned(),
            runs,
        }
    }
}
