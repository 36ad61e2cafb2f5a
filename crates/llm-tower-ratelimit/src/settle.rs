//! The response path: refunds, the provider's own rate-limit hints, the limit headers and the settlement with real usage when the body ends.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use llm_tower_core::Key;
use llm_tower_core::response::{BodyEnd, BodyObserver};
use llm_tower_core::usage::{BodyKind, UsageReport};
use tokio::sync::OwnedSemaphorePermit;

use crate::limits::Rates;
use crate::store::{Adjustment, Grant, RateLimitStore};

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

/// Appends `n`'s decimal digits to `out` (no formatting machinery on the
/// response path).
fn push_digits(out: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// `reset` as `"<n>ms"` appended to `out`.
fn push_millis(out: &mut BytesMut, reset: Duration) {
    push_digits(out, reset.as_millis().min(u128::from(u64::MAX)) as u64);
    out.extend_from_slice(b"ms");
}

/// A value cut from the response's one buffer of header text (digits and
/// `ms`: always a valid value).
fn cut(text: &Bytes, range: std::ops::Range<usize>) -> HeaderValue {
    HeaderValue::from_maybe_shared(text.slice(range)).unwrap_or_else(|_| HeaderValue::from_static("0"))
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

pub(crate) fn set_headers(
    h: &mut HeaderMap,
    g: &Grant,
    rates: &Rates,
    made: &LimitValues,
    above: QuotaHeadersAbove,
) {
    // A quota a limiter above will write over is not written here.
    let quotas = [
        (g.requests(rates).filter(|_| !above.requests), &REQUESTS, &made.requests),
        (g.tokens(rates).filter(|_| !above.tokens), &TOKENS, &made.tokens),
    ];
    if quotas.iter().all(|(q, _, _)| q.is_none()) {
        return;
    }
    // Room for all of them at once: at most one growth of the map (a
    // limiter below left these quotas to this one, so they are new here;
    // replacing an upstream's own takes less, a room check more).
    h.reserve(3 * quotas.iter().filter(|(q, _, _)| q.is_some()).count());
    // The per-response values (remaining, reset) written into one buffer and
    // cut from it: two allocations for all four, not two each.
    let mut text = BytesMut::with_capacity(64);
    let mut ranges = [(0..0, 0..0), (0..0, 0..0)];
    for ((q, _, _), r) in quotas.iter().zip(&mut ranges) {
        if let Some(q) = q {
            let start = text.len();
            push_digits(&mut text, q.remaining);
            let mid = text.len();
            push_millis(&mut text, q.reset);
            *r = (start..mid, mid..text.len());
        }
    }
    let text = text.freeze();
    for ((q, [limit, remaining, reset], made), (rem, res)) in quotas.iter().zip(ranges) {
        if let Some(q) = q {
            // A quota's limit is its rate's, made once with the profile.
            let value = (*made).clone().unwrap_or_else(|| HeaderValue::from(q.limit));
            h.insert(limit.clone(), value);
            h.insert(remaining.clone(), cut(&text, rem));
            h.insert(reset.clone(), cut(&text, res));
        }
    }
}

/// Which `x-ratelimit-*` quotas a rate limiter above this one will write on
/// a successful answer (a tenant's limiter above a provider's), read from
/// the request's extensions. A limiter below leaves those to it instead of
/// writing values that would be replaced: the answer's headers are the same,
/// with half the header writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QuotaHeadersAbove {
    pub(crate) requests: bool,
    pub(crate) tokens: bool,
}

/// The extension marks: zero-sized, so marking a request allocates nothing.
#[derive(Clone, Copy)]
struct RequestsAbove;
#[derive(Clone, Copy)]
struct TokensAbove;

impl QuotaHeadersAbove {
    /// What the limiters above `req` write; then marks `req` with what a
    /// limiter with `rates` writes too, for the limiters below it.
    pub(crate) fn take_and_mark<B>(req: &mut http::Request<B>, rates: &Rates) -> Self {
        let x = req.extensions_mut();
        let above = QuotaHeadersAbove {
            requests: x.get::<RequestsAbove>().is_some(),
            tokens: x.get::<TokensAbove>().is_some(),
        };
        if rates.rpm.is_some() && !above.requests {
            x.insert(RequestsAbove);
        }
        if rates.tpm.is_some() && !above.tokens {
            x.insert(TokensAbove);
        }
        above
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
            let mut out = BytesMut::new();
            push_millis(&mut out, d);
            assert_eq!(&out[..], text.as_bytes());
        }
    }

    #[test]
    fn digits_are_decimal() {
        for n in [0, 7, 10, 999, 1_000_000, u64::MAX] {
            let mut out = BytesMut::from(&b"x"[..]);
            push_digits(&mut out, n);
            assert_eq!(&out[1..], n.to_string().as_bytes());
        }
    }
}
