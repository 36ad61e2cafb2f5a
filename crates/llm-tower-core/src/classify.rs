//! Outcome classification: success, the caller's fault, or an upstream failure
//! (and whether to retry it, and after how long).
//!
//! Retry, circuit breaker and failover layers all ask one [`Classify`]
//! implementation, so they agree on what a failure is. [`LlmClassifier`] is the
//! default for LLM HTTP APIs; [`GrpcClassifier`] reads `grpc-status` and shows the
//! layers work for any HTTP service. Both also implement tower-http's
//! [`ClassifyResponse`], so they drive `tower_http::trace::TraceLayer`, and
//! [`FromTowerHttp`] lets any tower-http classifier drive our layers.

use std::error::Error as StdError;
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Response, StatusCode};
use tower_http::classify::{ClassifiedResponse, ClassifyEos, ClassifyResponse};

use crate::error::{
    CircuitOpen, Connect, InvalidRequest, ModelNotFound, PayloadTooLarge, RateLimited, StreamAborted,
    Timeout, Transport,
};
use crate::hint::{RetryHint, retry_hint};

/// The class of an outcome.
///
/// ```
/// use llm_tower_core::classify::OutcomeClass;
/// assert_ne!(OutcomeClass::ClientError, OutcomeClass::UpstreamFailure);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeClass {
    /// The call succeeded.
    Success,
    /// The request was at fault (400, 401, 404, 422, ...): never retried,
    /// never counted against the upstream, never failed over.
    ClientError,
    /// The upstream failed (5xx, 429, timeouts, connection errors).
    UpstreamFailure,
    /// One of our own layers refused the call (a local limit): not the
    /// upstream's fault and not the caller's request's fault.
    Rejected,
}

/// The classification of one outcome.
///
/// ```
/// use llm_tower_core::classify::{Classification, OutcomeClass};
/// let c = Classification::success();
/// assert_eq!(c.class, OutcomeClass::Success);
/// assert!(!c.retryable && !c.is_upstream_failure());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Classification {
    /// What kind of outcome this is.
    pub class: OutcomeClass,
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// The server's hint of when to try again.
    pub hint: Option<RetryHint>,
}

impl Classification {
    /// A success.
    pub fn success() -> Self {
        Self { class: OutcomeClass::Success, retryable: false, hint: None }
    }
    /// The caller's fault.
    ///
    /// ```
    /// assert!(!llm_tower_core::classify::Classification::client_error().retryable);
    /// ```
    pub fn client_error() -> Self {
        Self { class: OutcomeClass::ClientError, retryable: false, hint: None }
    }
    /// An upstream failure, retryable or not.
    ///
    /// ```
    /// assert!(llm_tower_core::classify::Classification::upstream_failure(true).retryable);
    /// ```
    pub fn upstream_failure(retryable: bool) -> Self {
        Self { class: OutcomeClass::UpstreamFailure, retryable, hint: None }
    }
    /// A refusal by one of our own layers.
    ///
    /// ```
    /// let c = llm_tower_core::classify::Classification::rejected();
    /// assert!(!c.is_upstream_failure());
    /// ```
    pub fn rejected() -> Self {
        Self { class: OutcomeClass::Rejected, retryable: false, hint: None }
    }
    /// Whether the upstream is to blame (what a circuit breaker counts).
    pub fn is_upstream_failure(&self) -> bool {
        self.class == OutcomeClass::UpstreamFailure
    }
    /// The hinted delay, if any.
    ///
    /// ```
    /// assert!(llm_tower_core::classify::Classification::success().retry_after().is_none());
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        self.hint.map(|h| h.after)
    }
}

/// The result of classifying a response head.
///
/// ```
/// use llm_tower_core::classify::{Classified, Classify, LlmClassifier};
/// let res = http::Response::builder().status(503).body(()).unwrap();
/// match LlmClassifier::default().classify_response(&res) {
///     Classified::Ready(c) => assert!(c.retryable),
///     Classified::AtEnd => unreachable!("HTTP statuses are known from the head"),
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classified {
    /// Known from the head.
    Ready(Classification),
    /// Known only at the end of the body (gRPC trailers): call
    /// [`Classify::classify_end`] with the trailers.
    AtEnd,
}

/// Decides what an outcome means. Cheap to clone; shared by every layer.
pub trait Classify: Clone + Send + Sync + 'static {
    /// Classifies a response head.
    fn classify_response<B>(&self, res: &Response<B>) -> Classified;

    /// Classifies the end of a body whose head said [`Classified::AtEnd`].
    fn classify_end(&self, trailers: Option<&HeaderMap>) -> Classification {
        let _ = trailers;
        Classification::success()
    }

    /// Classifies an error returned instead of a response.
    fn classify_error(&self, err: &(dyn StdError + 'static)) -> Classification;
}

/// The default classifier for LLM HTTP APIs.
///
/// - 2xx: success.
/// - 408, 409, 429, 500, 502, 503, 504, 529 (the retryable set, configurable):
///   upstream failure, retryable, with the server's retry hint.
/// - other 5xx (and 1xx/3xx): upstream failure, not retryable.
/// - other 4xx: the caller's fault.
/// - `x-should-retry: true|false` overrides retryability (as OpenAI's SDKs do).
/// - errors: timeouts, connect and transport errors are retryable upstream
///   failures; a broken stream is an upstream failure too late to retry; our
///   own request errors are the caller's fault.
///
/// ```
/// use llm_tower_core::classify::{Classified, Classify, LlmClassifier, OutcomeClass};
/// let c = LlmClassifier::default();
/// let res = http::Response::builder().status(429).header("retry-after", "2").body(()).unwrap();
/// let Classified::Ready(out) = c.classify_response(&res) else { unreachable!() };
/// assert_eq!(out.class, OutcomeClass::UpstreamFailure);
/// assert_eq!(out.retry_after(), Some(std::time::Duration::from_secs(2)));
/// ```
#[derive(Clone, Debug)]
pub struct LlmClassifier {
    retryable: Arc<[u16]>,
}

/// The statuses [`LlmClassifier`] retries by default.
pub const DEFAULT_RETRYABLE: [u16; 8] = [408, 409, 429, 500, 502, 503, 504, 529];

impl Default for LlmClassifier {
    fn default() -> Self {
        Self { retryable: Arc::from(&DEFAULT_RETRYABLE[..]) }
    }
}

impl LlmClassifier {
    /// A classifier that treats exactly `statuses` as retryable.
    ///
    /// ```
    /// use llm_tower_core::classify::{Classified, Classify, LlmClassifier};
    /// let c = LlmClassifier::with_retryable([503]);
    /// let res = http::Response::builder().status(500).body(()).unwrap();
    /// assert!(matches!(c.classify_response(&res), Classified::Ready(x) if !x.retryable));
    /// ```
    pub fn with_retryable(statuses: impl IntoIterator<Item = u16>) -> Self {
        Self { retryable: statuses.into_iter().collect() }
    }

    /// Classifies a status and headers.
    pub fn classify_head(&self, status: StatusCode, headers: &HeaderMap) -> Classification {
        let mut c = if status.is_success() {
            return Classification::success();
        } else if self.retryable.contains(&status.as_u16()) {
            Classification::upstream_failure(true)
        } else if status.is_client_error() {
            Classification::client_error()
        } else {
            Classification::upstream_failure(false)
        };
        match headers.get("x-should-retry").map(|v| v.as_bytes()) {
            Some(b"true") => c.retryable = true,
            Some(b"false") => c.retryable = false,
            _ => {}
        }
        if c.class == OutcomeClass::UpstreamFailure {
            c.hint = retry_hint(headers, SystemTime::now());
        }
        c
    }
}

/// Classifies errors the same way for every classifier.
fn classify_error_chain(err: &(dyn StdError + 'static)) -> Classification {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<Timeout>()
            || e.is::<Connect>()
            || e.is::<Transport>()
            || e.is::<tower::timeout::error::Elapsed>()
        {
            return Classification::upstream_failure(true);
        }
        if e.is::<crate::EventTooLarge>() {
            return Classification::upstream_failure(false);
        }
        if let Some(bad) = e.downcast_ref::<crate::BadResponse>() {
            return Classification::upstream_failure(bad.retryable());
        }
        if e.is::<StreamAborted>() {
            return Classification::upstream_failure(false);
        }
        if e.is::<InvalidRequest>() || e.is::<ModelNotFound>() || e.is::<PayloadTooLarge>() {
            return Classification::client_error();
        }
        if e.is::<crate::BudgetExceeded>() {
            // Our own budget refused: not the upstream's fault, and retrying cannot help.
            return Classification::rejected();
        }
        if let Some(limited) = e.downcast_ref::<RateLimited>() {
            // Our own limiter refused: never an upstream failure.
            let mut c = Classification::rejected();
            c.hint = limited
                .retry_after
                .map(|after| RetryHint { after, source: crate::hint::HintSource::RetryAfter });
            return c;
        }
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            // Our own breaker refused: not the upstream's fault, nothing to retry now.
            let mut c = Classification::rejected();
            c.hint = open
                .retry_after
                .map(|after| RetryHint { after, source: crate::hint::HintSource::RetryAfter });
            return c;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | TimedOut
                    | BrokenPipe
                    | UnexpectedEof
            ) {
                return Classification::upstream_failure(true);
            }
        }
        cur = e.source();
    }
    Classification::upstream_failure(false)
}

impl Classify for LlmClassifier {
    fn classify_response<B>(&self, res: &Response<B>) -> Classified {
        Classified::Ready(self.classify_head(res.status(), res.headers()))
    }

    fn classify_error(&self, err: &(dyn StdError + 'static)) -> Classification {
        classify_error_chain(err)
    }
}

/// Classifies gRPC responses by `grpc-status`, in the head (trailers-only
/// responses) or in the trailers.
///
/// `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED` and `ABORTED` are
/// retryable upstream failures; `INTERNAL`, `UNKNOWN`, `DATA_LOSS` are
/// non-retryable upstream failures; the rest of the non-OK codes are the
/// caller's fault. A non-200 HTTP status is classified like [`LlmClassifier`].
///
/// ```
/// use llm_tower_core::classify::{Classified, Classify, GrpcClassifier, OutcomeClass};
/// let res = http::Response::builder().header("grpc-status", "14").body(()).unwrap();
/// let Classified::Ready(c) = GrpcClassifier.classify_response(&res) else { unreachable!() };
/// assert_eq!(c.class, OutcomeClass::UpstreamFailure);
/// assert!(c.retryable);
///
/// let streaming = http::Response::builder().body(()).unwrap();
/// assert_eq!(GrpcClassifier.classify_response(&streaming), Classified::AtEnd);
/// let mut trailers = http::HeaderMap::new();
/// trailers.insert("grpc-status", "3".parse().unwrap());
/// assert_eq!(GrpcClassifier.classify_end(Some(&trailers)).class, OutcomeClass::ClientError);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcClassifier;

impl GrpcClassifier {
    /// Classifies a gRPC status code.
    ///
    /// ```
    /// assert!(llm_tower_core::classify::GrpcClassifier::classify_code(8).retryable);
    /// ```
    pub fn classify_code(code: u32) -> Classification {
        match code {
            0 => Classification::success(),
            4 | 8 | 10 | 14 => Classification::upstream_failure(true),
            2 | 13 | 15 => Classification::upstream_failure(false),
            _ => Classification::client_error(),
        }
    }

    fn status_in(headers: &HeaderMap) -> Option<Classification> {
        let code = headers.get("grpc-status")?;
        let code = code.to_str().ok().and_then(|c| c.trim().parse::<u32>().ok()).unwrap_or(2);
        let mut c = Self::classify_code(code);
        if c.is_upstream_failure() {
            c.hint = retry_hint(headers, SystemTime::now());
        }
        Some(c)
    }
}

impl Classify for GrpcClassifier {
    fn classify_response<B>(&self, res: &Response<B>) -> Classified {
        if res.status() != StatusCode::OK {
            return Classified::Ready(LlmClassifier::default().classify_head(res.status(), res.headers()));
        }
        match Self::status_in(res.headers()) {
            Some(c) => Classified::Ready(c),
            None => Classified::AtEnd,
        }
    }

    fn classify_end(&self, trailers: Option<&HeaderMap>) -> Classification {
        // A stream that ends without grpc-status broke off: gRPC calls that UNKNOWN.
        trailers.and_then(Self::status_in).unwrap_or_else(|| Self::classify_code(2))
    }

    fn classify_error(&self, err: &(dyn StdError + 'static)) -> Classification {
        classify_error_chain(err)
    }
}

/// End-of-stream classifier handed to tower-http for our classifiers.
#[derive(Clone, Debug)]
pub struct EndClassifier<C>(C);

impl<C: Classify> ClassifyEos for EndClassifier<C> {
    type FailureClass = Classification;

    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Result<(), Classification> {
        let c = self.0.classify_end(trailers);
        if c.class == OutcomeClass::Success { Ok(()) } else { Err(c) }
    }

    fn classify_error<E: Display + 'static>(self, _error: &E) -> Classification {
        Classification::upstream_failure(false)
    }
}

macro_rules! tower_http_bridge {
    ($ty:ty) => {
        /// Lets this classifier drive tower-http middleware (e.g. `TraceLayer`):
        /// use `tower_http::classify::SharedClassifier::new(classifier)`.
        impl ClassifyResponse for $ty {
            type FailureClass = Classification;
            type ClassifyEos = EndClassifier<$ty>;

            fn classify_response<B>(
                self,
                res: &Response<B>,
            ) -> ClassifiedResponse<Classification, Self::ClassifyEos> {
                match Classify::classify_response(&self, res) {
                    Classified::Ready(c) if c.class == OutcomeClass::Success => {
                        ClassifiedResponse::Ready(Ok(()))
                    }
                    Classified::Ready(c) => ClassifiedResponse::Ready(Err(c)),
                    Classified::AtEnd => ClassifiedResponse::RequiresEos(EndClassifier(self)),
                }
            }

            fn classify_error<E: Display + 'static>(self, _error: &E) -> Classification {
                Classification::upstream_failure(true)
            }
        }
    };
}

tower_http_bridge!(LlmClassifier);
tower_http_bridge!(GrpcClassifier);

/// Uses any tower-http response classifier (e.g. `ServerErrorsAsFailures`,
/// `GrpcErrorsAsFailures`) as our [`Classify`]: its failures become upstream
/// failures, retryable when `retry_failures` is set (the default).
///
/// ```
/// use llm_tower_core::classify::{Classified, Classify, FromTowerHttp};
/// use tower_http::classify::ServerErrorsAsFailures;
/// let c = FromTowerHttp::new(ServerErrorsAsFailures::new());
/// let res = http::Response::builder().status(500).body(()).unwrap();
/// assert!(matches!(c.classify_response(&res), Classified::Ready(x) if x.is_upstream_failure()));
/// ```
#[derive(Clone, Debug)]
pub struct FromTowerHttp<C> {
    inner: C,
    retry_failures: bool,
}

impl<C> FromTowerHttp<C> {
    /// Wraps a tower-http classifier.
    pub fn new(inner: C) -> Self {
        Self { inner, retry_failures: true }
    }

    /// Whether its failures are retryable.
    ///
    /// ```
    /// let c = llm_tower_core::classify::FromTowerHttp::new(
    ///     tower_http::classify::ServerErrorsAsFailures::new()).retry_failures(false);
    /// # let _ = c;
    /// ```
    pub fn retry_failures(mut self, retry: bool) -> Self {
        self.retry_failures = retry;
        self
    }
}

impl<C> Classify for FromTowerHttp<C>
where
    C: ClassifyResponse + Clone + Send + Sync + 'static,
{
    fn classify_response<B>(&self, res: &Response<B>) -> Classified {
        match self.inner.clone().classify_response(res) {
            ClassifiedResponse::Ready(Ok(())) => Classified::Ready(Classification::success()),
            ClassifiedResponse::Ready(Err(_)) => {
                Classified::Ready(Classification::upstream_failure(self.retry_failures))
            }
            ClassifiedResponse::RequiresEos(_) => Classified::AtEnd,
        }
    }

    fn classify_end(&self, trailers: Option<&HeaderMap>) -> Classification {
        // tower-http's end classifier comes from a response head: rebuild the
        // head that asked for it (a 200) and ask again.
        let head = Response::new(());
        match self.inner.clone().classify_response(&head) {
            ClassifiedResponse::RequiresEos(eos) => match eos.classify_eos(trailers) {
                Ok(()) => Classification::success(),
                Err(_) => Classification::upstream_failure(self.retry_failures),
            },
            ClassifiedResponse::Ready(Ok(())) => Classification::success(),
            ClassifiedResponse::Ready(Err(_)) => Classification::upstream_failure(self.retry_failures),
        }
    }

    fn classify_error(&self, err: &(dyn StdError + 'static)) -> Classification {
        classify_error_chain(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn head(status: u16, headers: &[(&str, &str)]) -> Classification {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        match Classify::classify_response(&LlmClassifier::default(), &b.body(()).unwrap()) {
            Classified::Ready(c) => c,
            Classified::AtEnd => panic!("http is never AtEnd"),
        }
    }

    #[test]
    fn status_table() {
        use OutcomeClass::*;
        let table: &[(u16, OutcomeClass, bool)] = &[
            (200, Success, false),
            (201, Success, false),
            (400, ClientError, false),
            (401, ClientError, false),
            (403, ClientError, false),
            (404, ClientError, false),
            (422, ClientError, false),
            (408, UpstreamFailure, true),
            (409, UpstreamFailure, true),
            (429, UpstreamFailure, true),
            (500, UpstreamFailure, true),
            (501, UpstreamFailure, false),
            (502, UpstreamFailure, true),
            (503, UpstreamFailure, true),
            (504, UpstreamFailure, true),
            (529, UpstreamFailure, true),
            (505, UpstreamFailure, false),
            (302, UpstreamFailure, false),
        ];
        for &(status, class, retryable) in table {
            let c = head(status, &[]);
            assert_eq!((c.class, c.retryable), (class, retryable), "{status}");
        }
    }

    #[test]
    fn should_retry_overrides() {
        assert!(!head(503, &[("x-should-retry", "false")]).retryable);
        assert!(head(400, &[("x-should-retry", "true")]).retryable);
        assert!(head(501, &[("x-should-retry", "true")]).retryable);
        assert!(head(503, &[("x-should-retry", "maybe")]).retryable);
    }

    #[test]
    fn hints_only_on_failures() {
        assert_eq!(head(429, &[("retry-after", "3")]).retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(head(503, &[("retry-after-ms", "20")]).retry_after(), Some(Duration::from_millis(20)));
        assert_eq!(head(200, &[("retry-after", "3")]).retry_after(), None);
        assert_eq!(head(429, &[("retry-after", "later")]).retry_after(), None);
    }

    #[test]
    fn errors() {
        let c = LlmClassifier::default();
        let timeout = Timeout { phase: crate::TimeoutPhase::Headers, after: Duration::from_secs(1) };
        assert!(Classify::classify_error(&c, &timeout).retryable);
        assert!(Classify::classify_error(&c, &Connect::new("h", "refused")).retryable);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(Classify::classify_error(&c, &reset).retryable);
        let aborted = Classify::classify_error(&c, &StreamAborted::new("x"));
        assert!(aborted.is_upstream_failure() && !aborted.retryable);
        assert_eq!(Classify::classify_error(&c, &InvalidRequest::new("x")).class, OutcomeClass::ClientError);
        let open = CircuitOpen { key: "k".into(), retry_after: Some(Duration::from_secs(3)) };
        let rejected = Classify::classify_error(&c, &open);
        assert_eq!((rejected.class, rejected.retryable), (OutcomeClass::Rejected, false));
        assert_eq!(rejected.retry_after(), Some(Duration::from_secs(3)));
        let limited = RateLimited::new("k", "requests_per_minute", Some(Duration::from_secs(1)));
        assert_eq!(Classify::classify_error(&c, &limited).class, OutcomeClass::Rejected);
        let last = Box::new(Timeout { phase: crate::TimeoutPhase::Total, after: Duration::ZERO });
        assert!(Classify::classify_error(&c, &crate::RetriesExhausted::new(2, last)).is_upstream_failure());
        let other: Box<dyn StdError + Send + Sync> = "boom".into();
        assert_eq!(Classify::classify_error(&c, &*other), Classification::upstream_failure(false));
    }

    #[test]
    fn grpc_codes_and_trailers() {
        let g = GrpcClassifier;
        let http_fail = Response::builder().status(503).body(()).unwrap();
        assert!(matches!(Classify::classify_response(&g, &http_fail), Classified::Ready(c) if c.retryable));
        let ok = Response::builder().header("grpc-status", "0").body(()).unwrap();
        assert_eq!(Classify::classify_response(&g, &ok), Classified::Ready(Classification::success()));
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "14".parse().unwrap());
        assert!(g.classify_end(Some(&t)).retryable);
        t.insert("grpc-status", "13".parse().unwrap());
        assert_eq!(g.classify_end(Some(&t)), Classification::upstream_failure(false));
        assert_eq!(g.classify_end(None), Classification::upstream_failure(false));
        for code in [3, 5, 7, 16] {
            assert_eq!(GrpcClassifier::classify_code(code).class, OutcomeClass::ClientError, "{code}");
        }
    }

    #[test]
    fn tower_http_bridge_both_ways() {
        // Ours drives tower-http.
        let res = Response::builder().status(503).body(()).unwrap();
        match ClassifyResponse::classify_response(LlmClassifier::default(), &res) {
            ClassifiedResponse::Ready(Err(c)) => assert!(c.retryable),
            other => panic!("{:?}", matches!(other, ClassifiedResponse::Ready(Ok(())))),
        }
        let streaming = Response::new(());
        let ClassifiedResponse::RequiresEos(eos) =
            ClassifyResponse::classify_response(GrpcClassifier, &streaming)
        else {
            panic!("grpc without status in head needs the trailers")
        };
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "14".parse().unwrap());
        assert!(eos.classify_eos(Some(&t)).is_err());

        // tower-http drives ours.
        let bridged = FromTowerHttp::new(tower_http::classify::GrpcErrorsAsFailures::new());
        assert_eq!(Classify::classify_response(&bridged, &Response::new(())), Classified::AtEnd);
        assert!(bridged.classify_end(Some(&t)).is_upstream_failure());
        t.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(bridged.classify_end(Some(&t)).class, OutcomeClass::Success);
    }
}
