//! The scenarios: load (closed loop), rate (open loop), stress (a ramp to the
//! knee), cache (a repeating workload) and the suite; the breaker scenario is
//! in `breaker.rs`.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::client::{Ask, Shooter};
use crate::drive::{self, Pace, Stop};
use crate::observe::{GatewayFigures, Observer, Snapshot};
use crate::progress::Progress;
use crate::record::Recorder;
use crate::report::{Baseline, Knee, Run};
use crate::target::Target;
use crate::work::{Popularity, Workload};

/// Each scenario's prompts come from a seed of its own, so that a suite's
/// later scenarios do not hit a cache the earlier ones filled.
pub(crate) mod salt {
    pub const LOAD: u64 = 0x10AD;
    pub const RATE: u64 = 0x7A7E;
    pub const STRESS: u64 = 0x57E5;
    pub const CACHE: u64 = 0xCAC4E;
    pub const BREAKER: u64 = 0xB4EA;
}

/// Settings every scenario shares.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of the prompt sets and fault plans.
    pub seed: u64,
    /// Closed-loop warm-up before each scenario, not counted.
    pub warmup: Duration,
    /// Timeline bucket.
    pub bucket: Duration,
    /// Draw progress lines (when stderr is a terminal).
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { seed: 1, warmup: Duration::from_secs(1), bucket: Duration::from_secs(1), progress: true }
    }
}

/// `load`: a closed loop.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct LoadParams {
    /// Clients, each sending its next request when the last is answered.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,
    /// Stop after this many requests (instead of --duration).
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Seconds to run.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
}

/// `rate`: an open loop at one rate or several in turn.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct RateParams {
    /// Requests per second; a comma-separated list runs each in turn.
    #[arg(long, value_delimiter = ',', default_values_t = [100.0, 200.0])]
    pub qps: Vec<f64>,
    /// Seconds per rate.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    pub duration: f64,
    /// Most requests outstanding; later sends wait, and their waiting counts.
    #[arg(long, default_value_t = 2048)]
    pub max_in_flight: usize,
}

/// `stress`: open-loop steps of growing rate until a threshold is crossed.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct StressParams {
    /// The first step's rate.
    #[arg(long, default_value_t = 50.0)]
    pub start_qps: f64,
    /// Each step's rate over the last's.
    #[arg(long, default_value_t = 1.6)]
    pub factor: f64,
    /// Most steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Seconds per step.
    #[arg(long, default_value_t = 3.0)]
    pub step_duration: f64,
    /// A step crosses when more than this share of its requests fail.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_rate: f64,
    /// A step crosses when its p99 exceeds this many milliseconds.
    #[arg(long, default_value_t = 250.0)]
    pub max_p99_ms: f64,
    /// Most requests outstanding.
    #[arg(long, default_value_t = 2048)]
    pub max_in_flight: usize,
}

/// `cache`: a workload that repeats earlier prompts.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct CacheParams {
    /// Requests to send.
    #[arg(long, short = 'n', default_value_t = 2000)]
    pub requests: u64,
    /// Closed-loop clients.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,
    /// Share of requests that repeat an earlier prompt.
    #[arg(long, default_value_t = 0.5)]
    pub repeat: f64,
    /// How repeats pick their prompt.
    #[arg(long, value_enum, default_value_t = PopularityArg::Zipf)]
    pub popularity: PopularityArg,
}

/// [`Popularity`] on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PopularityArg {
    /// Zipf, s = 1.
    Zipf,
    /// Uniform.
    Uniform,
}

/// A gateway (or any OpenAI-compatible URL) and the means to measure it.
///
/// ```no_run
/// # async fn demo() -> Result<(), String> {
/// use llm_tower_bench::{Ask, Bench, LoadParams, Options, Target};
/// let target = Target::embedded(None, 1)?;
/// let bench = Bench::new(&target, Ask::new("bench"), None, None, Options::default())?;
/// let run = bench.load(&LoadParams { concurrency: 8, requests: Some(500), duration: 0.0 }).await;
/// assert_eq!(run.summary.requests, 500);
/// println!("{}", run.table());
/// # Ok(()) }
/// ```
pub struct Bench {
    pub(crate) shooter: Shooter,
    pub(crate) observer: Observer,
    pub(crate) baseline: Option<(String, Shooter)>,
    pub(crate) opts: Options,
    /// Warm-up requests sent so far.
    pub(crate) warmed: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench").field("shooter", &self.shooter).field("opts", &self.opts).finish()
    }
}

pub(crate) fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

impl Bench {
    /// Measures `target` with `ask`, authenticating with `api_key` and reading
    /// `/stats` with `admin_token` when given.
    pub fn new(
        target: &Target,
        ask: Ask,
        api_key: Option<&str>,
        admin_token: Option<&str>,
        opts: Options,
    ) -> Result<Self, String> {
        Ok(Self {
            shooter: Shooter::new(target.base(), api_key, ask)?,
            observer: Observer::new(target.root(), admin_token, target.mocks().to_vec()),
            baseline: None,
            opts,
            warmed: Default::default(),
        })
    }

    /// Also sends each load and rate run to the upstream at `base` directly
    /// (model `ask.model`, no key), to show what the gateway adds.
    pub fn with_baseline(mut self, base: &str, ask: Ask) -> Result<Self, String> {
        self.baseline = Some((base.trim_end_matches('/').to_owned(), Shooter::new(base, None, ask)?));
        Ok(self)
    }

    pub(crate) fn progress(&self, title: &str, len: Option<u64>) -> Progress {
        Progress::new(title, len, self.opts.progress)
    }

    pub(crate) fn recorder(&self) -> Recorder {
        Recorder::new(Instant::now(), self.opts.bucket)
    }

    /// The closed-loop warm-up: not recorded, its own prompts.
    pub(crate) async fn warm(&self, shooter: &Shooter, clients: usize) {
        if self.opts.warmup.is_zero() {
            return;
        }
        let work = Workload::unique(self.opts.seed).warmup();
        let stop = Stop::Duration(self.opts.warmup);
        // Each warm-up sends prompts no earlier one did: it warms the miss path.
        let first = self.warmed.load(std::sync::atomic::Ordering::Relaxed);
        let rec = drive::closed(
            shooter,
            &work,
            clients.clamp(1, 64),
            stop,
            first,
            self.recorder(),
            Progress::hidden(),
        )
        .await;
        self.warmed.fetch_add(rec.total.requests, std::sync::atomic::Ordering::Relaxed);
    }

    /// The warm-up of an open loop: the warm-up's seconds sent at `qps`
    /// itself, unrecorded. A closed loop of a few clients opens a few
    /// connections; the rate then needs `qps` times the latency of them (270
    /// at 5,000/s and 54 ms), and opening the rest in its first second, on
    /// both sides of a gateway, is a queue the measured run would start with.
    pub(crate) async fn warm_at(&self, shooter: &Shooter, qps: f64, max_in_flight: usize) {
        if self.opts.warmup.is_zero() {
            return;
        }
        let work = Workload::unique(self.opts.seed).warmup();
        let first = self.warmed.load(std::sync::atomic::Ordering::Relaxed);
        let pace = Pace { qps, duration: self.opts.warmup, max_in_flight };
        let rec = drive::open(shooter, &work, pace, first, self.recorder(), Progress::hidden()).await;
        self.warmed.fetch_add(rec.total.requests, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) async fn snapshot(&self) -> Option<Snapshot> {
        self.observer.snapshot().await
    }

    pub(crate) async fn gateway_delta(
        &self,
        before: Option<Snapshot>,
        requests: u64,
    ) -> Option<GatewayFigures> {
        let after = self.snapshot().await?;
        Some(before?.delta(&after, requests))
    }

    /// `load`: `p.concurrency` closed-loop clients.
    pub async fn load(&self, p: &LoadParams) -> Run {
        let stop = match p.requests {
            Some(n) => Stop::Requests(n),
            None => Stop::Duration(secs(p.duration)),
        };
        let work = Workload::unique(self.opts.seed ^ salt::LOAD);
        let closed = |shooter: Shooter, title: &'static str| {
            let work = work.clone();
            async move {
                let bar = self.progress(title, p.requests);
                let start = Instant::now();
                let rec =
                    drive::closed(&shooter, &work, p.concurrency, stop, 0, self.recorder(), bar.clone())
                        .await;
                bar.finish();
                (rec, start.elapsed())
            }
        };
        self.warm(&self.shooter, p.concurrency).await;
        let before = self.snapshot().await;
        let (rec, wall) = closed(self.shooter.clone(), "load").await;
        let summary = rec.summary(wall);
        let gateway = self.gateway_delta(before, summary.requests).await;
        let baseline = match &self.baseline {
            Some((url, s)) => {
                self.warm(s, p.concurrency).await;
                let (b, wall) = closed(s.clone(), "load baseline").await;
                Some(Baseline::of(url, &summary, b.summary(wall)))
            }
            None => None,
        };
        Run {
            scenario: "load".into(),
            label: format!("c={}", p.concurrency),
            params: serde_json::to_value(p).unwrap_or_default(),
            timeline: rec.timeline(),
            summary,
            gateway,
            baseline,
            breaker: None,
            knee: None,
        }
    }

    /// One open-loop step at `qps` for `duration` against `shooter`; request
    /// indices start at `first`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn step(
        &self,
        shooter: &Shooter,
        work: &Workload,
        qps: f64,
        duration: Duration,
        max_in_flight: usize,
        first: u64,
        title: &str,
    ) -> Recorder {
        let len = (qps * duration.as_secs_f64()) as u64;
        let bar = self.progress(title, Some(len));
        let rec = drive::open(
            shooter,
            work,
            Pace { qps, duration, max_in_flight },
            first,
            self.recorder(),
            bar.clone(),
        )
        .await;
        bar.finish();
        rec
    }

    fn open_run(
        &self,
        scenario: &str,
        qps: f64,
        p: &impl Serialize,
        rec: &Recorder,
        duration: Duration,
    ) -> Run {
        // The run lasts as long as its schedule, or longer when the answers lag.
        let summary = rec.summary(duration.max(rec.elapsed()));
        Run {
            scenario: scenario.into(),
            label: format!("{qps:.0} qps"),
            params: serde_json::json!({ "qps": qps, "params": p }),
            timeline: rec.timeline(),
            summary,
            gateway: None,
            baseline: None,
            breaker: None,
            knee: None,
        }
    }

    /// `rate`: an open loop at each of `p.qps` in turn; latency from each
    /// request's intended send time.
    pub async fn rate(&self, p: &RateParams) -> Vec<Run> {
        let duration = secs(p.duration);
        let first_qps = p.qps.first().copied().unwrap_or(100.0);
        self.warm_at(&self.shooter, first_qps, p.max_in_flight).await;
        if let Some((_, s)) = &self.baseline {
            self.warm_at(s, first_qps, p.max_in_flight).await;
        }
        let work = Workload::unique(self.opts.seed ^ salt::RATE);
        let mut runs = Vec::new();
        let mut first = 0u64;
        for &qps in &p.qps {
            let before = self.snapshot().await;
            let rec = self
                .step(&self.shooter, &work, qps, duration, p.max_in_flight, first, &format!("rate {qps:.0}"))
                .await;
            let mut run = self.open_run("rate", qps, p, &rec, duration);
            run.gateway = self.gateway_delta(before, run.summary.requests).await;
            if let Some((url, s)) = &self.baseline {
                let b = self
                    .step(s, &work, qps, duration, p.max_in_flight, first, &format!("baseline {qps:.0}"))
                    .await;
                run.baseline = Some(Baseline::of(url, &run.summary, b.summary(duration.max(b.elapsed()))));
            }
            first += rec.total.requests;
            runs.push(run);
        }
        runs
    }

    /// `stress`: steps of `p.factor` times the last rate until one fails more
    /// than `p.max_error_rate`, has a p99 over `p.max_p99_ms`, or completes
    /// under 90 % of what it offered (the target cannot keep up). The last
    /// step that held is the knee.
    pub async fn stress(&self, p: &StressParams) -> Vec<Run> {
        let duration = secs(p.step_duration);
        self.warm(&self.shooter, 8).await;
        let work = Workload::unique(self.opts.seed ^ salt::STRESS);
        let mut runs = Vec::new();
        let (mut qps, mut first) = (p.start_qps.max(0.1), 0u64);
        for _ in 0..p.steps.max(1) {
            let before = self.snapshot().await;
            let rec = self
                .step(
                    &self.shooter,
                    &work,
                    qps,
                    duration,
                    p.max_in_flight,
                    first,
                    &format!("stress {qps:.0}"),
                )
                .await;
            let mut run = self.open_run("stress", qps, p, &rec, duration);
            run.gateway = self.gateway_delta(before, run.summary.requests).await;
            let s = &run.summary;
            let p99 = s.latency.as_ref().map_or(f64::INFINITY, |d| d.p99);
            let achieved = s.requests as f64 / duration.as_secs_f64().max(1e-9);
            let reason = if 1.0 - s.success_rate > p.max_error_rate {
                Some(format!(
                    "{:.1} % failed (limit {:.1} %)",
                    (1.0 - s.success_rate) * 100.0,
                    p.max_error_rate * 100.0
                ))
            } else if p99 > p.max_p99_ms {
                Some(format!("p99 {p99:.1} ms (limit {:.1} ms)", p.max_p99_ms))
            } else if achieved < 0.9 * qps {
                Some(format!("completed {achieved:.0} of {qps:.0} req/s in the step"))
            } else {
                None
            };
            let crossed = reason.is_some();
            run.knee = Some(Knee { offered_qps: qps, held: !crossed, reason });
            first += rec.total.requests;
            runs.push(run);
            if crossed {
                break;
            }
            qps *= p.factor.max(1.01);
        }
        runs
    }

    /// `cache`: `p.requests` requests of which `p.repeat` repeat an earlier
    /// prompt; hit and miss latency from `x-llm-cache`, tokens and cost saved
    /// from `/stats`.
    pub async fn cache(&self, p: &CacheParams) -> Run {
        let popularity = match p.popularity {
            PopularityArg::Zipf => Popularity::Zipf,
            PopularityArg::Uniform => Popularity::Uniform,
        };
        // Its own seed space: no prompt an earlier scenario sent is cached already.
        let work = Workload::repeating(self.opts.seed ^ salt::CACHE, p.repeat, popularity);
        self.warm(&self.shooter, p.concurrency).await;
        let before = self.snapshot().await;
        let bar = self.progress("cache", Some(p.requests));
        let start = Instant::now();
        let stop = Stop::Requests(p.requests);
        let rec =
            drive::closed(&self.shooter, &work, p.concurrency, stop, 0, self.recorder(), bar.clone()).await;
        bar.finish();
        let summary = rec.summary(start.elapsed());
        let gateway = self.gateway_delta(before, summary.requests).await;
        Run {
            scenario: "cache".into(),
            label: format!("repeat {:.0} % {:?}", work.repeat_ratio() * 100.0, p.popularity).to_lowercase(),
            params: serde_json::to_value(p).unwrap_or_default(),
            timeline: rec.timeline(),
            summary,
            gateway,
            baseline: None,
            breaker: None,
            knee: None,
        }
    }
}

impl Ask {
    /// Non-streamed requests for `model`, 16 tokens each, 30 s timeout, no
    /// extra headers.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            max_tokens: 16,
            stream: false,
            timeout: Duration::from_secs(30),
            headers: Vec::new(),
        }
    }
}
