//! Usage and cost per tenant, model and provider, in total and by minute, hour and day.

use std::sync::Arc;

use llm_tower_core::bounded::BoundedMap;

use serde::Serialize;
use tokio::time::Instant;

use crate::Usage;

/// Summed usage and cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Calls.
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cached input tokens.
    pub cached_input_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// Cost, micro-dollars.
    pub cost_micros: u64,
}

impl Totals {
    fn add(&mut self, u: &Usage, cost: u64) {
        self.requests = self.requests.saturating_add(1);
        self.input_tokens = self.input_tokens.saturating_add(u.input);
        self.output_tokens = self.output_tokens.saturating_add(u.output);
        self.cached_input_tokens = self.cached_input_tokens.saturating_add(u.cached_input);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(u.reasoning);
        self.cost_micros = self.cost_micros.saturating_add(cost);
    }

    fn merge(&mut self, o: &Totals) {
        self.requests = self.requests.saturating_add(o.requests);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.cached_input_tokens = self.cached_input_tokens.saturating_add(o.cached_input_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.cost_micros = self.cost_micros.saturating_add(o.cost_micros);
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    epoch: u64,
    totals: Totals,
}

#[derive(Debug)]
struct Entry {
    totals: Totals,
    /// Changed since the last [`Ledger::drain_changed`].
    changed: bool,
    minutes: [Slot; 60],
    hours: [Slot; 24],
    days: [Slot; 30],
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            totals: Totals::default(),
            changed: false,
            minutes: [Slot::default(); 60],
            hours: [Slot::default(); 24],
            days: [Slot::default(); 30],
        }
    }
}

fn bump(slots: &mut [Slot], epoch: u64, u: &Usage, cost: u64) {
    let s = &mut slots[(epoch % slots.len() as u64) as usize];
    if s.epoch != epoch {
        *s = Slot { epoch, totals: Totals::default() };
    }
    s.totals.add(u, cost);
}

fn window(slots: &[Slot], epoch: u64) -> Totals {
    let n = slots.len() as u64;
    let mut t = Totals::default();
    for s in slots.iter().filter(|s| s.epoch <= epoch && s.epoch + n > epoch && s.epoch != 0) {
        t.merge(&s.totals);
    }
    t
}

/// (tenant, model, provider).
type LineKey = (Arc<str>, Arc<str>, Arc<str>);

/// One ledger line's totals, for a persistent copy ([`Ledger::drain_changed`],
/// [`Ledger::restore`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerLine {
    /// Tenant.
    pub tenant: Arc<str>,
    /// Model.
    pub model: Arc<str>,
    /// Provider.
    pub provider: Arc<str>,
    /// Its totals.
    pub totals: Totals,
}

/// One line's usage bucket by bucket, oldest first (the last bucket is the
/// current one): for charts and usage insights.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Series {
    /// The last 60 minutes.
    pub minutes: Vec<Totals>,
    /// The last 24 hours.
    pub hours: Vec<Totals>,
    /// The last 30 days.
    pub days: Vec<Totals>,
}

fn buckets(slots: &[Slot], epoch: u64) -> Vec<Totals> {
    let n = slots.len() as u64;
    (0..n)
        .map(|i| {
            let e = (epoch + i + 1).saturating_sub(n);
            let s = &slots[(e % n) as usize];
            if e != 0 && s.epoch == e { s.totals } else { Totals::default() }
        })
        .collect()
}

/// One ledger line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LedgerEntry {
    /// Tenant (`-` when none).
    pub tenant: String,
    /// Model.
    pub model: String,
    /// Provider that answered (`-` when unknown, `cache` for cache hits).
    pub provider: String,
    /// Since the start.
    pub total: Totals,
    /// The last 60 minutes.
    pub last_hour: Totals,
    /// The last 24 hours.
    pub last_day: Totals,
    /// The last 30 days.
    pub last_30_days: Totals,
}

/// Usage and cost per (tenant, model, provider). Cheap to share.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use llm_tower_tokens::{Ledger, Usage};
/// let ledger = Ledger::default();
/// ledger.record("acme", "gpt-4o", "openai", &Usage { input: 10, output: 5, ..Default::default() }, 75);
/// assert_eq!(ledger.entries()[0].total.cost_micros, 75);
/// # }
/// ```
#[derive(Debug)]
pub struct Ledger {
    start: Instant,
    lines: BoundedMap<LineKey, Box<Entry>>,
}

/// How the shared overflow line shows in [`Ledger::entries`] (its tenant,
/// model and provider).
pub const OVERFLOW: &str = "(overflow)";

impl Default for Ledger {
    /// At most 10,000 lines.
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl Ledger {
    /// A ledger of at most `max_lines` (tenant, model, provider) lines (each
    /// about 6 KiB with its minute, hour and day series). A line is never
    /// dropped (it holds spend); once the bound is full, new lines add to one
    /// overflow line, so totals stay exact and memory stays bounded.
    pub fn new(max_lines: usize) -> Self {
        Ledger { start: Instant::now(), lines: BoundedMap::never_evicting(max_lines, Box::default()) }
    }

    /// Records that went to the overflow line.
    pub fn overflow_hits(&self) -> u64 {
        self.lines.overflow_hits()
    }

    fn epochs(&self) -> (u64, u64, u64) {
        let s = Instant::now().saturating_duration_since(self.start).as_secs();
        (s / 60 + 1, s / 3600 + 1, s / 86_400 + 1)
    }

    /// Records one call.
    pub fn record(&self, tenant: &str, model: &str, provider: &str, usage: &Usage, cost_micros: u64) {
        let (m, h, d) = self.epochs();
        let probe = (tenant, model, provider);
        self.lines.with_matching(
            &probe,
            |k| (&*k.0, &*k.1, &*k.2) == probe,
            || ((tenant.into(), model.into(), provider.into()), Box::default()),
            |_| false,
            |e| {
                e.totals.add(usage, cost_micros);
                e.changed = true;
                bump(&mut e.minutes, m, usage, cost_micros);
                bump(&mut e.hours, h, usage, cost_micros);
                bump(&mut e.days, d, usage, cost_micros);
            },
        );
    }

    /// The lines whose totals changed since the last call, with their totals
    /// now: what a persistent copy writes (the SQLite state writes them every
    /// second). The overflow line is not included.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use llm_tower_tokens::{Ledger, Usage};
    /// let ledger = Ledger::default();
    /// ledger.record("acme", "gpt-4o", "openai", &Usage { input: 10, ..Default::default() }, 25);
    /// let lines = ledger.drain_changed();
    /// assert_eq!((&*lines[0].tenant, lines[0].totals.cost_micros), ("acme", 25));
    /// assert!(ledger.drain_changed().is_empty(), "nothing new since");
    /// # }
    /// ```
    pub fn drain_changed(&self) -> Vec<LedgerLine> {
        let mut out = Vec::new();
        self.lines.retain(|(tenant, model, provider), e| {
            if e.changed {
                e.changed = false;
                out.push(LedgerLine {
                    tenant: tenant.clone(),
                    model: model.clone(),
                    provider: provider.clone(),
                    totals: e.totals,
                });
            }
            true
        });
        out
    }

    /// Sets a line's totals from a persistent copy (at start, before
    /// requests). Its minute, hour and day series start empty.
    pub fn restore(&self, line: &LedgerLine) {
        let probe = (&*line.tenant, &*line.model, &*line.provider);
        self.lines.with_matching(
            &probe,
            |k| (&*k.0, &*k.1, &*k.2) == probe,
            || ((line.tenant.clone(), line.model.clone(), line.provider.clone()), Box::default()),
            |_| false,
            |e| e.totals = line.totals,
        );
    }

    /// Every line, sorted by tenant then model (the overflow line, if used, too).
    pub fn entries(&self) -> Vec<LedgerEntry> {
        let (m, h, d) = self.epochs();
        let line = |t: &str, model: &str, provider: &str, e: &Entry| LedgerEntry {
            tenant: t.to_owned(),
            model: model.to_owned(),
            provider: provider.to_owned(),
            total: e.totals,
            last_hour: window(&e.minutes, m),
            last_day: window(&e.hours, h),
            last_30_days: window(&e.days, d),
        };
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        self.lines.for_each(|(t, model, provider), e| out.push(line(t, model, provider, e)));
        self.lines.with_overflow(|e| {
            if e.totals.requests > 0 {
                out.push(line(OVERFLOW, OVERFLOW, OVERFLOW, e));
            }
        });
        out.sort_by(|a, b| (&a.tenant, &a.model, &a.provider).cmp(&(&b.tenant, &b.model, &b.provider)));
        out
    }

    /// One line's usage per minute, hour and day.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use llm_tower_tokens::{Ledger, Usage};
    /// let ledger = Ledger::default();
    /// ledger.record("acme", "gpt-4o", "openai", &Usage { input: 10, ..Default::default() }, 25);
    /// let s = ledger.series("acme", "gpt-4o", "openai").unwrap();
    /// assert_eq!(s.minutes.len(), 60);
    /// assert_eq!(s.minutes[59].cost_micros, 25);
    /// # }
    /// ```
    pub fn series(&self, tenant: &str, model: &str, provider: &str) -> Option<Series> {
        let (m, h, d) = self.epochs();
        let probe = (tenant, model, provider);
        self.lines.get_matching(
            &probe,
            |k| (&*k.0, &*k.1, &*k.2) == probe,
            |e| {
                e.map(|e| Series {
                    minutes: buckets(&e.minutes, m),
                    hours: buckets(&e.hours, h),
                    days: buckets(&e.days, d),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn past_its_bound_the_ledger_adds_to_one_overflow_line() {
        let l = Ledger::new(64);
        let u = Usage { input: 10, output: 1, ..Default::default() };
        for i in 0..10_000 {
            l.record(&format!("t{i}"), "m", "p", &u, 3);
        }
        let entries = l.entries();
        assert_eq!(entries.len(), 65, "64 lines and the overflow line");
        let total: u64 = entries.iter().map(|e| e.total.cost_micros).sum();
        assert_eq!(total, 30_000, "no spend lost");
        let over = entries.iter().find(|e| e.tenant == OVERFLOW).unwrap();
        assert_eq!(over.total.requests, 10_000 - 64);
        assert_eq!(l.overflow_hits(), 10_000 - 64);
    }

    #[tokio::test(start_paused = true)]
    async fn windows_forget_old_usage() {
        let l = Ledger::default();
        let u = Usage { input: 100, output: 10, ..Default::default() };
        l.record("a", "m", "p", &u, 5);
        tokio::time::advance(Duration::from_secs(3600)).await;
        l.record("a", "m", "p", &u, 5);
        let e = &l.entries()[0];
        assert_eq!(e.total.requests, 2);
        assert_eq!(e.last_hour.requests, 1, "the first call is over an hour old");
        assert_eq!(e.last_day.requests, 2);
        assert_eq!(e.last_day.cost_micros, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn series_puts_each_call_in_its_bucket() {
        let l = Ledger::default();
        let u = Usage { input: 1, ..Default::default() };
        l.record("a", "m", "p", &u, 1);
        tokio::time::advance(Duration::from_secs(120)).await;
        l.record("a", "m", "p", &u, 2);
        l.record("a", "m", "q", &u, 4);
        let s = l.series("a", "m", "p").unwrap();
        let cost: Vec<u64> = s.minutes.iter().map(|t| t.cost_micros).collect();
        assert_eq!(&cost[56..], &[0, 1, 0, 2], "two minutes apart, the current one last");
        assert_eq!(s.hours[23].cost_micros, 3);
        assert_eq!(s.days[29].requests, 2);
        assert_eq!(
            l.series("a", "m", "q").unwrap().minutes[59].cost_micros,
            4,
            "providers are separate lines"
        );
        assert!(l.series("a", "m", "r").is_none());
        // An hour later the minute buckets have rolled over.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(l.series("a", "m", "p").unwrap().minutes.iter().all(|t| t.requests == 0));
    }
}
