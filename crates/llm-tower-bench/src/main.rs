//! `llm-tower-bench`: load, rate, stress, breaker and cache benchmarks of an
//! OpenAI-compatible gateway, or of the llm-tower gateway started in-process
//! (`--embedded`). `llm-tower-bench --help` lists everything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use llm_tower_bench::{
    Ask, Bench, BreakerParams, CacheParams, LoadParams, Options, RateParams, Report, StressParams,
    SuiteParams, Target,
};

#[derive(Parser)]
#[command(
    name = "llm-tower-bench",
    version,
    about = "Benchmarks for LLM gateways: load, rate, stress, breaker, cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print two --json reports side by side with ratios (B / A), and exit.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"])]
    compare: Option<Vec<PathBuf>>,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum Command {
    /// Closed loop: N clients, each sending when its last request is answered.
    Load(LoadParams),
    /// Open loop at fixed rates; latency from each request's intended send time.
    Rate(RateParams),
    /// A ramp of rates until errors or p99 cross a threshold: the knee.
    Stress(StressParams),
    /// A scripted outage of one mock provider: breaker transitions, failover.
    Breaker(BreakerParams),
    /// Repeated prompts: hit ratio, hit vs miss latency, tokens and cost saved.
    Cache(CacheParams),
    /// All of the above in turn.
    Suite(SuiteParams),
}

#[derive(clap::Args)]
struct Common {
    /// The target's OpenAI base URL, e.g. http://127.0.0.1:8080/v1.
    #[arg(long, global = true, conflicts_with = "embedded")]
    url: Option<String>,
    /// Start the gateway in-process with its mock providers: on the bench's
    /// own config, or `--embedded=CONFIG.toml`.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, value_name = "CONFIG")]
    embedded: Option<Option<PathBuf>>,
    /// The environment variable holding the target's API key.
    #[arg(long, global = true, value_name = "VAR")]
    api_key_env: Option<String>,
    /// The environment variable holding the gateway's admin token (for /stats).
    #[arg(long, global = true, value_name = "VAR")]
    admin_token_env: Option<String>,
    /// The model to ask for (default: "bench" on the bench's own config, else gpt-4o-mini).
    #[arg(long, global = true)]
    model: Option<String>,
    /// Allow targets that are not loopback addresses.
    #[arg(long, global = true)]
    allow_remote: bool,
    /// A mock provider behind a --url target, NAME=URL (its root URL), for the
    /// breaker scenario and upstream call counts. Repeatable.
    #[arg(long, global = true, value_name = "NAME=URL")]
    mock: Vec<String>,
    /// Also measure the upstream directly with the same load: at URL, or
    /// (--embedded) the first mock provider.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, value_name = "URL")]
    baseline: Option<Option<String>>,
    /// The model the baseline is asked for.
    #[arg(long, global = true, default_value = "gpt-4o-mini")]
    baseline_model: String,
    /// Threads of the bench's own runtime.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Worker threads of the embedded gateway.
    #[arg(long, global = true, default_value_t = 1)]
    gateway_threads: usize,
    /// Seed of the prompt sets and fault plans.
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// Stream answers (SSE): time to first token and inter-token gaps.
    #[arg(long, global = true)]
    stream: bool,
    /// An extra request header, 'NAME: VALUE'; `{i}` in VALUE becomes the
    /// request's index (`--header 'x-tenant: t{i}'`: a tenant per request). Repeatable.
    #[arg(long, global = true, value_name = "NAME: VALUE")]
    header: Vec<String>,
    /// max_tokens of each request.
    #[arg(long, global = true, default_value_t = 16)]
    max_tokens: u32,
    /// Seconds of unrecorded warm-up before each scenario (`rate`: sent at
    /// its first rate, so the connection pools hold what the rate needs).
    #[arg(long, global = true, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds a request may take.
    #[arg(long, global = true, default_value_t = 30.0)]
    timeout: f64,
    /// Write the report as JSON.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write SVG and PNG charts into DIR.
    #[arg(long, global = true, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// No progress line.
    #[arg(long, global = true)]
    no_progress: bool,
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{what} {s}: not a number of seconds"))
}

fn env_secret(var: &Option<String>) -> Result<Option<String>, String> {
    match var {
        None => Ok(None),
        // Only the variable's name in the message, never its value.
        Some(v) => std::env::var(v).map(Some).map_err(|_| format!("${v} is not set")),
    }
}

fn target(c: &Common) -> Result<(Target, bool), String> {
    match (&c.url, &c.embedded) {
        (Some(url), _) => {
            let mut t = Target::url(url, c.allow_remote)?;
            for m in &c.mock {
                let (name, url) =
                    m.split_once('=').ok_or_else(|| format!("--mock {m}: expected NAME=URL"))?;
                t = t.with_mock(name, url, c.allow_remote)?;
            }
            Ok((t, false))
        }
        (None, Some(config)) => {
            let text = match config {
                Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?),
                None => None,
            };
            Ok((Target::embedded(text.as_deref(), c.gateway_threads)?, config.is_none()))
        }
        (None, None) => Err("give a target: --url http://127.0.0.1:PORT/v1, or --embedded".into()),
    }
}

async fn run(cmd: Command, bench: &Bench) -> Result<Vec<llm_tower_bench::Run>, String> {
    Ok(match cmd {
        Command::Load(p) => vec![bench.load(&p).await],
        Command::Rate(p) => bench.rate(&p).await,
        Command::Stress(p) => bench.stress(&p).await,
        Command::Breaker(p) => vec![bench.breaker(&p).await?],
        Command::Cache(p) => vec![bench.cache(&p).await],
        Command::Suite(p) => bench.suite(&p, |why| eprintln!("{why}")).await?,
    })
}

fn main_inner(cli: Cli) -> Result<(), String> {
    if let Some(files) = &cli.compare {
        let read = |p: &PathBuf| -> Result<Report, String> {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: not a bench report ({e})", p.display()))
        };
        print!("{}", llm_tower_bench::compare(&read(&files[0])?, &read(&files[1])?));
        return Ok(());
    }
    let cmd = cli.command.ok_or("give a scenario: load, rate, stress, breaker, cache or suite (--help)")?;
    let c = &cli.common;
    let (target, own_config) = target(c)?;
    let model = c.model.clone().unwrap_or_else(|| if own_config { "bench" } else { "gpt-4o-mini" }.into());
    let mut ask = Ask::new(&model);
    ask.max_tokens = c.max_tokens;
    ask.stream = c.stream;
    ask.timeout = secs(c.timeout, "timeout")?;
    for h in &c.header {
        let (n, v) = h.split_once(':').ok_or_else(|| format!("--header {h:?}: NAME: VALUE"))?;
        ask.headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let opts = Options {
        seed: c.seed,
        warmup: secs(c.warmup, "warmup")?,
        progress: !c.no_progress,
        ..Options::default()
    };
    let (key, admin) = (env_secret(&c.api_key_env)?, env_secret(&c.admin_token_env)?);
    let mut bench = Bench::new(&target, ask.clone(), key.as_deref(), admin.as_deref(), opts)?;
    if let Some(b) = &c.baseline {
        let url = match b {
            Some(u) => {
                Target::url(u, c.allow_remote)?;
                u.clone()
            }
            None => match target.mocks().first() {
                Some((_, root)) => format!("{root}/v1"),
                None => {
                    return Err(
                        "--baseline needs a URL (--baseline=http://…/v1) unless a mock is known".into()
                    );
                }
            },
        };
        bench = bench.with_baseline(&url, Ask { model: c.baseline_model.clone(), ..ask })?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(c.threads.max(1))
        .thread_name("bench")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let runs = rt.block_on(run(cmd, &bench))?;
    let report = Report::new(c.seed, &target, runs);
    print!("{}", report.table());
    if let Some(path) = &c.json {
        let json = serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &c.plot {
        for f in llm_tower_bench::plot(&report, dir)? {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match main_inner(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llm-tower-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
