//! The response path: refunds, the provider's own rate-limit hints, the limit headers and the settlement with real usage when the body ends.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use llm_tower_core::Key;
use llm_tower_core::response::{BodyEnd, BodyObserver};
use llm_tower_core::usage::{BodyKind, UsageReport};
use tokio::sync::OwnedSemaphorePermit;

use crate::limits::Rates;
use crate::store::{Adjustment, Grant, Quota, RateLimitStore};

use crate::shared::*;

pub(crate) fn refund_tokens<St: RateLimitStore>(shared: &Shared<St>, rates: &Rates, key: &Key, tokens: u64) {
    if tokens > 0 && rates.tpm.is_some() {
        shared.store.adjust(key, Adjustment::Tokens { delta: -(tokens as i64), rates: *rates });
    }
}

pub(crate) fn header_num(h: &HeaderMap, name: &HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

pub(crate) fn header_reset(h: &HeaderMap, name: &HeaderName) -> Option<Duration> {
    llm_tower_core::hint::parse_reset(h.get(name)?.to_str().ok()?).ok()
}

/// `x-ratelimit-{limit,remaining,reset}-requests`, built once (no
/// formatting on the response path).
pub(crate) const REQUESTS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
/// `x-ratelimit-{limit,remaining,reset}-tokens`.
pub(crate) const TOKENS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// Learns from the provider's own limit headers.
pub(crate) fn adapt<St: RateLimitStore>(
    shared: &Shared<St>,
    key: &Key,
    status: http::StatusCode,
    h: &HeaderMap,
) {
    if status == http::StatusCode::TOO_MANY_REQUESTS {
        if let Some(hint) = llm_tower_core::hint::retry_hint(h, SystemTime::now()) {
            shared.store.adjust(key, Adjustment::Hold(hint.after));
            return;
        }
    }
    for (kind, names) in [("requests", &REQUESTS), ("tokens", &TOKENS)] {
        let [limit, remaining, reset] = names;
        let remaining = header_num(h, remaining);
        let reset = header_reset(h, reset);
        let limit = header_num(h, limit);
        match (remaining, reset) {
            (Some(0), Some(reset)) => shared.store.adjust(key, Adjustment::Hold(reset)),
            // Nearly out (under 10 % left): spread what remains over the time to reset.
            (Some(r), Some(reset))
                if kind == "requests" && limit.is_some_and(|l| r.saturating_mul(10) < l) =>
            {
                // r >= 1 here; a value past u32 paces at the smallest interval, never divides by 0.
                let interval = reset / u32::try_from(r).unwrap_or(u32::MAX).max(1);
                shared.store.adjust(key, Adjustment::Pace { interval, period: reset });
            }
            _ => {}
        }
    }
}

/// `reset` as `"<n>ms"`, its digits written by hand (no formatting machinery
/// on the response path; the value's one allocation is its bytes).
fn millis(reset: Duration) -> HeaderValue {
    let mut n = reset.as_millis().min(u128::from(u64::MAX)) as u64;
    let mut buf = [0u8; 22];
    let mut at = buf.len() - 2;
    buf[at..].copy_from_slice(b"ms");
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[at..]).expect("digits and ms are a valid header value")
}

/// The `x-ratelimit-limit-*` values of a set of limits, made once (a clone
/// of a made value shares its bytes: no allocation per response).
#[derive(Clone, Debug, Default)]
pub(crate) struct LimitValues {
    pub(crate) requests: Option<HeaderValue>,
    pub(crate) tokens: Option<HeaderValue>,
}

impl LimitValues {
    pub(crate) fn of(rates: &Rates) -> Self {
        LimitValues {
            requests: rates.rpm.map(|r| HeaderValue::from(r.limit())),
            tokens: rates.tpm.map(|r| HeaderValue::from(r.limit())),
        }
    }
}

pub(crate) fn set_headers(h: &mut HeaderMap, g: &Grant, rates: &Rates, made: &LimitValues) {
    // Room for all of them at once: at most one growth of the map.
    h.reserve(3 * (usize::from(rates.rpm.is_some()) + usize::from(rates.tpm.is_some())));
    let mut put = |[limit, remaining, reset]: &[HeaderName; 3], q: &Quota, made: &Option<HeaderValue>| {
        // A quota's limit is its rate's, made once with the profile.
        let value = made.clone().unwrap_or_else(|| HeaderValue::from(q.limit));
        h.insert(limit.clone(), value);
        h.insert(remaining.clone(), HeaderValue::from(q.remaining));
        h.insert(reset.clone(), millis(q.reset));
    };
    if let Some(q) = &g.requests(rates) {
        put(&REQUESTS, q, &made.requests);
    }
    if let Some(q) = &g.tokens(rates) {
        put(&TOKENS, q, &made.tokens);
    }
}

/// Reconciles a request's token reservation with what the response reports.
pub(crate) struct Meter<St: RateLimitStore> {
    pub(crate) shared: Arc<Shared<St>>,
    /// The key's rates (a copy: the key's profile is not kept alive for it).
    pub(crate) rates: Rates,
    pub(crate) key: Key,
    pub(crate) reserved: u64,
    pub(crate) success: bool,
    pub(crate) kind: BodyKind,
}

impl<St: RateLimitStore> Meter<St> {
    fn settle(self, report: Option<&UsageReport>) {
        if !self.success {
            refund_tokens(&self.shared, &self.rates, &self.key, self.reserved);
            return;
        }
        if let Some(u) = report.and_then(|r| r.usage) {
            let delta = (u.total() as i64).saturating_sub(self.reserved as i64);
            if delta != 0 {
                self.shared.store.adjust(&self.key, Adjustment::Tokens { delta, rates: self.rates });
            }
        }
    }
}

/// Observes a call's body: holds its concurrency permit until the body ends
/// and reconciles the token reservation with the usage the body reports (a
/// failure's reservation is refunded).
pub(crate) struct Settle<St: RateLimitStore> {
    pub(crate) meter: Option<Meter<St>>,
    pub(crate) permit: Option<Permit>,
}

/// A call's concurrency permit: this process's semaphore, or a shared
/// store's slot.
#[allow(dead_code)] // held only to be dropped
pub(crate) enum Permit {
    Local(OwnedSemaphorePermit),
    Shared(crate::store::Slot),
}

impl<St: RateLimitStore> BodyObserver for Settle<St> {
    fn wants_usage(&self) -> Option<BodyKind> {
        self.meter.as_ref().filter(|m| m.success).map(|m| m.kind)
    }

    fn on_end(self: Box<Self>, end: &mut BodyEnd) {
        if let Some(m) = self.meter {
            m.settle(end.report.as_ref());
        }
        drop(self.permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_values_are_milliseconds() {
        for (d, text) in [
            (Duration::ZERO, "0ms"),
            (Duration::from_micros(1_500), "1ms"),
            (Duration::from_secs(60), "60000ms"),
            (Duration::MAX, "18446744073709551615ms"),
        ] {
            assert_eq!(millis(d), text);
        }
    }
}
