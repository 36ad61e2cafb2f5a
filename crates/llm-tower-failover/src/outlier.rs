//! Outliers: a backend whose recent errors or latency stand out from the
//! route's others takes a smaller share of the requests that would go to it.
//!
//! Passive health's `failures_to_down` reacts to a backend that fails every
//! call; a backend failing one call in three never fails five in a row, yet
//! every third request pays a failed call for it. The share here reacts within
//! a few requests (the success rate is an EWMA weighting the newest outcome
//! 0.1: two failures in a row halve the share, three take it to about a
//! quarter) and only relative to the others: when every backend of a route
//! fails alike, none is demoted (there is nowhere better to go).

/// How far a backend's success rate may trail the route's best before it
/// stands out.
const ERROR_SLACK: f64 = 0.1;
/// How many times the route's fastest a backend's latency may be before it
/// stands out (LLM latency varies with the prompt; only a large gap counts).
const LATENCY_SLACK: f64 = 3.0;
/// And by at least this much, seconds: between fast answers (a cache, a
/// local model) a ratio means nothing.
const LATENCY_MARGIN: f64 = 0.05;
/// The smallest share: an outlier still gets some requests, so its estimate
/// follows it when it recovers.
pub(crate) const MIN_OUTLIER_SHARE: f64 = 0.05;

/// The share of its requests a backend keeps given its success score and
/// latency and the best of the route's usable backends (1: not an outlier).
///
/// - Errors: once the score trails the best by more than `ERROR_SLACK`, the
///   share is `(score / best)⁴` (a backend failing 30 % of calls next to a
///   healthy one keeps about a quarter).
/// - Latency (seconds; `None` for a backend not measured yet, which is never
///   compared): beyond `LATENCY_SLACK` times the fastest and 50 ms slower,
///   the share falls in proportion (`3 × fastest / latency`).
pub(crate) fn share(score: f64, best_score: f64, latency: Option<f64>, fastest: f64) -> f64 {
    let mut share = 1.0;
    if best_score - score > ERROR_SLACK && best_score > 0.0 {
        share *= (score / best_score).clamp(0.0, 1.0).powi(4);
    }
    if let Some(latency) = latency
        && fastest.is_finite()
        && latency > LATENCY_SLACK * fastest
        && latency - fastest > LATENCY_MARGIN
    {
        share *= LATENCY_SLACK * fastest / latency;
    }
    share.max(MIN_OUTLIER_SHARE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_stands_out_is_demoted() {
        assert_eq!(share(0.95, 1.0, Some(0.2), 0.2), 1.0, "within the slack");
        assert_eq!(share(0.5, 0.55, Some(0.2), 0.2), 1.0, "every backend failing alike: no outlier");
        let s = share(0.7, 1.0, Some(0.2), 0.2);
        assert!((s - 0.2401).abs() < 1e-9, "{s}");
        let slow = share(1.0, 1.0, Some(0.9), 0.1);
        assert!((slow - 1.0 / 3.0).abs() < 1e-9, "9x the fastest keeps a third: {slow}");
        assert_eq!(share(1.0, 1.0, Some(0.25), 0.1), 1.0, "2.5x the fastest is not an outlier");
        assert_eq!(share(1.0, 1.0, Some(0.008), 0.001), 1.0, "8 ms next to 1 ms is not an outlier");
        assert_eq!(share(1.0, 1.0, None, 0.1), 1.0, "not measured yet: not compared");
        assert_eq!(share(0.0, 1.0, Some(0.1), 0.1), MIN_OUTLIER_SHARE, "never below the floor");
    }

    #[test]
    fn a_few_failures_in_a_row_are_enough() {
        // The EWMA after k failures in a row from a clean record: 0.9^k.
        let after = |k: i32| share(0.9f64.powi(k), 1.0, Some(0.1), 0.1);
        assert_eq!(after(1), 1.0, "one failure is noise");
        assert!(after(2) < 0.5, "{}", after(2));
        assert!(after(3) < 0.3, "{}", after(3));
    }
}
