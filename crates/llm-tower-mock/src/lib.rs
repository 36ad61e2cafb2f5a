//! A fault-injecting, OpenAI-, Anthropic- and Gemini-compatible mock LLM provider.
//!
//! It is the only upstream llm-tower's tests, examples and benchmarks talk to:
//! a real HTTP/1.1 + HTTP/2 (cleartext) server on loopback that behaves like a
//! provider, including the ways providers fail.
//!
//! - `POST /v1/chat/completions` (JSON and SSE, `stream_options.include_usage`, `n`),
//!   also at Azure's `/openai/deployments/{name}/chat/completions?api-version=..`;
//!   `POST /v1/embeddings`; `GET /v1/models`; Anthropic `POST /v1/messages`
//!   (JSON and SSE); Gemini `POST /v1beta/models/{model}:generateContent` and
//!   `:streamGenerateContent?alt=sse` (key in `x-goog-api-key` or `?key=`).
//!   Output is deterministic from the seed and the request; usage is
//!   realistic (prompt tokens grow with the input). A request offering tools
//!   gets a call of its first (or chosen) tool, in its dialect, with
//!   arguments made from the tool's schema; once a tool result is sent back,
//!   text.
//! - A minimal gRPC endpoint: any `application/grpc` request (HTTP/2) is
//!   echoed with `grpc-status` in the trailers; faults become `UNAVAILABLE`
//!   (trailers-only) or `INTERNAL`. Enough to show the layers work for gRPC.
//! - A latency model ([`Latency`]): time to first token, then a delay per token.
//! - Faults ([`Fault`], [`FaultPlan`]): scripted per request, random with a seed,
//!   or always on (an outage): error statuses with `retry-after`, connection
//!   reset before headers, hang, stream cut mid-way, malformed JSON, slow body.
//! - Provider-style limits ([`MockLimits`]): a real per-minute RPM/TPM bucket that
//!   answers 429 with `retry-after` and `x-ratelimit-*` headers.
//! - Control and inspection over HTTP: `POST /mock/faults` (a [`FaultPlan`] as
//!   JSON), `GET /mock/stats` (counters and the request log), `GET /mock/counters`
//!   (the counters alone, cheap to poll), `POST /mock/reset`; or from Rust through
//!   [`MockServer`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! use llm_tower_mock::{Fault, FaultPlan, MockConfig, MockServer};
//! let mock = MockServer::start(MockConfig {
//!     faults: FaultPlan::Script { faults: vec![Fault::status_retry_after(429, 2)] },
//!     ..MockConfig::default()
//! })
//! .await?;
//! println!("mock provider at {}/v1", mock.url());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod body;
mod config;
mod server;
mod synth;

pub use config::{Fault, FaultPlan, Latency, MockConfig, MockLimits};
pub use server::{MockServer, MockStats, RecordedRequest};
