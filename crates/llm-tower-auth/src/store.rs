//! [`KeyStore`]: where admin-created keys persist, and its contract.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::KeyRecord;

/// A store's failure (the database is unreachable, a row is corrupt, ...).
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`KeyStore`] call returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where keys created at run time are kept, so they outlive the process and
/// (for a shared store) work on every gateway at once. Calls are rare (start,
/// and each admin change): they are boxed futures, and no request waits on
/// one — requests authenticate against a [`Keys`](crate::Keys) registry in
/// memory.
///
/// Implementations: [`MemoryKeyStore`] (this process), `llm-tower-sqlite`
/// (a file). Each passes [`contract::key_store`](crate::contract::key_store).
pub trait KeyStore: Send + Sync + 'static {
    /// Every key held.
    fn load(&self) -> StoreFuture<'_, Vec<KeyRecord>>;
    /// Adds `record`, or replaces the key of the same name.
    fn put(&self, record: KeyRecord) -> StoreFuture<'_, ()>;
    /// Removes the key named `name`; whether there was one.
    fn remove<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool>;
}

/// Keys in memory: gone when the process ends (the offline default).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use llm_tower_auth::{KeyHash, KeyRecord, KeySource, KeyStore, MemoryKeyStore};
/// let store = MemoryKeyStore::default();
/// let rec = KeyRecord {
///     name: "team-a".into(),
///     hash: KeyHash::of("llmt-secret"),
///     grant: Default::default(),
///     created_unix: 0,
///     source: KeySource::Admin,
/// };
/// store.put(rec.clone()).await.unwrap();
/// assert_eq!(store.load().await.unwrap(), vec![rec]);
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    keys: Mutex<BTreeMap<String, KeyRecord>>,
}

impl MemoryKeyStore {
    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, KeyRecord>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KeyStore for MemoryKeyStore {
    fn load(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        let all = self.keys().values().cloned().collect();
        Box::pin(async move { Ok(all) })
    }

    fn put(&self, record: KeyRecord) -> StoreFuture<'_, ()> {
        self.keys().insert(record.name.clone(), record);
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        let had = self.keys().remove(name).is_some();
        Box::pin(async move { Ok(had) })
    }
}

pub mod contract {
    //! The behaviour every [`KeyStore`] keeps: run [`key_store`] against a
    //! new, empty store in the backend's tests.

    use super::*;
    use crate::{Grant, KeyBudget, KeyHash, KeySource};

    /// Checks `store` (empty when called) keeps the [`KeyStore`] contract;
    /// panics naming the broken rule.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// llm_tower_auth::contract::key_store(&llm_tower_auth::MemoryKeyStore::default()).await;
    /// # }
    /// ```
    pub async fn key_store<S: KeyStore + ?Sized>(store: &S) {
        assert!(store.load().await.expect("load").is_empty(), "a new store is empty");
        let grant = Grant {
            models: Some(vec!["gpt-4o-mini".into()]),
            requests_per_minute: Some(60),
            tokens_per_minute: Some(100_000),
            budget: Some(KeyBudget { usd: 5.25, period: crate::BudgetPeriod::Day }),
        };
        let a = KeyRecord {
            name: "team-a".into(),
            hash: KeyHash::of("llmt-a"),
            grant: grant.clone(),
            created_unix: 1_700_000_000,
            source: KeySource::Admin,
        };
        let b = KeyRecord {
            name: "team-b".into(),
            hash: KeyHash::of("llmt-b"),
            grant: Grant::default(),
            ..a.clone()
        };
        store.put(a.clone()).await.expect("put a");
        store.put(b.clone()).await.expect("put b");
        let mut all = store.load().await.expect("load");
        all.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(all, vec![a.clone(), b.clone()], "put keeps every field, and load returns every key");

        let rekeyed = KeyRecord { hash: KeyHash::of("llmt-a2"), grant: Grant::default(), ..a.clone() };
        store.put(rekeyed.clone()).await.expect("replace a");
        let all = store.load().await.expect("load");
        assert_eq!(all.len(), 2, "put of an existing name replaces it");
        assert!(all.contains(&rekeyed), "the replacement is what is kept");

        assert!(store.remove("team-a").await.expect("remove"), "remove says a key went");
        assert!(!store.remove("team-a").await.expect("remove again"), "a second remove finds nothing");
        assert_eq!(store.load().await.expect("load"), vec![b], "a removed key is gone from load");
        assert!(!store.remove("nobody").await.expect("remove unknown"));
    }
}
