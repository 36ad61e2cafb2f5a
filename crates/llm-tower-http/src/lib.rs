//! The hyper-based LLM HTTP service of llm-tower.
//!
//! [`LlmHttpService`] is the innermost `tower::Service` of every llm-tower
//! stack: it sends an `http::Request<LlmBody>` to a [`Provider`] over a pooled
//! [`HttpClient`] (hyper-util, rustls with ring, HTTP/1.1 and HTTP/2 by ALPN,
//! TCP_NODELAY, keep-alive, a caching DNS resolver, per-host connection limits
//! and stats) and returns the response with a streaming body, enforcing
//! [`Timeouts`] by phase. Where the provider speaks another API than the
//! client ([`ProviderKind::Anthropic`] or [`ProviderKind::Gemini`] for an
//! OpenAI chat completion, an OpenAI-dialect provider for an Anthropic
//! `/v1/messages` request), it translates the request and the answer, a
//! stream event by event.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use llm_tower_core::Secret;
//! use llm_tower_http::{ClientConfig, HttpClient, LlmHttpService, Provider, Timeouts};
//!
//! let client = HttpClient::new(ClientConfig::default());
//! let openai = LlmHttpService::with_client(Provider::openai(Secret::new("sk-...")), client.clone())
//!     .timeouts(Timeouts::default());
//! let groq = LlmHttpService::with_client(Provider::groq(Secret::new("gsk-...")), client);
//! # let _ = (openai, groq);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod client;
mod dialect;
mod headers;
mod provider;
#[cfg(feature = "serde")]
pub mod section;
mod service;

pub use client::{CachingResolver, ClientConfig, HostStats, HttpClient};
pub use headers::{HOP_BY_HOP, strip_hop_by_hop};
pub use provider::{ANTHROPIC_VERSION, BaseUrlError, Provider, ProviderKind};
pub use service::{DEFAULT_MAX_RESPONSE_BYTES, LlmHttpService, ResponseFuture, Timeouts};
