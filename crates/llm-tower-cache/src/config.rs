//! [`CacheConfig`] and [`Strategy`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use llm_tower_core::{KeyFn, LlmBody};

/// A predicate choosing the requests to cache under [`Strategy::Selective`].
pub type Predicate = Arc<dyn Fn(&Request<LlmBody>) -> bool + Send + Sync>;

/// Which requests are cached.
#[derive(Clone, Default)]
pub enum Strategy {
    /// Every cacheable request (chat, responses, messages, embeddings).
    Aggressive,
    /// Only requests with one right answer: `temperature` 0 or a `seed`
    /// (embeddings always). The default: a cache must never freeze what
    /// was meant to vary.
    #[default]
    Conservative,
    /// Requests the predicate accepts, and requests that opt in with the
    /// header `x-llm-cache: on`.
    Selective(Option<Predicate>),
    /// Nothing (every response says `x-llm-cache: BYPASS`).
    Disabled,
}

impl fmt::Debug for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Aggressive => "Aggressive",
            Strategy::Conservative => "Conservative",
            Strategy::Selective(_) => "Selective",
            Strategy::Disabled => "Disabled",
        })
    }
}

/// Cache settings. Defaults: conservative, 256 MiB, TTL one hour (at most one
/// day per request), entries up to 8 MiB, bodies over 64 KiB compressed (a
/// hit then decompresses: lz4 runs at a few GB/s, about 10 µs per 32 KiB,
/// so the common answer of a few KiB is kept as it is),
/// `user` / `metadata` / `store` / `service_tier` ignored in keys, answers cut
/// at `max_tokens` not stored, identical concurrent misses coalesced (a
/// waiter gives up after 60 s), scoped by tenant.
///
/// ```
/// use std::time::Duration;
/// use llm_tower_cache::{CacheConfig, Strategy};
/// let cfg = CacheConfig::default().strategy(Strategy::Aggressive).max_bytes(64 << 20).ttl(Duration::from_secs(600));
/// assert_eq!(cfg.max_bytes, 64 << 20);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Which requests are cached.
    pub strategy: Strategy,
    /// Memory bound for stored bodies and bookkeeping, bytes.
    pub max_bytes: u64,
    /// Time to live of an entry.
    pub ttl: Duration,
    /// Longest TTL a request may ask for (`cache-control: max-age`, `x-llm-cache-ttl`).
    pub max_ttl: Duration,
    /// Larger answers are passed through, not stored.
    pub max_entry_bytes: usize,
    /// Bodies larger than this are stored lz4-compressed (`None`: never).
    pub compress_above: Option<usize>,
    /// Top-level request fields that do not change the answer.
    pub ignored_fields: Vec<String>,
    /// Store answers cut short by the token limit (`finish_reason: length`).
    pub store_truncated: bool,
    /// Identical concurrent misses make one upstream call.
    pub coalesce: bool,
    /// How long a coalesced request waits for the first before going alone.
    pub max_coalesce_wait: Duration,
    /// Partitions entries (tenants never see each other's).
    pub scope: KeyFn,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            strategy: Strategy::default(),
            max_bytes: 256 << 20,
            ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(86_400),
            max_entry_bytes: 8 << 20,
            compress_above: Some(64 << 10),
            ignored_fields: ["user", "metadata", "store", "service_tier"].map(String::from).to_vec(),
            store_truncated: false,
            coalesce: true,
            max_coalesce_wait: Duration::from_secs(60),
            scope: KeyFn::tenant(),
        }
    }
}

impl CacheConfig {
    /// Sets the strategy.
    pub fn strategy(mut self, s: Strategy) -> Self {
        self.strategy = s;
        self
    }

    /// Sets the memory bound.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// Sets the default TTL.
    pub fn ttl(mut self, d: Duration) -> Self {
        self.ttl = d;
        self
    }

    /// Sets the longest TTL a request may ask for.
    pub fn max_ttl(mut self, d: Duration) -> Self {
        self.max_ttl = d;
        self
    }

    /// Sets the largest answer stored.
    pub fn max_entry_bytes(mut self, n: usize) -> Self {
        self.max_entry_bytes = n;
        self
    }

    /// Sets the compression threshold (`None`: never compress).
    pub fn compress_above(mut self, n: Option<usize>) -> Self {
        self.compress_above = n;
        self
    }

    /// Sets the ignored top-level request fields.
    pub fn ignored_fields<I: IntoIterator<Item = S>, S: Into<String>>(mut self, fields: I) -> Self {
        self.ignored_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Whether answers cut at `max_tokens` are stored.
    pub fn store_truncated(mut self, yes: bool) -> Self {
        self.store_truncated = yes;
        self
    }

    /// Whether identical concurrent misses coalesce.
    pub fn coalesce(mut self, yes: bool) -> Self {
        self.coalesce = yes;
        self
    }

    /// How long a coalesced request waits for the first.
    pub fn max_coalesce_wait(mut self, d: Duration) -> Self {
        self.max_coalesce_wait = d;
        self
    }

    /// Sets the scope (default: the tenant).
    pub fn scope(mut self, key_fn: KeyFn) -> Self {
        self.scope = key_fn;
        self
    }
}
