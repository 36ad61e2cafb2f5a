//! The HTTP service's sections of a configuration file (`[client]`,
//! `[providers.timeouts]`, a provider's `kind`), behind the `serde` feature.

use std::time::Duration;

use serde::Deserialize;

use crate::{ClientConfig, Timeouts};

/// `[client]`: the upstream connection pool shared by all providers.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSection {
    /// Connect timeout (TCP + TLS), ms. Default 10000.
    pub connect_timeout_ms: Option<u64>,
    /// Idle pooled connections are closed after this long, s. Default 90.
    pub pool_idle_timeout_secs: Option<u64>,
    /// Idle connections kept per host. Default 512.
    pub pool_max_idle_per_host: Option<usize>,
    /// Connections per upstream host at most. Default unlimited.
    pub max_connections_per_host: Option<usize>,
    /// DNS cache TTL, s. Default 30.
    pub dns_ttl_secs: Option<u64>,
    /// Speak HTTP/2 only (also cleartext h2c). Default false.
    pub http2_only: Option<bool>,
}

impl ClientSection {
    /// The client configuration this section describes.
    pub fn to_client_config(&self) -> ClientConfig {
        let d = ClientConfig::default();
        ClientConfig {
            connect_timeout: self.connect_timeout_ms.map_or(d.connect_timeout, Duration::from_millis),
            pool_idle_timeout: self.pool_idle_timeout_secs.map_or(d.pool_idle_timeout, Duration::from_secs),
            pool_max_idle_per_host: self.pool_max_idle_per_host.unwrap_or(d.pool_max_idle_per_host),
            max_connections_per_host: self.max_connections_per_host.or(d.max_connections_per_host),
            dns_ttl: self.dns_ttl_secs.map_or(d.dns_ttl, Duration::from_secs),
            http2_only: self.http2_only.unwrap_or(d.http2_only),
            ..d
        }
    }
}

/// The kind of a provider entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKindConfig {
    /// OpenAI, or any OpenAI-compatible endpoint given by `base_url`.
    Openai,
    /// Azure OpenAI: `base_url` is the resource endpoint, `api_version` required.
    Azure,
    /// Anthropic (chat completions translated to Messages).
    Anthropic,
    /// Google Gemini (default `https://generativelanguage.googleapis.com/v1beta`;
    /// chat completions translated to generateContent).
    Gemini,
    /// The built-in mock provider, started in-process.
    Mock,
    /// Ollama (default `http://127.0.0.1:11434/v1`).
    Ollama,
    /// vLLM (`base_url` required).
    Vllm,
    /// Groq.
    Groq,
    /// Together AI.
    Together,
    /// OpenRouter.
    Openrouter,
    /// Mistral.
    Mistral,
}

/// `[providers.timeouts]`, milliseconds; `0` disables a limit.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    /// Until the response head (and, for a non-streamed answer, until it is
    /// read whole). Also the provider's default retry deadline. Default 120000.
    pub headers_ms: Option<u64>,
    /// Between body chunks. Default 120000.
    pub idle_ms: Option<u64>,
    /// Whole call. Default 600000.
    pub total_ms: Option<u64>,
}

impl TimeoutsSection {
    /// The timeouts this section describes.
    pub fn to_timeouts(self) -> Timeouts {
        let d = Timeouts::default();
        let pick = |v: Option<u64>, def: Option<Duration>| match v {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => def,
        };
        Timeouts {
            headers: pick(self.headers_ms, d.headers),
            idle: pick(self.idle_ms, d.idle),
            total: pick(self.total_ms, d.total),
        }
    }
}
