//! Retry hints sent by providers: `retry-after`, `retry-after-ms`, `x-ratelimit-reset-*`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Where a [`RetryHint`] came from.
///
/// ```
/// use llm_tower_core::hint::HintSource;
/// assert_ne!(HintSource::RetryAfter, HintSource::RetryAfterMs);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HintSource {
    /// `retry-after-ms` (OpenAI, milliseconds).
    RetryAfterMs,
    /// `retry-after` (seconds or an HTTP-date).
    RetryAfter,
    /// `x-ratelimit-reset-requests`.
    ResetRequests,
    /// `x-ratelimit-reset-tokens`.
    ResetTokens,
}

/// How long the server asked us to wait before trying again.
///
/// ```
/// use llm_tower_core::hint::{retry_hint, HintSource};
/// let mut h = http::HeaderMap::new();
/// h.insert("retry-after", "2".parse().unwrap());
/// let hint = retry_hint(&h, std::time::SystemTime::now()).unwrap();
/// assert_eq!(hint.after, std::time::Duration::from_secs(2));
/// assert_eq!(hint.source, HintSource::RetryAfter);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryHint {
    /// The delay asked for.
    pub after: Duration,
    /// The header it came from.
    pub source: HintSource,
}

/// A hint header that could not be read.
///
/// ```
/// assert!(llm_tower_core::hint::parse_retry_after("soon", std::time::SystemTime::now()).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintError {
    value: String,
}

impl std::fmt::Display for HintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed retry hint {:?}", self.value)
    }
}

impl std::error::Error for HintError {}

fn bad(value: &str) -> HintError {
    HintError { value: value.chars().take(64).collect() }
}

/// Longest delay any hint is taken to mean (a day): larger values are clamped.
const MAX_HINT: Duration = Duration::from_secs(86_400);

fn secs_f64(value: &str, secs: f64) -> Result<Duration, HintError> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad(value));
    }
    Ok(Duration::try_from_secs_f64(secs).unwrap_or(MAX_HINT).min(MAX_HINT))
}

/// Is `s` a plain non-negative decimal number (`12`, `1.5`)?
fn decimal(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|&b| b == b'.').count() <= 1
        && s.bytes().any(|b| b.is_ascii_digit());
    if ok { s.parse().ok() } else { None }
}

/// Parses `retry-after`: delay seconds (fractions accepted) or an HTTP-date
/// (a date in the past means zero).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use llm_tower_core::hint::parse_retry_after;
/// assert_eq!(parse_retry_after("120", SystemTime::now()).unwrap(), Duration::from_secs(120));
/// let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now).unwrap(),
///     Duration::from_secs(30),
/// );
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Result<Duration, HintError> {
    let v = value.trim();
    if let Some(secs) = decimal(v) {
        return secs_f64(value, secs);
    }
    let when = httpdate::parse_http_date(v).map_err(|_| bad(value))?;
    Ok(when.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_HINT))
}

/// Parses `retry-after-ms`: milliseconds (fractions accepted).
///
/// ```
/// assert_eq!(llm_tower_core::hint::parse_retry_after_ms("250").unwrap().as_millis(), 250);
/// ```
pub fn parse_retry_after_ms(value: &str) -> Result<Duration, HintError> {
    let ms = decimal(value.trim()).ok_or_else(|| bad(value))?;
    secs_f64(value, ms / 1000.0)
}

/// Parses an `x-ratelimit-reset-*` value: a Go-style duration (`1s`, `6m0s`,
/// `20ms`, `1h2m3.5s`, `100us`) or a bare number of seconds.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_core::hint::parse_reset;
/// assert_eq!(parse_reset("6m0s").unwrap(), Duration::from_secs(360));
/// assert_eq!(parse_reset("20ms").unwrap(), Duration::from_millis(20));
/// ```
pub fn parse_reset(value: &str) -> Result<Duration, HintError> {
    let v = value.trim();
    if let Some(secs) = decimal(v) {
        return secs_f64(value, secs);
    }
    let mut rest = v;
    let mut total = 0.0f64;
    if rest.is_empty() {
        return Err(bad(value));
    }
    while !rest.is_empty() {
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let n = decimal(&rest[..num_len]).ok_or_else(|| bad(value))?;
        rest = &rest[num_len..];
        let unit_len = rest.bytes().take_while(|b| !(b.is_ascii_digit() || *b == b'.')).count();
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad(value)),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    secs_f64(value, total)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The retry hint a response carries, by precedence: `retry-after-ms`, then
/// `retry-after`, then the `x-ratelimit-reset-*` of the exhausted limit (the
/// longer one when neither says it is exhausted). Malformed headers are ignored.
///
/// ```
/// use llm_tower_core::hint::{retry_hint, HintSource};
/// let mut h = http::HeaderMap::new();
/// h.insert("x-ratelimit-remaining-requests", "10".parse().unwrap());
/// h.insert("x-ratelimit-reset-requests", "1s".parse().unwrap());
/// h.insert("x-ratelimit-remaining-tokens", "0".parse().unwrap());
/// h.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
/// let hint = retry_hint(&h, std::time::SystemTime::now()).unwrap();
/// assert_eq!(hint.source, HintSource::ResetTokens);
/// assert_eq!(hint.after.as_secs(), 360);
/// ```
pub fn retry_hint(headers: &HeaderMap, now: SystemTime) -> Option<RetryHint> {
    if let Some(after) = header(headers, "retry-after-ms").and_then(|v| parse_retry_after_ms(v).ok()) {
        return Some(RetryHint { after, source: HintSource::RetryAfterMs });
    }
    if let Some(after) = header(headers, "retry-after").and_then(|v| parse_retry_after(v, now).ok()) {
        return Some(RetryHint { after, source: HintSource::RetryAfter });
    }
    let reset = |kind: &str, source| {
        let after = parse_reset(header(headers, &format!("x-ratelimit-reset-{kind}"))?).ok()?;
        let exhausted = header(headers, &format!("x-ratelimit-remaining-{kind}")).map(|v| v.trim() == "0");
        Some((RetryHint { after, source }, exhausted))
    };
    let candidates = [reset("requests", HintSource::ResetRequests), reset("tokens", HintSource::ResetTokens)];
    let exhausted = candidates.iter().flatten().filter(|(_, e)| *e == Some(true)).map(|(h, _)| *h);
    let any = candidates.iter().flatten().map(|(h, _)| *h);
    exhausted.max_by_key(|h| h.after).or_else(|| any.max_by_key(|h| h.after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap()
    }

    #[test]
    fn retry_after_table() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("2", 2000),
            (" 7 ", 7000),
            ("1.5", 1500),
            ("Sun, 06 Nov 1994 08:49:39 GMT", 2000),
            ("Sun, 06 Nov 1994 08:49:00 GMT", 0),
            ("Sunday, 06-Nov-94 08:49:47 GMT", 10_000),
            ("Sun Nov  6 08:49:57 1994", 20_000),
            ("999999999", 86_400_000),
        ];
        for (v, ms) in ok {
            assert_eq!(parse_retry_after(v, now()).unwrap().as_millis() as u64, *ms, "{v}");
        }
        for v in ["", "-1", "soon", "1.2.3", "12s", "Sun, 32 Nov 1994 08:49:37 GMT", "NaN", "inf", "."] {
            assert!(parse_retry_after(v, now()).is_err(), "{v:?} should be rejected");
        }
    }

    #[test]
    fn retry_after_ms_table() {
        for (v, us) in [("0", 0u64), ("20", 20_000), ("1.5", 1_500), (" 100 ", 100_000)] {
            assert_eq!(parse_retry_after_ms(v).unwrap().as_micros() as u64, us, "{v}");
        }
        for v in ["", "-5", "ms", "20ms", "1e3"] {
            assert!(parse_retry_after_ms(v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn reset_table() {
        let ok: &[(&str, u64)] = &[
            ("1s", 1_000_000),
            ("6m0s", 360_000_000),
            ("20ms", 20_000),
            ("1h2m3.5s", 3_723_500_000),
            ("0.5s", 500_000),
            ("100us", 100),
            ("250µs", 250),
            ("3", 3_000_000),
            ("1.25", 1_250_000),
        ];
        for (v, us) in ok {
            assert_eq!(parse_reset(v).unwrap().as_micros() as u64, *us, "{v}");
        }
        for v in ["", "s", "1x", "1s2", "m5", "-1s", "1..2s", "1 s"] {
            assert!(parse_reset(v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn precedence_and_malformed_fallback() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "10s".parse().unwrap());
        assert_eq!(retry_hint(&h, now()).unwrap().source, HintSource::RetryAfter);
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_hint(&h, now()).unwrap().after, Duration::from_millis(1500));
        h.insert("retry-after-ms", "bogus".parse().unwrap());
        h.insert("retry-after", "bogus".parse().unwrap());
        let hint = retry_hint(&h, now()).unwrap();
        assert_eq!((hint.source, hint.after), (HintSource::ResetRequests, Duration::from_secs(10)));
        assert!(retry_hint(&HeaderMap::new(), now()).is_none());
    }
}
