//! `breaker`: an open loop through a healthy phase, a scripted outage of one
//! mock provider (every LLM request answered with an error status), and a
//! recovery, with `/stats` polled every 20 ms for breaker state changes and
//! the failing mock's request count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use llm_tower_mock::{Fault, FaultPlan};
use serde::Serialize;
use tokio::time::Instant;

use crate::drive::{self, Pace};
use crate::record::Recorder;
use crate::report::{BreakerFigures, Run, Transition};
use crate::scenario::{Bench, salt, secs};
use crate::work::Workload;

/// `breaker`: healthy, then an outage of one mock provider, then recovery.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct BreakerParams {
    /// Requests per second throughout.
    #[arg(long, default_value_t = 100.0)]
    pub qps: f64,
    /// Seconds before the outage.
    #[arg(long, default_value_t = 2.0)]
    pub healthy: f64,
    /// Seconds of outage.
    #[arg(long, default_value_t = 4.0)]
    pub outage: f64,
    /// Seconds after it.
    #[arg(long, default_value_t = 6.0)]
    pub recovery: f64,
    /// The mock provider to fail (default: the first one known).
    #[arg(long)]
    pub fail: Option<String>,
    /// The status every request to it gets during the outage.
    #[arg(long, default_value_t = 503)]
    pub status: u16,
}

/// One poll: time, every breaker's state, the failing mock's LLM requests.
struct Sample {
    t: Duration,
    states: Vec<(String, String, String)>,
    calls: Option<u64>,
}

fn transitions(samples: &[Sample]) -> Vec<Transition> {
    let mut last: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut out = Vec::new();
    for s in samples {
        for (provider, key, state) in &s.states {
            let from = last.insert((provider.clone(), key.clone()), state.clone());
            // A breaker first seen is assumed to have started closed.
            let from = from.unwrap_or_else(|| "closed".to_owned());
            if &from != state {
                out.push(Transition {
                    t_s: s.t.as_secs_f64(),
                    provider: provider.clone(),
                    key: key.clone(),
                    from,
                    to: state.clone(),
                });
            }
        }
    }
    out
}

/// The failing mock's request count at the first sample at or after `t`.
fn calls_at(samples: &[Sample], t: Duration) -> Option<u64> {
    samples.iter().find(|s| s.t >= t).or(samples.last()).and_then(|s| s.calls)
}

impl Bench {
    /// `breaker`: needs a mock provider behind the target (`--embedded`, or
    /// `--mock NAME=URL`) whose fault plan it sets; the plan is cleared when
    /// the run ends, also on error.
    pub async fn breaker(&self, p: &BreakerParams) -> Result<Run, String> {
        let mocks = &self.observer.mocks;
        let (failing, url) = match &p.fail {
            Some(name) => mocks
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| format!("no mock provider named {name:?} (known: {mocks:?})"))?,
            None => mocks
                .first()
                .ok_or("the breaker scenario needs a mock provider: --embedded or --mock NAME=URL")?,
        };
        let outage_plan = FaultPlan::Always { fault: Fault::status(p.status) };
        // Fail early (before any load) when the mock cannot be scripted.
        self.observer.set_faults(url, &FaultPlan::None).await?;
        let (healthy, outage, recovery) = (secs(p.healthy), secs(p.outage), secs(p.recovery));
        let total = healthy + outage + recovery;
        self.warm(&self.shooter, 4).await;
        let before = self.snapshot().await;

        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (observer, url, stop) = (self.observer.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let t = start.elapsed();
                    let states = observer.breakers().await.unwrap_or_default();
                    let calls = observer.mock_requests(&url).await;
                    samples.push(Sample { t, states, calls });
                }
                samples
            })
        };
        let script = {
            let (observer, url, plan) = (self.observer.clone(), url.clone(), outage_plan);
            tokio::spawn(async move {
                tokio::time::sleep_until(start + healthy).await;
                let a = observer.set_faults(&url, &plan).await;
                tokio::time::sleep_until(start + healthy + outage).await;
                let b = observer.set_faults(&url, &FaultPlan::None).await;
                a.and(b)
            })
        };
        let work = Workload::unique(self.opts.seed ^ salt::BREAKER);
        let bar = self.progress("breaker", Some((p.qps * total.as_secs_f64()) as u64));
        let rec = Recorder::new(start, Duration::from_millis(250)).with_events();
        let rec = drive::open(
            &self.shooter,
            &work,
            Pace { qps: p.qps, duration: total, max_in_flight: 2048 },
            0,
            rec,
            bar.clone(),
        )
        .await;
        bar.finish();
        stop.store(true, Ordering::Relaxed);
        let scripted = script.await.map_err(|e| e.to_string()).and_then(|r| r);
        let samples = poller.await.map_err(|e| e.to_string())?;
        // Whatever happened, leave the mock healthy.
        self.observer.set_faults(url, &FaultPlan::None).await?;
        scripted?;

        let summary = rec.summary(total.max(rec.elapsed()));
        let gateway = self.gateway_delta(before, summary.requests).await;
        let transitions = transitions(&samples);
        let mine = |to: &str, after: Duration| {
            transitions
                .iter()
                .find(|t| &t.provider == failing && t.to == to && t.t_s >= after.as_secs_f64())
                .map(|t| t.t_s)
        };
        let opened = mine("open", healthy);
        let closed = mine("closed", healthy + outage);
        let (o0, o1) = (healthy.as_secs_f64(), (healthy + outage).as_secs_f64());
        let during =
            |a: Duration, b: Duration| Some(calls_at(&samples, b)?.saturating_sub(calls_at(&samples, a)?));
        let events = rec.events.as_deref().unwrap_or_default();
        let in_outage = events.iter().filter(|e| (o0..o1).contains(&(f64::from(e.at_ms) / 1000.0)));
        let (mut ok, mut elsewhere, mut failed) = (0u64, 0u64, 0u64);
        for e in in_outage {
            if e.ok {
                ok += 1;
                elsewhere += u64::from(e.backend.as_deref().is_some_and(|b| b != failing));
            } else {
                failed += 1;
            }
        }
        let breaker = BreakerFigures {
            failing: failing.clone(),
            outage_s: [o0, o1],
            time_to_open_ms: opened.map(|t| (t - o0) * 1000.0),
            calls_to_failing_during_outage: during(healthy, healthy + outage),
            calls_to_failing_while_open: opened.and_then(|t| during(secs(t), healthy + outage)),
            time_to_close_ms: closed.map(|t| (t - o1) * 1000.0),
            failover_share: if ok == 0 { 0.0 } else { elsewhere as f64 / ok as f64 },
            failed_during_outage: failed,
            transitions,
        };
        Ok(Run {
            scenario: "breaker".into(),
            label: format!("{} down {:.1} s at {:.0} qps", failing, p.outage, p.qps),
            params: serde_json::to_value(p).unwrap_or_default(),
            timeline: rec.timeline(),
            summary,
            gateway,
            baseline: None,
            breaker: Some(breaker),
            knee: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, state: &str, calls: u64) -> Sample {
        Sample {
            t: Duration::from_millis(ms),
            states: vec![("a".into(), "*".into(), state.into())],
            calls: Some(calls),
        }
    }

    #[test]
    fn samples_become_transitions_and_call_counts() {
        let s = [
            sample(0, "closed", 10),
            sample(20, "open", 30),
            sample(40, "open", 31),
            sample(60, "half_open", 32),
            sample(80, "closed", 40),
        ];
        let t = transitions(&s);
        let hops: Vec<(&str, &str)> = t.iter().map(|t| (t.from.as_str(), t.to.as_str())).collect();
        assert_eq!(hops, [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]);
        assert_eq!(t[0].t_s, 0.02);
        assert_eq!(calls_at(&s, Duration::from_millis(30)), Some(31));
        assert_eq!(calls_at(&s, Duration::from_secs(9)), Some(40), "past the end: the last sample");
    }
}
