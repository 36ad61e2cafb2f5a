//! The wire form of every error: status, OpenAI error fields and hints.

use super::*;

/// What an error maps to on the wire: status, OpenAI error fields, hints.
///
/// ```
/// use llm_tower_core::{ErrorInfo, ModelNotFound};
/// let err: tower::BoxError = Box::new(ModelNotFound::new("x"));
/// let info = ErrorInfo::from_error(&*err);
/// assert_eq!(info.status, http::StatusCode::NOT_FOUND);
/// assert_eq!(info.code, Some("model_not_found"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorInfo {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI error `type`.
    pub kind: &'static str,
    /// OpenAI error `code`.
    pub code: Option<&'static str>,
    /// Message for the caller.
    pub message: String,
    /// Offending parameter.
    pub param: Option<String>,
    /// Sent as `retry-after` (whole seconds, rounded up) and `retry-after-ms`.
    pub retry_after: Option<Duration>,
    /// Sent as `x-should-retry`, which OpenAI SDKs obey.
    pub should_retry: Option<bool>,
}

impl ErrorInfo {
    /// An error description from its parts.
    ///
    /// ```
    /// let i = llm_tower_core::ErrorInfo::new(http::StatusCode::NOT_FOUND, "invalid_request_error", "no route");
    /// assert_eq!(i.status.as_u16(), 404);
    /// ```
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            message: message.into(),
            param: None,
            retry_after: None,
            should_retry: None,
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Describes the first error of a known type in `err`'s source chain;
    /// unknown errors map to a bare 500.
    pub fn from_error(err: &(dyn StdError + 'static)) -> Self {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(info) = Self::known(e) {
                return info;
            }
            cur = e.source();
        }
        ErrorInfo::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
            .code("internal_error")
    }

    fn known(e: &(dyn StdError + 'static)) -> Option<Self> {
        if let Some(e) = e.downcast_ref::<InvalidRequest>() {
            let mut i = ErrorInfo::new(StatusCode::BAD_REQUEST, "invalid_request_error", e.to_string());
            i.param = e.param.clone();
            i.code = e.code;
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<InvalidApiKey>() {
            return Some(
                ErrorInfo::new(StatusCode::UNAUTHORIZED, "invalid_request_error", e.to_string())
                    .code("invalid_api_key"),
            );
        }
        if let Some(e) = e.downcast_ref::<ModelNotFound>() {
            return Some(
                ErrorInfo::new(StatusCode::NOT_FOUND, "invalid_request_error", e.to_string())
                    .code("model_not_found"),
            );
        }
        if let Some(e) = e.downcast_ref::<PayloadTooLarge>() {
            return Some(
                ErrorInfo::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", e.to_string())
                    .code("payload_too_large"),
            );
        }
        if let Some(e) = e.downcast_ref::<Timeout>() {
            return Some(
                ErrorInfo::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", e.to_string())
                    .code("upstream_timeout"),
            );
        }
        if e.is::<tower::timeout::error::Elapsed>() {
            return Some(
                ErrorInfo::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", "upstream request timed out")
                    .code("upstream_timeout"),
            );
        }
        if let Some(e) = e.downcast_ref::<Connect>() {
            return Some(
                ErrorInfo::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    format!("could not connect to upstream {}", e.authority),
                )
                .code("upstream_unreachable"),
            );
        }
        if e.is::<Transport>() {
            return Some(
                ErrorInfo::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "upstream connection failed before the response",
                )
                .code("upstream_connection_error"),
            );
        }
        if e.is::<EventTooLarge>() {
            return Some(
                ErrorInfo::new(StatusCode::BAD_GATEWAY, "api_error", e.to_string())
                    .code("upstream_event_too_large"),
            );
        }
        if let Some(e) = e.downcast_ref::<BadResponse>() {
            let code = match e.kind {
                BadResponseKind::Cut => "upstream_response_cut",
                BadResponseKind::TooLarge { .. } => "upstream_response_too_large",
                BadResponseKind::InvalidJson => "upstream_response_invalid",
            };
            return Some(ErrorInfo::new(StatusCode::BAD_GATEWAY, "api_error", e.to_string()).code(code));
        }
        if e.is::<StreamAborted>() {
            return Some(
                ErrorInfo::new(StatusCode::BAD_GATEWAY, "api_error", "upstream response ended abnormally")
                    .code("upstream_stream_aborted"),
            );
        }
        if let Some(e) = e.downcast_ref::<BudgetExceeded>() {
            let mut i = ErrorInfo::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", e.to_string())
                .code("insufficient_quota");
            i.should_retry = Some(false);
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<RateLimited>() {
            let mut i = ErrorInfo::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", e.to_string())
                .code("rate_limit_exceeded");
            i.retry_after = e.retry_after;
            i.should_retry = Some(e.retry_after.is_some());
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<StoreUnavailable>() {
            let mut i = ErrorInfo::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", e.to_string())
                .code("state_store_unavailable");
            i.retry_after = Some(e.retry_after);
            i.should_retry = Some(true);
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<CircuitOpen>() {
            let mut i = ErrorInfo::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                format!("upstream {} is unavailable (circuit open); try again later", e.key),
            )
            .code("circuit_open");
            i.retry_after = e.retry_after;
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<AllBackendsFailed>() {
            let tried: Vec<&BackendAttempt> = e.attempts.iter().filter(|a| !a.skipped).collect();
            let limited = !tried.is_empty() && tried.iter().all(|a| a.status == Some(429));
            let mut i = if limited {
                ErrorInfo::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", e.to_string())
                    .code("all_backends_rate_limited")
            } else if tried.is_empty() {
                ErrorInfo::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", e.to_string())
                    .code("no_backend_available")
            } else {
                ErrorInfo::new(StatusCode::BAD_GATEWAY, "api_error", e.to_string())
                    .code("all_backends_failed")
            };
            i.retry_after = e.attempts.iter().filter_map(|a| a.retry_after).min();
            return Some(i);
        }
        if let Some(e) = e.downcast_ref::<Upstream>() {
            let mut i = ErrorInfo::new(e.status, upstream_kind(e.status), e.message.clone());
            i.retry_after = e.retry_after;
            return Some(i);
        }
        None
    }

    /// The OpenAI-format JSON body.
    ///
    /// ```
    /// let i = llm_tower_core::ErrorInfo::new(http::StatusCode::BAD_REQUEST, "invalid_request_error", "m");
    /// assert_eq!(i.body().error.message, "m");
    /// ```
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(&self.message, self.kind, self.param.as_deref(), self.code)
    }

    /// The HTTP response: JSON body plus `retry-after`, `retry-after-ms` and
    /// `x-should-retry` headers when known.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut i = llm_tower_core::ErrorInfo::new(http::StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "slow");
    /// i.retry_after = Some(Duration::from_millis(1500));
    /// let res = i.into_response();
    /// assert_eq!(res.headers()["retry-after"], "2");
    /// assert_eq!(res.headers()["retry-after-ms"], "1500");
    /// ```
    pub fn into_response(self) -> http::Response<LlmBody> {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut res = http::Response::new(LlmBody::from(body));
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
            h.insert("retry-after-ms", HeaderValue::from(after.as_millis() as u64));
        }
        if let Some(s) = self.should_retry {
            h.insert("x-should-retry", HeaderValue::from_static(if s { "true" } else { "false" }));
        }
        res
    }
}

pub(crate) fn upstream_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Turns any error into an OpenAI-format JSON error response.
///
/// ```
/// use llm_tower_core::{error_response, Timeout, TimeoutPhase};
/// let err: tower::BoxError = Box::new(Timeout { phase: TimeoutPhase::Headers, after: std::time::Duration::from_secs(5) });
/// let res = error_response(&*err);
/// assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
///
/// let unknown: tower::BoxError = "db password=hunter2 rejected".into();
/// let res = error_response(&*unknown);
/// assert_eq!(res.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
/// assert!(!String::from_utf8_lossy(res.body().as_bytes()).contains("hunter2"));
/// ```
pub fn error_response(err: &(dyn StdError + 'static)) -> http::Response<LlmBody> {
    ErrorInfo::from_error(err).into_response()
}
