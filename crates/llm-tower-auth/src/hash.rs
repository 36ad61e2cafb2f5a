//! [`KeyHash`]: how a key is stored and compared, and [`generate_key`].

use std::fmt;

use llm_tower_core::Secret;
use llm_tower_core::trace::hex;
use sha2::{Digest, Sha256};

/// The SHA-256 digest of an API key: what a store holds instead of the key.
/// Its [`prefix`](Self::prefix) (8 hex digits) names a key in logs, the
/// ledger and listings; `Debug` shows only that.
///
/// ```
/// use llm_tower_auth::KeyHash;
/// let h = KeyHash::of("sk-test");
/// let parsed: KeyHash = h.to_string().parse().unwrap();
/// assert!(parsed.ct_eq(&h));
/// assert!(h.to_string().starts_with("sha256:"));
/// assert!(!format!("{h:?}").contains(&h.to_string()[7..]), "Debug shows the prefix only");
/// assert!("sha256:12".parse::<KeyHash>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The digest of `key`.
    pub fn of(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares two digests in constant time.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// The first 8 hex digits: a key's public short name.
    pub fn prefix(&self) -> String {
        hex(&self.0[..4])
    }

    /// The first 8 bytes as a number: the index a registry files the key under.
    pub(crate) fn bucket(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

impl fmt::Display for KeyHash {
    /// `sha256:<64 hex digits>`, the form config files and stores use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex(&self.0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", self.prefix())
    }
}

/// A key hash that is not `sha256:` and 64 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadKeyHash;

impl fmt::Display for BadKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key hash is `sha256:` and 64 hex digits")
    }
}

impl std::error::Error for BadKeyHash {}

impl std::str::FromStr for KeyHash {
    type Err = BadKeyHash;

    fn from_str(s: &str) -> Result<Self, BadKeyHash> {
        let hex = s.strip_prefix("sha256:").ok_or(BadKeyHash)?.as_bytes();
        if hex.len() != 64 {
            return Err(BadKeyHash);
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(BadKeyHash),
        };
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(KeyHash(out))
    }
}

impl serde::Serialize for KeyHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A new API key: `llmt-` and 48 hex digits (192 random bits from the
/// operating system). Shown to its owner once; only its hash is kept.
///
/// ```
/// let key = llm_tower_auth::generate_key().unwrap();
/// assert!(key.expose().starts_with("llmt-"));
/// assert_eq!(key.expose().len(), 5 + 48);
/// assert_ne!(key.expose(), llm_tower_auth::generate_key().unwrap().expose());
/// ```
pub fn generate_key() -> Result<Secret, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(Secret::new(format!("llmt-{}", hex(&bytes))))
}
