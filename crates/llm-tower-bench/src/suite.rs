//! `suite`: every scenario in turn with defaults that fit in under three
//! minutes on two cores (`--short`: about twenty seconds, for CI).

use serde::Serialize;

use crate::breaker::BreakerParams;
use crate::report::Run;
use crate::scenario::{Bench, CacheParams, LoadParams, PopularityArg, RateParams, StressParams};

/// `suite`: load, rate, stress, cache and (with a mock behind the target) breaker.
#[derive(clap::Args, Clone, Debug, Default, Serialize)]
pub struct SuiteParams {
    /// The short suite: one-second steps and fewer requests, for CI.
    #[arg(long)]
    pub short: bool,
}

impl SuiteParams {
    /// The load scenario's parameters.
    pub fn load(&self) -> LoadParams {
        LoadParams { concurrency: 16, requests: None, duration: if self.short { 2.0 } else { 10.0 } }
    }

    /// The rate scenario's.
    pub fn rate(&self) -> RateParams {
        let (qps, duration) = if self.short { (vec![100.0], 2.0) } else { (vec![100.0, 300.0], 5.0) };
        RateParams { qps, duration, max_in_flight: 2048 }
    }

    /// The stress scenario's.
    pub fn stress(&self) -> StressParams {
        StressParams {
            start_qps: 100.0,
            factor: if self.short { 2.0 } else { 1.6 },
            steps: if self.short { 4 } else { 10 },
            step_duration: if self.short { 1.0 } else { 3.0 },
            max_error_rate: 0.01,
            max_p99_ms: 250.0,
            max_in_flight: 2048,
        }
    }

    /// The cache scenario's.
    pub fn cache(&self) -> CacheParams {
        CacheParams {
            requests: if self.short { 400 } else { 2000 },
            concurrency: 16,
            repeat: 0.5,
            popularity: PopularityArg::Zipf,
        }
    }

    /// The breaker scenario's (the outage outlasts the embedded breaker's
    /// 2 s open time, the recovery its 4 s longest).
    pub fn breaker(&self) -> BreakerParams {
        BreakerParams {
            qps: 100.0,
            healthy: if self.short { 1.0 } else { 2.0 },
            outage: if self.short { 3.0 } else { 4.0 },
            recovery: if self.short { 5.0 } else { 6.0 },
            fail: None,
            status: 503,
        }
    }
}

impl Bench {
    /// Runs the suite; the breaker scenario only when a mock provider is
    /// known (`on_skip` hears why it was left out).
    pub async fn suite(&self, p: &SuiteParams, on_skip: impl Fn(&str)) -> Result<Vec<Run>, String> {
        let mut runs = vec![self.load(&p.load()).await];
        runs.extend(self.rate(&p.rate()).await);
        runs.extend(self.stress(&p.stress()).await);
        runs.push(self.cache(&p.cache()).await);
        if self.observer.mocks.is_empty() {
            on_skip("breaker: skipped, no mock provider behind the target (--embedded or --mock NAME=URL)");
        } else {
            runs.push(self.breaker(&p.breaker()).await?);
        }
        Ok(runs)
    }
}
