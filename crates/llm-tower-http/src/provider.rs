//! Providers: where requests go, how they authenticate, how models are named.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use llm_tower_core::Secret;

/// The API dialect a provider speaks.
///
/// ```
/// use llm_tower_http::ProviderKind;
/// let k = ProviderKind::Azure { api_version: "2024-10-21".into() };
/// assert!(matches!(k, ProviderKind::Azure { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI or any OpenAI-compatible endpoint: `Authorization: Bearer`.
    OpenAi,
    /// Azure OpenAI: deployment URLs, `api-version` query, `api-key` header.
    /// The (aliased) model name is the deployment name.
    Azure {
        /// The `api-version` query value.
        api_version: String,
    },
    /// Anthropic: `x-api-key` and `anthropic-version`. An OpenAI chat
    /// completion (`/v1/chat/completions`) is translated to Messages and its
    /// answer (JSON or stream) back to OpenAI's shape; native `/v1/messages`
    /// passes through.
    Anthropic {
        /// The default `anthropic-version` (a caller's own header wins).
        version: String,
    },
    /// Google Gemini (the Generative Language API): `x-goog-api-key`. An
    /// OpenAI chat completion is translated to `models/{model}:generateContent`
    /// (`:streamGenerateContent?alt=sse` for a stream) and its answer back to
    /// OpenAI's shape.
    Gemini,
}

/// A base URL that is not usable for a provider.
///
/// ```
/// assert!(llm_tower_http::Provider::openai_compatible("x", "not a url").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrlError {
    url: String,
    reason: &'static str,
}

impl fmt::Display for BaseUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid base URL {:?}: {}", self.url, self.reason)
    }
}
impl std::error::Error for BaseUrlError {}

#[derive(Clone, Debug, PartialEq, Eq)]
struct BaseUrl {
    scheme: Scheme,
    authority: Authority,
    /// Path prefix without a trailing slash (`/v1`, `/openai/v1`, or empty).
    prefix: String,
}

impl BaseUrl {
    fn parse(url: &str) -> Result<Self, BaseUrlError> {
        let err = |reason| BaseUrlError { url: url.chars().take(200).collect(), reason };
        let uri: Uri = url.parse().map_err(|_| err("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| err("missing scheme (http:// or https://)"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(err("scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| err("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(err("credentials in the URL are not allowed; configure an API key"));
        }
        if uri.query().is_some() {
            return Err(err("a query string is not allowed"));
        }
        Ok(BaseUrl { scheme, authority, prefix: uri.path().trim_end_matches('/').to_owned() })
    }
}

/// Where and how to send LLM requests: base URL, dialect, credentials, model
/// aliases and extra headers. Cheap to clone.
///
/// Incoming request paths are OpenAI-style (`/v1/chat/completions`); the `/v1`
/// is replaced by the base URL's path, so `https://api.groq.com/openai/v1`
/// receives `/openai/v1/chat/completions`.
///
/// ```
/// use llm_tower_core::Secret;
/// use llm_tower_http::Provider;
///
/// let p = Provider::openai(Secret::new("sk-test"))
///     .with_alias("fast", "gpt-4o-mini")
///     .with_header("openai-organization", "org-1");
/// assert_eq!(p.name(), "openai");
/// assert_eq!(p.upstream_model("fast"), "gpt-4o-mini");
/// assert!(!format!("{p:?}").contains("sk-test"));
///
/// let local = Provider::openai_compatible("local", "http://127.0.0.1:8000/v1").unwrap();
/// assert_eq!(local.base_url(), "http://127.0.0.1:8000/v1");
/// ```
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    name: Arc<str>,
    kind: ProviderKind,
    base: BaseUrl,
    key: Option<Secret>,
    /// The credential header, built once from `key` and `kind`.
    auth: Option<(HeaderName, HeaderValue)>,
    aliases: HashMap<String, String>,
    headers: HeaderMap,
    forward_client_auth: bool,
    anthropic_version: Option<HeaderValue>,
}

impl Inner {
    fn rebuild_auth(&mut self) {
        self.auth = self.key.as_ref().and_then(|key| {
            let (name, value) = match &self.kind {
                ProviderKind::OpenAi => (http::header::AUTHORIZATION, format!("Bearer {}", key.expose())),
                ProviderKind::Azure { .. } => (HeaderName::from_static("api-key"), key.expose().to_owned()),
                ProviderKind::Anthropic { .. } => {
                    (HeaderName::from_static("x-api-key"), key.expose().to_owned())
                }
                ProviderKind::Gemini => (HeaderName::from_static("x-goog-api-key"), key.expose().to_owned()),
            };
            let mut v = HeaderValue::from_str(&value).ok()?;
            v.set_sensitive(true);
            Some((name, v))
        });
        if let ProviderKind::Anthropic { version } = &self.kind {
            if let Ok(v) = HeaderValue::from_str(version) {
                self.anthropic_version = Some(v);
            }
        }
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Provider")
            .field("name", &i.name)
            .field("kind", &i.kind)
            .field("base_url", &self.base_url())
            .field("key", &i.key)
            .field("aliases", &i.aliases)
            .field("headers", &i.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The default `anthropic-version`.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

impl Provider {
    fn from_parts(name: &str, kind: ProviderKind, base: BaseUrl, key: Option<Secret>) -> Self {
        let mut inner = Inner {
            name: name.into(),
            kind,
            base,
            key,
            auth: None,
            aliases: HashMap::new(),
            headers: HeaderMap::new(),
            forward_client_auth: false,
            anthropic_version: None,
        };
        inner.rebuild_auth();
        Provider { inner: Arc::new(inner) }
    }

    fn preset(name: &str, kind: ProviderKind, url: &'static str, key: Option<Secret>) -> Self {
        let base = BaseUrl::parse(url).expect("preset base URLs are valid");
        Self::from_parts(name, kind, base, key)
    }

    /// Any OpenAI-compatible endpoint; `base_url` includes the version path
    /// (`http://127.0.0.1:8000/v1`).
    pub fn openai_compatible(name: &str, base_url: &str) -> Result<Self, BaseUrlError> {
        Ok(Self::from_parts(name, ProviderKind::OpenAi, BaseUrl::parse(base_url)?, None))
    }

    /// A provider of `kind` at `base_url`.
    ///
    /// ```
    /// use llm_tower_http::{Provider, ProviderKind};
    /// let p = Provider::new("a", ProviderKind::OpenAi, "https://llm.internal/v1").unwrap();
    /// assert_eq!(p.kind(), &ProviderKind::OpenAi);
    /// ```
    pub fn new(name: &str, kind: ProviderKind, base_url: &str) -> Result<Self, BaseUrlError> {
        Ok(Self::from_parts(name, kind, BaseUrl::parse(base_url)?, None))
    }

    /// OpenAI (`https://api.openai.com/v1`).
    pub fn openai(key: Secret) -> Self {
        Self::preset("openai", ProviderKind::OpenAi, "https://api.openai.com/v1", Some(key))
    }
    /// A local Ollama (`http://127.0.0.1:11434/v1`, no key).
    pub fn ollama() -> Self {
        Self::preset("ollama", ProviderKind::OpenAi, "http://127.0.0.1:11434/v1", None)
    }
    /// A vLLM server at `base_url` (e.g. `http://127.0.0.1:8000/v1`).
    pub fn vllm(base_url: &str) -> Result<Self, BaseUrlError> {
        Self::openai_compatible("vllm", base_url)
    }
    /// Groq (`https://api.groq.com/openai/v1`).
    pub fn groq(key: Secret) -> Self {
        Self::preset("groq", ProviderKind::OpenAi, "https://api.groq.com/openai/v1", Some(key))
    }
    /// Together AI (`https://api.together.xyz/v1`).
    pub fn together(key: Secret) -> Self {
        Self::preset("together", ProviderKind::OpenAi, "https://api.together.xyz/v1", Some(key))
    }
    /// OpenRouter (`https://openrouter.ai/api/v1`).
    pub fn openrouter(key: Secret) -> Self {
        Self::preset("openrouter", ProviderKind::OpenAi, "https://openrouter.ai/api/v1", Some(key))
    }
    /// Mistral (`https://api.mistral.ai/v1`).
    pub fn mistral(key: Secret) -> Self {
        Self::preset("mistral", ProviderKind::OpenAi, "https://api.mistral.ai/v1", Some(key))
    }
    /// Anthropic (`https://api.anthropic.com/v1`).
    pub fn anthropic(key: Secret) -> Self {
        Self::preset(
            "anthropic",
            ProviderKind::Anthropic { version: ANTHROPIC_VERSION.into() },
            "https://api.anthropic.com/v1",
            Some(key),
        )
    }
    /// Google Gemini (`https://generativelanguage.googleapis.com/v1beta`).
    ///
    /// ```
    /// use llm_tower_core::Secret;
    /// let p = llm_tower_http::Provider::gemini(Secret::new("g-key"));
    /// assert_eq!(p.base_url(), "https://generativelanguage.googleapis.com/v1beta");
    /// ```
    pub fn gemini(key: Secret) -> Self {
        Self::preset(
            "gemini",
            ProviderKind::Gemini,
            "https://generativelanguage.googleapis.com/v1beta",
            Some(key),
        )
    }
    /// Azure OpenAI at `endpoint` (`https://NAME.openai.azure.com`).
    ///
    /// ```
    /// use llm_tower_core::Secret;
    /// let p = llm_tower_http::Provider::azure("https://acme.openai.azure.com", "2024-10-21", Secret::new("k")).unwrap();
    /// assert_eq!(p.name(), "azure");
    /// ```
    pub fn azure(endpoint: &str, api_version: &str, key: Secret) -> Result<Self, BaseUrlError> {
        let kind = ProviderKind::Azure { api_version: api_version.to_owned() };
        Ok(Self::from_parts("azure", kind, BaseUrl::parse(endpoint)?, Some(key)))
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// Renames the provider (names appear in stats and logs).
    pub fn with_name(self, name: &str) -> Self {
        self.edit(|i| i.name = name.into())
    }
    /// Sets (or replaces) the API key.
    pub fn with_key(self, key: Secret) -> Self {
        self.edit(|i| {
            i.key = Some(key);
            i.rebuild_auth();
        })
    }
    /// Sends `upstream` as the model when a request names `alias`. Only the
    /// body's `model` field changes.
    pub fn with_alias(self, alias: &str, upstream: &str) -> Self {
        self.edit(|i| {
            i.aliases.insert(alias.to_owned(), upstream.to_owned());
        })
    }
    /// Adds a header to every upstream request (e.g. `openai-organization`).
    ///
    /// # Panics
    /// If the name or value is not a valid header (a programming error; the
    /// gateway validates configured headers first).
    pub fn with_header(self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
        let value = HeaderValue::from_str(value).expect("valid header value");
        self.edit(|i| {
            i.headers.insert(name, value);
        })
    }
    /// Forwards the caller's own `Authorization` / `x-api-key` / `api-key`
    /// instead of dropping it (bring-your-own-key). Off by default: a
    /// gateway's callers' credentials never reach a provider unless asked.
    pub fn forward_client_auth(self, forward: bool) -> Self {
        self.edit(|i| i.forward_client_auth = forward)
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// The shared name, for stats keys.
    pub fn name_arc(&self) -> Arc<str> {
        self.inner.name.clone()
    }
    /// Its dialect.
    pub fn kind(&self) -> &ProviderKind {
        &self.inner.kind
    }
    /// The base URL.
    pub fn base_url(&self) -> String {
        let b = &self.inner.base;
        format!("{}://{}{}", b.scheme, b.authority, b.prefix)
    }
    /// The `host:port` requests go to.
    pub fn authority(&self) -> &Authority {
        &self.inner.base.authority
    }
    /// The name sent upstream for `model` (its alias target, or itself).
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.inner.aliases.get(model).map_or(model, String::as_str)
    }
    pub(crate) fn has_aliases(&self) -> bool {
        !self.inner.aliases.is_empty()
    }

    /// The upstream URI for an incoming path and query. `model` is the upstream
    /// model (Azure's deployment); `None` where the path needs none.
    pub(crate) fn upstream_uri(
        &self,
        path: &str,
        query: Option<&str>,
        model: Option<&str>,
    ) -> Result<Uri, String> {
        let b = &self.inner.base;
        let rest = path.strip_prefix("/v1").filter(|r| r.is_empty() || r.starts_with('/')).unwrap_or(path);
        let pq = match &self.inner.kind {
            ProviderKind::Azure { api_version } => {
                let op = match rest {
                    "/chat/completions" | "/embeddings" | "/completions" => rest,
                    other => return Err(format!("Azure OpenAI provider does not serve {other}")),
                };
                let dep = model.ok_or("Azure OpenAI requests need a model (the deployment name)")?;
                if dep.is_empty() || !dep.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)) {
                    return Err(format!("invalid Azure deployment name {dep:?}"));
                }
                format!("{}/openai/deployments/{dep}{op}?api-version={api_version}", b.prefix)
            }
            _ => {
                let mut pq =
                    String::with_capacity(b.prefix.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
                pq.push_str(&b.prefix);
                pq.push_str(rest);
                if let Some(q) = query {
                    pq.push('?');
                    pq.push_str(q);
                }
                pq
            }
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(b.scheme.clone());
        parts.authority = Some(b.authority.clone());
        parts.path_and_query =
            Some(PathAndQuery::from_maybe_shared(bytes::Bytes::from(pq)).map_err(|e| e.to_string())?);
        Uri::from_parts(parts).map_err(|e| e.to_string())
    }

    /// Sets credentials and provider headers on an outgoing request's headers.
    pub(crate) fn apply_headers(&self, headers: &mut HeaderMap) {
        let i = &self.inner;
        if !i.forward_client_auth || i.key.is_some() {
            headers.remove(http::header::AUTHORIZATION);
            headers.remove("x-api-key");
            headers.remove("api-key");
        }
        if let Some((name, value)) = &i.auth {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(v) = &i.anthropic_version {
            if !headers.contains_key("anthropic-version") {
                headers.insert("anthropic-version", v.clone());
            }
        }
        for (k, v) in &i.headers {
            headers.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_validation() {
        for bad in
            ["", "127.0.0.1:8000", "ftp://x/v1", "http://user:pw@h/v1", "http://h/v1?x=1", "http:///v1"]
        {
            assert!(Provider::openai_compatible("x", bad).is_err(), "{bad:?}");
        }
        let p = Provider::openai_compatible("x", "http://h:1/openai/v1/").unwrap();
        assert_eq!(p.base_url(), "http://h:1/openai/v1");
    }

    #[test]
    fn uris_per_kind() {
        let p = Provider::groq(Secret::new("k"));
        let u = p.upstream_uri("/v1/chat/completions", Some("a=1"), None).unwrap();
        assert_eq!(u.to_string(), "https://api.groq.com/openai/v1/chat/completions?a=1");
        let u = p.upstream_uri("/chat/completions", None, None).unwrap();
        assert_eq!(u.to_string(), "https://api.groq.com/openai/v1/chat/completions");

        let az = Provider::azure("https://acme.openai.azure.com", "2024-10-21", Secret::new("k")).unwrap();
        let u = az.upstream_uri("/v1/chat/completions", Some("ignored=1"), Some("gpt4o-prod")).unwrap();
        assert_eq!(
            u.to_string(),
            "https://acme.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
        );
        assert!(az.upstream_uri("/v1/models", None, Some("d")).is_err());
        assert!(az.upstream_uri("/v1/embeddings", None, Some("../x")).is_err());
        assert!(az.upstream_uri("/v1/embeddings", None, None).is_err());
    }

    #[test]
    fn headers_per_kind() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer client-key".parse().unwrap());
        h.insert("x-api-key", "client".parse().unwrap());
        Provider::anthropic(Secret::new("ant-key")).apply_headers(&mut h);
        assert_eq!(h["x-api-key"], "ant-key");
        assert!(h["x-api-key"].is_sensitive());
        assert!(!h.contains_key("authorization"));
        assert_eq!(h["anthropic-version"], ANTHROPIC_VERSION);

        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer client-key".parse().unwrap());
        Provider::ollama().apply_headers(&mut h);
        assert!(h.is_empty(), "client credentials are dropped by default");

        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer byok".parse().unwrap());
        Provider::ollama().forward_client_auth(true).apply_headers(&mut h);
        assert_eq!(h["authorization"], "Bearer byok");
    }
}
