//! Configuration problems, named by the field at fault.
//!
//! Every layer crate's configuration section (behind its `serde` feature)
//! checks itself into a list of [`ConfigError`]s, each naming the full path of
//! the field at fault, so a gateway can report every problem of a file at once.

use std::fmt;

/// A configuration problem, naming the field at fault.
///
/// ```
/// use llm_tower_core::config::ConfigError;
/// let e = ConfigError::at("providers[0].retry", "max_attempts", "must be at least 1");
/// assert_eq!(e.to_string(), "providers[0].retry.max_attempts: must be at least 1");
/// assert_eq!(ConfigError::at("", "providers", "none").field, "providers");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the field (`providers[1].base_url`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem with `field`, under the section at `path` (empty: the document's top level).
    pub fn at(path: &str, field: &str, message: impl Into<String>) -> Self {
        let field = match (path.is_empty(), field.is_empty()) {
            (true, _) => field.to_owned(),
            (false, true) => path.to_owned(),
            (false, false) => format!("{path}.{field}"),
        };
        ConfigError { field, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}
