//! A breaker's state and its transitions.

use super::*;

/// The state of one breaker.
///
/// ```
/// assert_eq!(llm_tower_circuit::CircuitState::Closed.to_string(), "closed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A few probe calls pass; their outcomes decide.
    HalfOpen,
    /// Refused until an operator says otherwise.
    ForcedOpen,
    /// Passes everything and never trips, until an operator says otherwise.
    ForcedClosed,
}

impl CircuitState {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => CircuitState::Closed,
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            3 => CircuitState::ForcedOpen,
            _ => CircuitState::ForcedClosed,
        }
    }
}

impl std::fmt::Display for CircuitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::ForcedClosed => "forced_closed",
        })
    }
}

/// A state change of one breaker.
///
/// ```
/// # let t: Option<llm_tower_circuit::Transition> = None;
/// # if let Some(t) = t { println!("{} {} -> {}", t.key, t.from, t.to); }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The breaker's key.
    pub key: Key,
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// When (tokio time).
    pub at: Instant,
}
