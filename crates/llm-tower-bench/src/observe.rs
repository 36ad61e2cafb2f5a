//! What the gateway and its mocks say about a run: `/stats` (cache, limiter
//! denials, breaker states) and each mock's `/mock/stats` (upstream calls).

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::http_client;

/// Reads the gateway's `/stats` and the mocks' stats, and sets mock faults.
#[derive(Clone)]
pub(crate) struct Observer {
    client: Client<HttpConnector, Full<Bytes>>,
    root: String,
    admin: Option<HeaderValue>,
    pub mocks: Vec<(String, String)>,
}

/// The counters of one `/stats` reading that a run's figures are deltas of.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub tokens_saved: u64,
    pub cost_saved_micros: u64,
    pub rejections: u64,
    pub transitions: u64,
    /// Every breaker: `(provider, key, state)`.
    pub breakers: Vec<(String, String, String)>,
    /// Each mock's LLM requests.
    pub upstream: Vec<u64>,
}

/// What the gateway counted during a run (deltas of `/stats` and the mocks'
/// stats from its start to its end).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GatewayFigures {
    /// Cache hits the gateway counted.
    pub cache_hits: u64,
    /// Cache misses the gateway counted.
    pub cache_misses: u64,
    /// Completion and prompt tokens the cache answered instead of a provider.
    pub tokens_saved: u64,
    /// What those tokens would have cost, USD.
    pub cost_saved_usd: f64,
    /// Requests its limiters refused (providers and tenants).
    pub rate_limit_denials: u64,
    /// Breaker state changes.
    pub breaker_transitions: u64,
    /// LLM calls the mock providers received (when the mocks are known).
    pub upstream_calls: Option<u64>,
    /// Upstream calls per request the client completed.
    pub upstream_calls_per_request: Option<f64>,
}

fn sum(v: &Value, f: impl Fn(&Value) -> u64) -> u64 {
    v.as_array().map(|a| a.iter().map(f).sum()).unwrap_or(0)
}

impl Snapshot {
    fn parse(s: &Value) -> Self {
        let c = &s["cache"];
        let t = &s["tenants"];
        let overrides: u64 = t["overrides"]
            .as_object()
            .map(|o| o.values().map(|v| v["rejected"].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0);
        let mut breakers = Vec::new();
        for p in s["providers"].as_array().into_iter().flatten() {
            for k in p["circuit_breaker"]["keys"].as_array().into_iter().flatten() {
                breakers.push((
                    p["name"].as_str().unwrap_or_default().to_owned(),
                    k["key"].as_str().unwrap_or_default().to_owned(),
                    k["state"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        Self {
            cache_hits: c["hits"].as_u64().unwrap_or(0),
            cache_misses: c["misses"].as_u64().unwrap_or(0),
            tokens_saved: c["tokens_saved"].as_u64().unwrap_or(0),
            cost_saved_micros: c["cost_saved_micros"].as_u64().unwrap_or(0),
            rejections: sum(&s["providers"], |p| p["rate_limit"]["rejected"].as_u64().unwrap_or(0))
                + t["default"]["rejected"].as_u64().unwrap_or(0)
                + overrides,
            transitions: sum(&s["providers"], |p| p["circuit_breaker"]["transitions"].as_u64().unwrap_or(0)),
            breakers,
            upstream: Vec::new(),
        }
    }

    /// What happened between `self` and `later`, over `requests` requests.
    pub fn delta(&self, later: &Snapshot, requests: u64) -> GatewayFigures {
        let upstream =
            (!later.upstream.is_empty() && later.upstream.len() == self.upstream.len()).then(|| {
                later.upstream.iter().zip(&self.upstream).map(|(b, a)| b.saturating_sub(*a)).sum::<u64>()
            });
        GatewayFigures {
            cache_hits: later.cache_hits.saturating_sub(self.cache_hits),
            cache_misses: later.cache_misses.saturating_sub(self.cache_misses),
            tokens_saved: later.tokens_saved.saturating_sub(self.tokens_saved),
            cost_saved_usd: later.cost_saved_micros.saturating_sub(self.cost_saved_micros) as f64 / 1e6,
            rate_limit_denials: later.rejections.saturating_sub(self.rejections),
            breaker_transitions: later.transitions.saturating_sub(self.transitions),
            upstream_calls: upstream,
            upstream_calls_per_request: upstream.filter(|_| requests > 0).map(|u| u as f64 / requests as f64),
        }
    }
}

impl Observer {
    pub fn new(root: &str, admin_token: Option<&str>, mocks: Vec<(String, String)>) -> Self {
        let admin = admin_token.and_then(|t| HeaderValue::try_from(format!("Bearer {t}")).ok());
        Self { client: http_client(), root: root.to_owned(), admin, mocks }
    }

    async fn get_json(&self, url: &str, admin: bool) -> Option<Value> {
        let mut req = Request::builder().method(Method::GET).uri(url);
        if admin && let Some(a) = &self.admin {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let res = self.client.request(req.body(Full::default()).ok()?).await.ok()?;
        if !res.status().is_success() {
            return None;
        }
        let body = res.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    }

    /// The gateway's `/stats` and the mocks' counters (`None`: no `/stats`).
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let stats = self.get_json(&format!("{}/stats", self.root), true).await?;
        let mut s = Snapshot::parse(&stats);
        for (_, url) in &self.mocks {
            match self.mock_requests(url).await {
                Some(n) => s.upstream.push(n),
                None => {
                    s.upstream.clear();
                    break;
                }
            }
        }
        Some(s)
    }

    /// Every breaker's state (`None`: no `/stats`).
    pub async fn breakers(&self) -> Option<Vec<(String, String, String)>> {
        let stats = self.get_json(&format!("{}/stats", self.root), true).await?;
        Some(Snapshot::parse(&stats).breakers)
    }

    /// LLM requests the mock at `url` has received.
    pub async fn mock_requests(&self, url: &str) -> Option<u64> {
        self.get_json(&format!("{url}/mock/counters"), false).await?["llm_requests"].as_u64()
    }

    /// Sets the fault plan of the mock at `url`.
    pub async fn set_faults(&self, url: &str, plan: &llm_tower_mock::FaultPlan) -> Result<(), String> {
        let body = serde_json::to_vec(plan).map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{url}/mock/faults"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let res = self.client.request(req).await.map_err(|e| format!("{url}: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("{url}/mock/faults answered {}", res.status()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stats_reading_sums_denials_and_lists_breakers() {
        let stats = serde_json::json!({
            "providers": [
                {"name": "a", "rate_limit": {"rejected": 3},
                 "circuit_breaker": {"transitions": 2, "keys": [{"key": "*", "state": "open"}]}},
                {"name": "b", "rate_limit": {"rejected": 1}, "circuit_breaker": {"transitions": 0, "keys": []}}
            ],
            "tenants": {"default": {"rejected": 5}, "overrides": {"t": {"rejected": 2}}},
            "cache": {"hits": 7, "misses": 9, "tokens_saved": 100, "cost_saved_micros": 2500}
        });
        let s = Snapshot::parse(&stats);
        assert_eq!((s.rejections, s.transitions, s.cache_hits), (11, 2, 7));
        assert_eq!(s.breakers, [("a".to_owned(), "*".to_owned(), "open".to_owned())]);
        let mut later = s.clone();
        later.cache_hits += 4;
        later.cost_saved_micros += 1_000_000;
        let d = s.delta(&later, 10);
        assert_eq!((d.cache_hits, d.cost_saved_usd, d.upstream_calls), (4, 1.0, None));
    }
}
