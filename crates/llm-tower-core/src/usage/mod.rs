//! Token usage, read from JSON bodies and SSE streams as they pass.
//!
//! [`UsageExtractor`] is fed the response bytes chunk by chunk and never holds
//! a stream back; a response body's meter ([`LlmResponseBody`](crate::LlmResponseBody))
//! runs one and hands its [`UsageReport`] to every observer exactly once: when
//! the body ends, fails, or is dropped.
//! Understood shapes: OpenAI chat completions (JSON, and SSE chunks with
//! `stream_options.include_usage`), OpenAI Responses (`response.completed`
//! events and objects), Anthropic Messages (JSON, and `message_start` /
//! `message_delta` / `message_stop` events).

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderMap;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::sse::SseParser;

mod dialect;
mod extractor;
mod key_scan;
mod report;
#[cfg(test)]
mod tests;

use dialect::*;
pub use extractor::*;
pub use report::*;
