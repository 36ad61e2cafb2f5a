//! [`Keys`]: the registry requests authenticate against.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::{KeyHash, KeyRecord};

/// Who a request is, once its key is known: put in the request's (and its
/// response's) extensions by [`AuthLayer`](crate::AuthLayer).
///
/// `Debug` and `Display` show the key's name and hash prefix, never more.
#[derive(Clone, PartialEq)]
pub struct Identity {
    name: Arc<str>,
    prefix: Arc<str>,
    record: KeyRecord,
}

impl Identity {
    fn new(record: KeyRecord) -> Self {
        Identity { name: record.name.as_str().into(), prefix: record.hash.prefix().into(), record }
    }

    /// The key's name: the tenant it spends as.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The first 8 hex digits of the key's hash: how logs tell keys apart.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key as its store keeps it (hash, grant, origin).
    pub fn record(&self) -> &KeyRecord {
        &self.record
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("name", &self.name).field("prefix", &self.prefix).finish()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.prefix)
    }
}

/// Why a key could not be added to a [`Keys`] registry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Another name already has this key.
    DuplicateKey {
        /// The name that has it.
        name: String,
    },
    /// The registry holds as many keys as it may.
    Full {
        /// Its bound.
        max: usize,
    },
    /// A name that is empty, too long, or not printable ASCII without spaces.
    BadName,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::DuplicateKey { name } => write!(f, "key {name} already has this secret"),
            KeyError::Full { max } => write!(f, "the registry holds its maximum of {max} keys"),
            KeyError::BadName => f.write_str("a key's name is 1 to 64 characters from [A-Za-z0-9._:@-]"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Whether `name` may name a key: 1 to 64 of `[A-Za-z0-9._:@-]` (it is a
/// tenant name in metrics, logs and URLs).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

#[derive(Default)]
struct Index {
    /// By the first 8 bytes of the hash; the full hash is then compared in
    /// constant time.
    by_bucket: HashMap<u64, Vec<Arc<Identity>>>,
    by_name: BTreeMap<Arc<str>, Arc<Identity>>,
}

impl Index {
    fn unfile(&mut self, id: &Identity) {
        let bucket = id.record.hash.bucket();
        if let Some(list) = self.by_bucket.get_mut(&bucket) {
            list.retain(|x| x.name != id.name);
            if list.is_empty() {
                self.by_bucket.remove(&bucket);
            }
        }
    }
}

/// The keys a gateway accepts, by hash, in memory: every request
/// authenticates here without touching a store. Cheap to clone (one shared
/// registry); changes show at the next request. Bounded: at most
/// `max_keys` (default 100,000) keys, and only an operator (config, admin
/// API) adds one, never a client.
///
/// ```
/// use llm_tower_auth::{KeyHash, KeyRecord, KeySource, Keys};
/// let keys = Keys::default();
/// keys.insert(KeyRecord {
///     name: "team-a".into(),
///     hash: KeyHash::of("llmt-secret"),
///     grant: Default::default(),
///     created_unix: 0,
///     source: KeySource::Config,
/// })
/// .unwrap();
/// assert_eq!(&**keys.authenticate("llmt-secret").unwrap().name(), "team-a");
/// assert!(keys.authenticate("llmt-guess").is_none());
/// keys.remove("team-a");
/// assert!(keys.authenticate("llmt-secret").is_none(), "revoked at once");
/// ```
#[derive(Clone)]
pub struct Keys {
    index: Arc<RwLock<Index>>,
    max: usize,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys").field("len", &self.len()).field("max", &self.max).finish()
    }
}

impl Keys {
    /// An empty registry of at most `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Keys { index: Arc::default(), max: max_keys }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `record`, replacing the key of the same name (a changed grant,
    /// or a new secret); returns the identity it replaced.
    pub fn insert(&self, record: KeyRecord) -> Result<Option<Arc<Identity>>, KeyError> {
        if !valid_name(&record.name) {
            return Err(KeyError::BadName);
        }
        let mut index = self.write();
        let bucket = record.hash.bucket();
        if let Some(other) = index
            .by_bucket
            .get(&bucket)
            .and_then(|l| l.iter().find(|x| x.record.hash.ct_eq(&record.hash) && *x.name != *record.name))
        {
            return Err(KeyError::DuplicateKey { name: other.name.to_string() });
        }
        if !index.by_name.contains_key(record.name.as_str()) && index.by_name.len() >= self.max {
            return Err(KeyError::Full { max: self.max });
        }
        let id = Arc::new(Identity::new(record));
        let old = index.by_name.insert(id.name.clone(), id.clone());
        if let Some(old) = &old {
            index.unfile(old);
        }
        index.by_bucket.entry(bucket).or_default().push(id);
        Ok(old)
    }

    /// Revokes the key named `name`: the next request with it is refused
    /// (one already past authentication finishes). Returns it.
    pub fn remove(&self, name: &str) -> Option<Arc<Identity>> {
        let mut index = self.write();
        let old = index.by_name.remove(name)?;
        index.unfile(&old);
        Some(old)
    }

    /// The key named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Identity>> {
        self.read().by_name.get(name).cloned()
    }

    /// Every key, by name.
    pub fn list(&self) -> Vec<Arc<Identity>> {
        self.read().by_name.values().cloned().collect()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The identity whose key is `key`: its SHA-256 compared in constant time
    /// with the stored hashes filed under the same first bytes.
    pub fn authenticate(&self, key: &str) -> Option<Arc<Identity>> {
        let hash = KeyHash::of(key);
        let index = self.read();
        let list = index.by_bucket.get(&hash.bucket())?;
        let mut found = None;
        for id in list {
            if id.record.hash.ct_eq(&hash) {
                found = Some(id.clone());
            }
        }
        found
    }
}
