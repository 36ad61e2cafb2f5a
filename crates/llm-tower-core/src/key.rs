//! [`KeyFn`]: how requests are partitioned (per provider, model, tenant).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Request, Uri};

use crate::RequestInfo;

/// A partition key: cheap to clone and compare.
///
/// ```
/// use llm_tower_core::Key;
/// assert_eq!(Key::from_static("a"), Key::from("a".to_string()));
/// assert_eq!(Key::from_static("a").as_str(), "a");
/// ```
#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Key {
    /// A key from a static string (no allocation).
    pub const fn from_static(s: &'static str) -> Self {
        Key(Repr::Static(s))
    }
    /// The key as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl From<Arc<str>> for Key {
    fn from(s: Arc<str>) -> Self {
        Key(Repr::Shared(s))
    }
}
impl From<String> for Key {
    fn from(s: String) -> Self {
        Key(Repr::Shared(s.into()))
    }
}
impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key(Repr::Shared(s.into()))
    }
}
impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Key {}
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}
impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A borrowed view of a request's head, whatever its body type.
///
/// ```
/// let req = http::Request::get("/x").body(()).unwrap();
/// let view = llm_tower_core::key::RequestView::of(&req);
/// assert_eq!(view.uri.path(), "/x");
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (where [`RequestInfo`] lives).
    pub extensions: &'a Extensions,
}

impl<'a> RequestView<'a> {
    /// The view of `req`.
    pub fn of<B>(req: &'a Request<B>) -> Self {
        RequestView {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    /// The request's [`RequestInfo`], if a layer has parsed it.
    pub fn info(&self) -> Option<&'a Arc<RequestInfo>> {
        self.extensions.get::<Arc<RequestInfo>>()
    }
}

/// How a request is partitioned: a cheap, shareable function from a request
/// to a [`Key`]. Limiters, breakers, budgets and caches all take one.
///
/// ```
/// use llm_tower_core::{KeyFn, LlmBody, RequestInfo};
/// let mut req = http::Request::post("/v1/chat/completions")
///     .header("x-tenant", "acme")
///     .body(LlmBody::from(r#"{"model":"gpt-4o","messages":[]}"#)).unwrap();
/// RequestInfo::ensure(&mut req).unwrap();
/// assert_eq!(KeyFn::model().key(&req).as_str(), "gpt-4o");
/// assert_eq!(KeyFn::header("x-tenant").key(&req).as_str(), "acme");
/// assert_eq!(KeyFn::global().key(&req).as_str(), "*");
/// let custom = KeyFn::new(|r| format!("{}:{}", r.method, r.uri.path()).into());
/// assert_eq!(custom.key(&req).as_str(), "POST:/v1/chat/completions");
/// ```
#[derive(Clone)]
pub struct KeyFn(Arc<dyn Fn(&RequestView<'_>) -> Key + Send + Sync>);

/// The key used when a request has no value for a keyed attribute.
pub const UNKNOWN_KEY: Key = Key::from_static("-");

impl KeyFn {
    /// A key function from a closure.
    pub fn new(f: impl Fn(&RequestView<'_>) -> Key + Send + Sync + 'static) -> Self {
        KeyFn(Arc::new(f))
    }

    /// One partition for everything (`*`).
    pub fn global() -> Self {
        Self::new(|_| Key::from_static("*"))
    }

    /// Partition by the requested model (from [`RequestInfo`]; `-` when unparsed).
    pub fn model() -> Self {
        Self::new(|r| r.info().map(|i| Key::from(i.model.clone())).unwrap_or(UNKNOWN_KEY))
    }

    /// Partition by the tenant recorded in [`RequestInfo`] (`-` when none).
    pub fn tenant() -> Self {
        Self::new(|r| r.info().and_then(|i| i.tenant.clone()).map(Key::from).unwrap_or(UNKNOWN_KEY))
    }

    /// Partition by a header's value (`-` when absent or not text).
    ///
    /// # Panics
    /// If `name` is not a valid header name (a programming error).
    pub fn header(name: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("KeyFn::header: invalid header name");
        Self::new(move |r| {
            r.headers.get(&name).and_then(|v| v.to_str().ok()).map(Key::from).unwrap_or(UNKNOWN_KEY)
        })
    }

    /// The key of `req`.
    pub fn key<B>(&self, req: &Request<B>) -> Key {
        (self.0)(&RequestView::of(req))
    }
}

impl fmt::Debug for KeyFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFn(..)")
    }
}

impl Default for KeyFn {
    fn default() -> Self {
        Self::global()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_values_fall_back() {
        let req = Request::new(());
        assert_eq!(KeyFn::model().key(&req), UNKNOWN_KEY);
        assert_eq!(KeyFn::tenant().key(&req), UNKNOWN_KEY);
        assert_eq!(KeyFn::header("x-t").key(&req), UNKNOWN_KEY);
    }

    #[test]
    fn keys_hash_by_content() {
        use std::collections::HashSet;
        let set: HashSet<Key> = [Key::from_static("a"), Key::from("a"), Key::from("b".to_string())].into();
        assert_eq!(set.len(), 2);
        assert!(set.contains("a"));
    }
}
