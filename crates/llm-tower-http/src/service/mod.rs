//! [`LlmHttpService`], its response future and its response body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use llm_tower_core::LlmResponseBody;
use llm_tower_core::sse::EventSizeLimit;
use llm_tower_core::{
    Api, BadResponse, BadResponseKind, BoxError, Connect, Deadline, InvalidRequest, LlmBody, RequestInfo,
    StreamAborted, Timeout, TimeoutPhase, Transport,
};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::client::{HostCounters, HttpClient, authority_key};
use crate::dialect::Translation;
use crate::{Provider, ProviderKind, strip_hop_by_hop};

mod future;
mod join;
mod llm;
mod span;
mod streaming;
mod timeouts;
mod translated;

pub use future::*;
pub use llm::*;
use streaming::*;
pub use timeouts::*;
use translated::*;
