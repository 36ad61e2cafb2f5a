//! Typed errors, and their mapping to OpenAI-format JSON error responses.
//!
//! Every error an llm-tower layer creates is one of these types, returned as a
//! [`tower::BoxError`] and recoverable with `downcast_ref`. [`ErrorInfo::from_error`]
//! finds the first known type in an error's `source()` chain and says which
//! status, `type`, `code` and `retry-after` it maps to; [`error_response`] builds
//! the response. Errors of unknown types become a 500 that reveals nothing.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::{HeaderValue, StatusCode};

use crate::LlmBody;
use crate::chat::ErrorBody;

mod exhausted;
mod refusal;
#[cfg(test)]
mod tests;
mod upstream;
mod wire;

pub use exhausted::*;
pub use refusal::*;
pub use upstream::*;
pub use wire::*;
