//! [`RedisKeys`]: virtual keys shared by every gateway on one Redis.

use llm_tower_auth::{KeyRecord, KeySource, KeyStore, StoreFuture};

use crate::Redis;

/// A [`KeyStore`] in one Redis hash (`<prefix>keys`: name -> the record as
/// JSON, only its hash, never the key): a key the admin API creates on one
/// gateway is in the others' store at once. (Each gateway loads the store at
/// start; one that should see keys created elsewhere without a restart
/// reloads it, see the gateway's docs.)
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), llm_tower_core::BoxError> {
/// use llm_tower_auth::KeyStore;
/// let redis = llm_tower_redis::Redis::connect("redis://127.0.0.1:6379", Default::default()).await?;
/// let keys = redis.keys();
/// println!("{} keys", keys.load().await?.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisKeys {
    redis: Redis,
    hash: String,
}

impl RedisKeys {
    pub(crate) fn new(redis: Redis) -> Self {
        let hash = format!("{}keys", redis.prefix());
        RedisKeys { redis, hash }
    }
}

impl KeyStore for RedisKeys {
    fn load(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        Box::pin(async move {
            let all: Vec<(String, String)> = self.redis.query(redis::cmd("HGETALL").arg(&self.hash)).await?;
            let mut out = Vec::with_capacity(all.len());
            for (name, json) in all {
                let mut rec: KeyRecord =
                    serde_json::from_str(&json).map_err(|e| format!("key {name} in Redis: {e}"))?;
                rec.source = KeySource::Admin;
                out.push(rec);
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn put(&self, record: KeyRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let json = serde_json::to_string(&record)?;
            let _: i64 =
                self.redis.query(redis::cmd("HSET").arg(&self.hash).arg(&record.name).arg(json)).await?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let n: i64 = self.redis.query(redis::cmd("HDEL").arg(&self.hash).arg(name)).await?;
            Ok(n > 0)
        })
    }
}
