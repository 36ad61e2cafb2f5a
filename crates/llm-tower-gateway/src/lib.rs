//! llm-tower's OpenAI-compatible gateway, as a library (the binary is a thin
//! `main` over it).
//!
//! - `POST /v1/chat/completions` (JSON and SSE, streamed chunk by chunk),
//!   `POST /v1/embeddings`, `POST /v1/responses`, `POST /v1/messages`
//!   (Anthropic), `GET /v1/models`, `GET /health`.
//! - `GET /metrics` (Prometheus: the layers' counters, request and
//!   time-to-first-token histograms, gauges read from the stack when scraped),
//!   `GET /health/live`, `GET /health/ready` (503 naming the routes with no
//!   usable backend, and while draining for shutdown).
//! - Virtual keys (`[auth] mode = "keys"`, `[[keys]]`): every `/v1` request
//!   authenticated (401 `invalid_api_key`), each key its own tenant with its
//!   own limits, budget and models; with the admin token, `POST /admin/keys`,
//!   `GET /admin/keys`, `PATCH` and `DELETE /admin/keys/{name}`, and `/stats`.
//! - `[state] path`: admin-created keys, budget spend and the usage ledger in
//!   a SQLite file, written every second and at shutdown, restored at start.
//! - `[state] redis_url`: every limiter's state and the admin-created keys
//!   in one Redis shared by the deployment's gateways (`on_redis_error =
//!   "local" | "closed"` while it is down; `/health/ready` and `/stats` show it).
//! - `[traces]` (feature `otlp`): a server span per request and a client
//!   span per upstream attempt, OTLP/HTTP JSON to a collector, W3C
//!   `traceparent` continued and sent upstream.
//! - Models are routed to providers by a TOML config ([`GatewayConfig`]);
//!   without one it runs on [`DEFAULT_CONFIG`]: an in-process mock provider.
//! - Every failure is an OpenAI-format JSON error with the right status; a
//!   stream that breaks mid-way ends with an SSE `error` event.
//! - One access-log line per request (tracing, OpenTelemetry GenAI field
//!   names), never a credential.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = llm_tower_gateway::GatewayConfig::embedded_default();
//! let gw = llm_tower_gateway::Gateway::new(cfg).await?;
//! assert!(gw.models().contains(&"fast".to_string()));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod admin;
mod app;
mod keys;
mod net;
mod observe;
#[cfg(feature = "otlp")]
mod traces;

/// The configuration (the facade's [`llm_tower::config`], shared with library users).
pub mod config {
    pub use llm_tower::config::*;
}

pub use app::{Gateway, StartError};
pub use config::{ConfigError, DEFAULT_CONFIG};
pub use net::listen;

/// The gateway's configuration: the stack's ([`config::StackConfig`]).
pub type GatewayConfig = llm_tower::config::StackConfig;
