//! Time limits of one upstream call, by phase.

use super::*;

/// Time limits of one upstream call, by phase. The connect limit lives in
/// [`ClientConfig`](crate::ClientConfig). Each expiry is a typed
/// [`Timeout`] naming its phase.
///
/// ```
/// use std::time::Duration;
/// let t = llm_tower_http::Timeouts { idle: Some(Duration::from_secs(30)), ..Default::default() };
/// assert_eq!(t.total, Some(Duration::from_secs(600)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Until the response head (time to first byte). Non-streamed answers
    /// arrive only when generation ends, so keep this generous; it also bounds
    /// reading a non-streamed answer whole. Default 120 s (a long non-streamed
    /// answer from a slow reasoning model can need more: raise it, or stream).
    pub headers: Option<Duration>,
    /// Between two body chunks: a stalled stream is cut. Default 120 s.
    pub idle: Option<Duration>,
    /// The whole call, body included. Default 600 s (the OpenAI SDK's).
    pub total: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            headers: Some(Duration::from_secs(120)),
            idle: Some(Duration::from_secs(120)),
            total: Some(Duration::from_secs(600)),
        }
    }
}

impl Timeouts {
    /// No limits at all.
    ///
    /// ```
    /// assert_eq!(llm_tower_http::Timeouts::none().total, None);
    /// ```
    pub fn none() -> Self {
        Self { headers: None, idle: None, total: None }
    }
}
