//! A second cache level shared by instances (e.g. Redis): the [`L2`] trait.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use llm_tower_core::BoxError;

use crate::CacheKey;

/// A boxed future answered by an [`L2`].
pub type L2Future<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// A second-level store behind the in-memory cache: looked up on a memory
/// miss, written on every store, invalidated with it. Values are opaque
/// bytes (an entry's own encoding, with its scope and age); the store keeps
/// each for its `ttl` and needs no other knowledge of them.
///
/// Failures are logged and treated as misses: a cache never fails a request.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use bytes::Bytes;
/// use llm_tower_cache::{CacheKey, L2, L2Future};
///
/// /// A tier shared by the layers of one process.
/// #[derive(Default)]
/// struct Shared(Arc<Mutex<HashMap<CacheKey, (String, Bytes)>>>);
///
/// impl L2 for Shared {
///     fn get(&self, key: CacheKey) -> L2Future<Option<Bytes>> {
///         let v = self.0.lock().unwrap().get(&key).map(|(_, b)| b.clone());
///         Box::pin(async move { Ok(v) })
///     }
///     fn put(&self, key: CacheKey, scope: &str, value: Bytes, _ttl: Duration) -> L2Future<()> {
///         self.0.lock().unwrap().insert(key, (scope.to_owned(), value));
///         Box::pin(async { Ok(()) })
///     }
///     fn invalidate(&self, key: CacheKey) -> L2Future<()> {
///         self.0.lock().unwrap().remove(&key);
///         Box::pin(async { Ok(()) })
///     }
///     fn invalidate_scope(&self, scope: &str) -> L2Future<()> {
///         self.0.lock().unwrap().retain(|_, (s, _)| s != scope);
///         Box::pin(async { Ok(()) })
///     }
///     fn clear(&self) -> L2Future<()> {
///         self.0.lock().unwrap().clear();
///         Box::pin(async { Ok(()) })
///     }
/// }
/// let _layer = llm_tower_cache::CacheLayer::new(Default::default()).with_l2(Shared::default());
/// ```
pub trait L2: Send + Sync + 'static {
    /// The value stored for `key`, if any.
    fn get(&self, key: CacheKey) -> L2Future<Option<Bytes>>;
    /// Stores `value` for `key` (in `scope`) for `ttl`.
    fn put(&self, key: CacheKey, scope: &str, value: Bytes, ttl: Duration) -> L2Future<()>;
    /// Removes `key`.
    fn invalidate(&self, key: CacheKey) -> L2Future<()>;
    /// Removes every key of `scope`.
    fn invalidate_scope(&self, scope: &str) -> L2Future<()>;
    /// Removes everything.
    fn clear(&self) -> L2Future<()>;
}
