//! Mock configuration: models, latency, limits, faults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the mock behaves. `MockConfig::default()` answers at once, without
/// faults or limits, for the models `gpt-4o-mini`, `gpt-4o`, `text-embedding-3-small`,
/// `claude-3-5-haiku-latest` and `gemini-2.0-flash`.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_mock::{Latency, MockConfig};
/// let cfg = MockConfig {
///     latency: Latency { headers: Duration::from_millis(200), per_token: Duration::from_millis(20) },
///     ..MockConfig::default()
/// };
/// assert_eq!(cfg.reply_tokens, 16);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Seed for generated text, embeddings and random faults.
    pub seed: u64,
    /// Models served (`GET /v1/models`); requests for others get a 404.
    /// Empty: every model name is accepted.
    pub models: Vec<String>,
    /// Latency model.
    pub latency: Latency,
    /// Tokens in each answer (capped by the request's `max_tokens`).
    pub reply_tokens: u32,
    /// Dimensions of generated embeddings.
    pub embedding_dims: usize,
    /// Per-minute request and token limits, enforced like a provider's.
    pub limits: Option<MockLimits>,
    /// When set, requests must carry this key (`Authorization: Bearer`,
    /// `x-api-key` or `api-key`), else 401.
    pub require_key: Option<String>,
    /// The fault plan.
    pub faults: FaultPlan,
    /// How many requests the log keeps (oldest dropped first).
    pub log_capacity: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            models: [
                "gpt-4o-mini",
                "gpt-4o",
                "text-embedding-3-small",
                "claude-3-5-haiku-latest",
                "gemini-2.0-flash",
            ]
            .map(String::from)
            .to_vec(),
            latency: Latency::default(),
            reply_tokens: 16,
            embedding_dims: 8,
            limits: None,
            require_key: None,
            faults: FaultPlan::None,
            log_capacity: 10_000,
        }
    }
}

/// Latency model: time to the response head (time to first token for a stream),
/// then a delay per generated token. A JSON answer arrives after both.
///
/// ```
/// assert_eq!(llm_tower_mock::Latency::default().per_token, std::time::Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// Delay before the response head.
    #[serde(with = "millis")]
    pub headers: Duration,
    /// Delay per generated token.
    #[serde(with = "millis")]
    pub per_token: Duration,
}

/// Provider-style limits, per minute, refilled continuously.
///
/// ```
/// let l = llm_tower_mock::MockLimits { rpm: 60, tpm: 10_000 };
/// assert_eq!(l.rpm, 60);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockLimits {
    /// Requests per minute.
    pub rpm: u32,
    /// Tokens per minute (prompt estimate plus requested output).
    pub tpm: u32,
}

/// One injected fault.
///
/// ```
/// let f: llm_tower_mock::Fault = serde_json::from_str(r#"{"kind":"status","status":503}"#).unwrap();
/// assert_eq!(f, llm_tower_mock::Fault::status(503));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer normally.
    Ok,
    /// Answer with this status and an OpenAI-format error body (and `retry-after`
    /// seconds, when given).
    Status {
        /// HTTP status (429, 500, 502, 503, 529, ...).
        status: u16,
        /// `retry-after` seconds.
        #[serde(default)]
        retry_after: Option<u64>,
        /// The error body's `code` (e.g. `insufficient_quota`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// Extra response headers (`retry-after-ms`, `x-should-retry`, ...).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<(String, String)>,
    },
    /// Answer with this status and an HTML page, as a load balancer or proxy
    /// in front of a provider does.
    HtmlError {
        /// HTTP status (502, 503, ...).
        status: u16,
    },
    /// Answer with this status and an OpenAI-format error body whose message
    /// is padded to about `bytes` bytes (a proxy's long error page, a provider
    /// that echoes the request): tests that error bodies of any size pass whole.
    LargeError {
        /// HTTP status.
        status: u16,
        /// The error body's `code`, written first (so a reader of a prefix sees it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// Approximate body size in bytes.
        bytes: usize,
    },
    /// Reset the TCP connection before sending anything.
    Reset,
    /// Accept the request and never answer.
    Hang,
    /// Send this many tokens of the answer, then break the connection.
    StreamCut {
        /// Tokens sent before the cut.
        after_tokens: u32,
    },
    /// Answer 200 with a truncated, unparsable JSON body (or SSE data).
    MalformedJson,
    /// A stream whose first event never ends: after the role chunk, `bytes`
    /// bytes of one `data:` line with no line break, sent in 64 KiB pieces,
    /// then the connection stays open (tests that readers' buffers are capped).
    EndlessEvent {
        /// Bytes of the never-ending line.
        bytes: usize,
    },
    /// Answer normally but wait this long before each body chunk.
    SlowBody {
        /// Delay per chunk, milliseconds.
        per_chunk_ms: u64,
    },
}

impl Fault {
    /// An error status with no extras.
    ///
    /// ```
    /// assert!(matches!(llm_tower_mock::Fault::status(500), llm_tower_mock::Fault::Status { status: 500, .. }));
    /// ```
    pub fn status(status: u16) -> Self {
        Fault::Status { status, retry_after: None, code: None, headers: Vec::new() }
    }

    /// An error status with `retry-after` seconds.
    ///
    /// ```
    /// let f = llm_tower_mock::Fault::status_retry_after(429, 2);
    /// assert!(matches!(f, llm_tower_mock::Fault::Status { retry_after: Some(2), .. }));
    /// ```
    pub fn status_retry_after(status: u16, secs: u64) -> Self {
        Fault::Status { status, retry_after: Some(secs), code: None, headers: Vec::new() }
    }
}

/// Which fault each request gets.
///
/// ```
/// use llm_tower_mock::{Fault, FaultPlan};
/// let plan = FaultPlan::Script { faults: vec![Fault::Reset, Fault::Ok] };
/// let json = serde_json::to_string(&plan).unwrap();
/// assert!(json.contains("script"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "plan", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultPlan {
    /// No faults.
    #[default]
    None,
    /// The n-th LLM request (counted from when the plan was set) gets the n-th
    /// fault; requests past the end of the script are answered normally.
    Script {
        /// The faults in order.
        faults: Vec<Fault>,
    },
    /// Each LLM request draws a fault: `faults[i]` with probability `weights[i]`
    /// (the remainder answers normally). Seeded by the config's seed.
    Random {
        /// Candidate faults.
        faults: Vec<Fault>,
        /// Their probabilities (sum at most 1).
        weights: Vec<f64>,
    },
    /// Every LLM request gets this fault (an outage).
    Always {
        /// The fault.
        fault: Fault,
    },
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
