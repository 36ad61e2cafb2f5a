//! [`Secret`]: API keys that never print.

use std::fmt;
use std::sync::Arc;

/// A credential (API key, bearer token) that never appears in `Debug` or
/// `Display` output.
///
/// Configs, providers and errors hold keys as `Secret`, so logging any of them
/// cannot leak a key. The value is reachable only through [`Secret::expose`].
///
/// ```
/// use llm_tower_core::Secret;
///
/// let key = Secret::new("sk-live-123");
/// assert_eq!(format!("{key:?}"), "Secret([REDACTED])");
/// assert_eq!(key.to_string(), "[REDACTED]");
/// assert_eq!(key.expose(), "sk-live-123");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a credential.
    ///
    /// ```
    /// let key = llm_tower_core::Secret::new(String::from("abc"));
    /// assert_eq!(key.expose(), "abc");
    /// ```
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// Reads a credential from an environment variable; `None` when unset or empty.
    ///
    /// ```
    /// assert!(llm_tower_core::Secret::from_env("LLM_TOWER_SURELY_UNSET").is_none());
    /// ```
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var).ok().filter(|v| !v.is_empty()).map(Self::new)
    }

    /// The credential itself. Call it only where the key is sent.
    ///
    /// ```
    /// assert_eq!(llm_tower_core::Secret::new("k").expose(), "k");
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl serde::Serialize for Secret {
    /// Serializes as the redaction: a config dumped back to text holds no key.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("sk-abcdef");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            key: Secret,
        }
        let all = format!("{s} {s:?} {:?} {:#?}", Config { key: s.clone() }, Some(&s));
        assert!(!all.contains("sk-abcdef"), "{all}");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[REDACTED]\"");
        let back: Secret = serde_json::from_str("\"sk-abcdef\"").unwrap();
        assert_eq!(back, s);
    }
}
