//! The accounting layer's token and cost counters, registered once per
//! model and provider instead of once per call.

use std::sync::Arc;

use llm_tower_core::Usage;
use llm_tower_core::bounded::BoundedMap;
use metrics::Counter;

/// Most (model, provider) pairs whose counters are kept; the least recently
/// used pair's handles are dropped past it (registered again if it returns).
const PAIRS: usize = 1024;

/// `llm_tower_tokens_total` (input, output) and `llm_tower_cost_microusd_total`
/// for one model and provider.
struct Meters {
    input: Counter,
    output: Counter,
    cost: Counter,
}

impl Meters {
    fn register(model: &str, provider: &str) -> Self {
        let by = |kind: &'static str| {
            [("model", model.to_owned()), ("provider", provider.to_owned()), ("kind", kind.to_owned())]
        };
        Meters {
            input: metrics::counter!("llm_tower_tokens_total", &by("input")),
            output: metrics::counter!("llm_tower_tokens_total", &by("output")),
            cost: metrics::counter!(
                "llm_tower_cost_microusd_total",
                "model" => model.to_owned(),
                "provider" => provider.to_owned()
            ),
        }
    }
}

/// A model and the provider that answered for it.
type Pair = (Arc<str>, Arc<str>);

/// The counters of every (model, provider) pair seen, bounded.
///
/// Handles are taken from the metrics recorder installed when a pair is
/// first seen: install it before traffic (as the gateway does).
pub(crate) struct UsageMeters {
    pairs: BoundedMap<Pair, Option<Arc<Meters>>>,
}

impl Default for UsageMeters {
    fn default() -> Self {
        UsageMeters { pairs: BoundedMap::new(PAIRS, None) }
    }
}

impl UsageMeters {
    /// Adds one call's usage and cost to its pair's counters.
    pub(crate) fn record(&self, model: &Arc<str>, provider: &Arc<str>, usage: &Usage, cost: u64) {
        let key = (model.clone(), provider.clone());
        let (found, _) = self.pairs.with(
            &key,
            || (key.clone(), Some(Arc::new(Meters::register(model, provider)))),
            |_| true,
            |m| m.clone(),
        );
        let m = found.unwrap_or_else(|| Arc::new(Meters::register(model, provider)));
        m.input.increment(usage.input);
        m.output.increment(usage.output);
        m.cost.increment(cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn each_pair_counts_on_its_own_handles() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let meters = UsageMeters::default();
            let (a, b, p): (Arc<str>, Arc<str>, Arc<str>) =
                ("gpt-4o".into(), "gpt-4o-mini".into(), "openai".into());
            let u = Usage { input: 10, output: 3, ..Default::default() };
            meters.record(&a, &p, &u, 7);
            meters.record(&a, &p, &u, 7);
            meters.record(&b, &p, &u, 1);
        });
        let mut seen = Vec::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let labels: Vec<String> =
                key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            if let DebugValue::Counter(n) = value {
                seen.push((key.key().name().to_owned(), labels.join(","), n));
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("llm_tower_cost_microusd_total".into(), "model=gpt-4o,provider=openai".into(), 14),
                ("llm_tower_cost_microusd_total".into(), "model=gpt-4o-mini,provider=openai".into(), 1),
                ("llm_tower_tokens_total".into(), "model=gpt-4o,provider=openai,kind=input".into(), 20),
                ("llm_tower_tokens_total".into(), "model=gpt-4o,provider=openai,kind=output".into(), 6),
                ("llm_tower_tokens_total".into(), "model=gpt-4o-mini,provider=openai,kind=input".into(), 10),
                ("llm_tower_tokens_total".into(), "model=gpt-4o-mini,provider=openai,kind=output".into(), 3),
            ]
        );
    }
}
