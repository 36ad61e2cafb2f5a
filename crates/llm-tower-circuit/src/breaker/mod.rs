//! One breaker: state machine, windows, transitions. Lock-free on the call path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use std::time::Duration;

use llm_tower_core::{Classification, Key, OutcomeClass};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{CircuitConfig, Window};

mod machine;
mod state;
#[cfg(test)]
mod tests;
mod window;

pub(crate) use machine::*;
pub use state::*;
use window::*;
