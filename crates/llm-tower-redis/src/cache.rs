//! [`RedisCache`]: the response cache's second tier ([`L2`]) in Redis.

use std::time::Duration;

use bytes::Bytes;
use llm_tower_cache::{CacheKey, L2, L2Future};

use crate::Redis;

/// Stores an entry and records it in its scope's set, whose TTL is the
/// longest of its entries'. KEYS: the entry, the scope's set; ARGV: the
/// value, the TTL in ms, the entry's key as the set knows it.
const PUT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
";

/// How many keys one `DEL` removes at most.
const BATCH: usize = 500;

/// The response cache's shared tier: each entry one Redis string with its
/// TTL, in the cache's own encoding (bodies over the cache's
/// `compress_above` are lz4-compressed before they get here), so a gateway
/// answers from what another stored. In front of it each gateway keeps its
/// in-memory tier (moka): a hit there makes no round trip; a miss there asks
/// Redis (within the command timeout; a slow or dead Redis is a miss, never
/// an error), and a hit from Redis is kept in memory too.
///
/// Values over `max_value_bytes` (default 1 MiB) are kept in memory only:
/// a large value would hold the shared connection for every other call.
///
/// **Single flight stays local.** Identical concurrent misses on one
/// gateway make one upstream call; the same miss on two gateways at once
/// makes one each (the second store overwrites the first with an equal
/// answer). Coordinating flights across gateways would put a lock round trip
/// on every miss; the duplicate it saves is at most one call per gateway per
/// key per TTL.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), llm_tower_core::BoxError> {
/// use llm_tower_cache::{CacheConfig, CacheLayer};
/// let redis = llm_tower_redis::Redis::connect("redis://127.0.0.1:6379", Default::default()).await?;
/// // Every gateway with this line answers from what any of them stored.
/// let cache = CacheLayer::new(CacheConfig::default()).with_l2(redis.cache());
/// # let _ = cache; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisCache {
    redis: Redis,
    /// `<prefix>cache:`.
    space: String,
    max_value_bytes: usize,
    put: std::sync::Arc<redis::Script>,
}

impl RedisCache {
    pub(crate) fn new(redis: Redis) -> Self {
        let space = format!("{}cache:", redis.prefix());
        RedisCache {
            redis,
            space,
            max_value_bytes: 1 << 20,
            put: std::sync::Arc::new(redis::Script::new(PUT)),
        }
    }

    /// The largest value stored in Redis (default 1 MiB).
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
    }

    fn entry(&self, key: CacheKey) -> String {
        format!("{}e:{key}", self.space)
    }

    fn scope(&self, scope: &str) -> String {
        format!("{}s:{scope}", self.space)
    }

    /// Deletes `keys` in batches.
    async fn delete(redis: &Redis, keys: Vec<String>) -> Result<(), llm_tower_core::BoxError> {
        for chunk in keys.chunks(BATCH) {
            let _: i64 = redis.query(redis::cmd("DEL").arg(chunk)).await?;
        }
        Ok(())
    }
}

impl L2 for RedisCache {
    fn get(&self, key: CacheKey) -> L2Future<Option<Bytes>> {
        let (redis, k) = (self.redis.clone(), self.entry(key));
        Box::pin(async move {
            let v: Option<Vec<u8>> = redis.query(redis::cmd("GET").arg(&k)).await?;
            Ok(v.map(Bytes::from))
        })
    }

    fn put(&self, key: CacheKey, scope: &str, value: Bytes, ttl: Duration) -> L2Future<()> {
        if value.len() > self.max_value_bytes {
            metrics::counter!("llm_tower_cache_l2_too_large_total").increment(1);
            return Box::pin(async { Ok(()) });
        }
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let (redis, script) = (self.redis.clone(), self.put.clone());
        let (entry, set) = (self.entry(key), self.scope(scope));
        Box::pin(async move {
            let mut inv = script.key(entry);
            inv.key(set).arg(value.as_ref()).arg(ms).arg(key.to_string());
            let _: i64 = redis.invoke(&inv).await?;
            Ok(())
        })
    }

    fn invalidate(&self, key: CacheKey) -> L2Future<()> {
        let (redis, k) = (self.redis.clone(), self.entry(key));
        Box::pin(async move {
            let _: i64 = redis.query(redis::cmd("DEL").arg(&k)).await?;
            Ok(())
        })
    }

    fn invalidate_scope(&self, scope: &str) -> L2Future<()> {
        let this = self.clone();
        let set = self.scope(scope);
        Box::pin(async move {
            let members: Vec<String> = this.redis.query(redis::cmd("SMEMBERS").arg(&set)).await?;
            let mut keys: Vec<String> = members.iter().map(|m| format!("{}e:{m}", this.space)).collect();
            keys.push(set);
            Self::delete(&this.redis, keys).await
        })
    }

    fn clear(&self) -> L2Future<()> {
        let (redis, pattern) = (self.redis.clone(), format!("{}*", self.space));
        Box::pin(async move {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis
                    .query(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000))
                    .await?;
                Self::delete(&redis, keys).await?;
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })
    }
}
