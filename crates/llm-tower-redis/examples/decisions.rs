//! What a decision costs in Redis next to memory: the rate-limit store's
//! `reserve` and the budget store's reserve + settle, one at a time (the
//! latency a request pays) and `--in-flight N` at once over the one
//! multiplexed connection (redis-rs pipelines concurrent commands on it), on
//! a `redis-server` this example starts on a loopback port. The client runs
//! on one thread, leaving the other core of a 2-core machine to Redis.
//!
//! ```sh
//! cargo run --release -p llm-tower-redis --example decisions -- --decisions 50000 --in-flight 64
//! ```
//!
//! Prints, per store and mode: decisions/s, p50, p99 and p99.9, next to a
//! bare `PING` on the same connection (the machine's round trip).

use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_tower_core::{BoxError, Key};
use llm_tower_ratelimit::{Decision, Demand, Limits, MemoryStore, RateLimitStore};
use llm_tower_redis::{Redis, RedisConfig, RedisServer};
use llm_tower_tokens::{Budget, BudgetStore, MemoryBudgets, Period};

/// One decision, timed.
trait Decide: Send + Sync + 'static {
    fn decide(&self, i: u64) -> impl Future<Output = Result<(), BoxError>> + Send;
}

struct Limiter<S>(S, Demand);

impl<S: RateLimitStore> Decide for Limiter<S> {
    async fn decide(&self, i: u64) -> Result<(), BoxError> {
        // 1,000 keys: the working set of a tenant limiter.
        let key = Key::from(format!("k{}", i % 1000));
        match self.0.reserve(&key, &self.1).await? {
            Decision::Granted(_) => Ok(()),
            Decision::Denied { .. } => Err("denied: the limit is set never to refuse".into()),
        }
    }
}

struct Spend<S>(S, Budget);

impl<S: BudgetStore> Decide for Spend<S> {
    async fn decide(&self, i: u64) -> Result<(), BoxError> {
        let key = Key::from(format!("t{}", i % 1000));
        let r = self.0.reserve(&key, &self.1, 10).await?;
        self.0.settle(&key, &self.1, r, 7);
        Ok(())
    }
}

/// A bare round trip on the same connection: what the network and the
/// client cost before any script runs.
struct Ping(Redis);

impl Decide for Ping {
    async fn decide(&self, _: u64) -> Result<(), BoxError> {
        self.0.ping().await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure<D: Decide>(label: &str, d: Arc<D>, decisions: u64, in_flight: u64) -> Result<(), BoxError> {
    // Warm-up: connections, script cache, keys.
    for i in 0..(decisions / 10).clamp(10, 2_000) {
        d.decide(i).await?;
    }
    let per_task = decisions / in_flight;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..in_flight {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task as usize);
            for i in 0..per_task {
                let t0 = Instant::now();
                d.decide(t * per_task + i).await?;
                lat.push(t0.elapsed());
            }
            Ok::<_, BoxError>(lat)
        }));
    }
    let mut all = Vec::with_capacity(decisions as usize);
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{label:44} {:>9.0}/s  p50 {:>7.1} us  p99 {:>7.1} us  p99.9 {:>7.1} us",
        all.len() as f64 / secs,
        us(percentile(&all, 0.50)),
        us(percentile(&all, 0.99)),
        us(percentile(&all, 0.999)),
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut decisions = 50_000u64;
    let mut in_flight = 64u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--decisions" => decisions = v.parse()?,
            "--in-flight" => in_flight = v.parse::<u64>()?.max(1),
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    if !RedisServer::available() {
        return Err("redis-server is not installed (apt-get install redis-server)".into());
    }
    let server = RedisServer::start()?;
    // A generous timeout: this measures the store, not the fallback.
    let cfg = RedisConfig { command_timeout: Duration::from_secs(5), ..Default::default() };
    let redis = Redis::connect(&server.url(), cfg).await?;
    let limits = Limits::default().requests_per_minute(100_000_000).tokens_per_minute(4_000_000_000);
    let demand = Demand { requests: 1, tokens: 500, rates: limits.rates(), max_wait: None, max_queue: 0 };
    let budget = Budget { limit_micros: u64::MAX >> 12, period: Period::Day };
    let (memory, shared) =
        (Arc::new(Limiter(MemoryStore::default(), demand)), Arc::new(Limiter(redis.limits("bench"), demand)));
    let (mem_spend, red_spend) =
        (Arc::new(Spend(MemoryBudgets::default(), budget)), Arc::new(Spend(redis.budgets("bench"), budget)));
    println!("{decisions} decisions each; {in_flight} at once for the concurrent rows");
    let ping = Arc::new(Ping(redis.clone()));
    for (mode, n) in [("one at a time", 1), ("concurrent", in_flight)] {
        let few = if n == 1 { decisions / 5 } else { decisions };
        measure(&format!("PING (a bare round trip), {mode}"), ping.clone(), few, n).await?;
        measure(&format!("rate limit, memory, {mode}"), memory.clone(), few, n).await?;
        measure(&format!("rate limit, Redis, {mode}"), shared.clone(), few, n).await?;
        measure(&format!("budget reserve + settle, memory, {mode}"), mem_spend.clone(), few, n).await?;
        measure(&format!("budget reserve + settle, Redis, {mode}"), red_spend.clone(), few, n).await?;
    }
    Ok(())
}
