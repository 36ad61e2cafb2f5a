//! State shared by every gateway on one Redis: the limiter's store (provider
//! and tenant quotas held across instances, atomically), the budget store
//! (tenants' spend), the response cache's second tier and the virtual-key
//! store.
//!
//! The client is [`redis`] (redis-rs) with its tokio connection manager: one
//! multiplexed connection that reconnects by itself, `redis://` and (feature
//! `tls`) `rediss://` URLs. redis-rs is the most used Rust client, its
//! connection manager is the reconnecting multiplexed connection this needs,
//! and its `Script` calls by SHA and reloads on `NOSCRIPT`; `fred` is as
//! capable but larger than a shared limiter needs.
//!
//! - [`RedisLimits`]: a `RateLimitStore` (one Lua script, Redis `TIME`).
//! - [`RedisBudgets`]: a `BudgetStore` (one Lua script, leased reservations).
//! - [`RedisCache`]: the response cache's `L2`.
//! - [`RedisKeys`]: a `KeyStore`.
//! - [`RedisServer`]: a throwaway `redis-server` for tests and demos.
//!
//! No call waits longer than [`RedisConfig::command_timeout`] (50 ms by
//! default): a dead Redis is an error at once, not a hung request.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), llm_tower_core::BoxError> {
//! use llm_tower_redis::{Redis, RedisConfig};
//! let redis = Redis::connect("redis://127.0.0.1:6379", RedisConfig { prefix: "prod:".into(), ..Default::default() }).await?;
//! redis.ping().await?;
//! let store = redis.limits("openai"); // give it to RateLimitLayer::with_store
//! # let _ = store; Ok(()) }
//! ```
#![deny(missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use llm_tower_core::BoxError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

mod budgets;
mod cache;
mod keys;
mod limits;
mod server;

pub use budgets::{RedisBudgets, Reserve as BudgetReserve};
pub use cache::RedisCache;
pub use keys::RedisKeys;
pub use limits::{OnRedisError, RedisLimits, Reserve};
pub use server::RedisServer;

/// Whose clock the scripts read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The Redis server's `TIME`: every gateway reads the same clock.
    #[default]
    Redis,
    /// This process's tokio clock, so tests on paused time can advance it
    /// (one process only; no command timeout, which paused time would fire).
    Tokio,
}

/// How to use a Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Put before every key (one deployment's keys apart from another's).
    /// Default `llm-tower:`.
    pub prefix: String,
    /// The longest one command may take, connecting included. Default 50 ms.
    pub command_timeout: Duration,
    /// Whose clock decides. Default [`Clock::Redis`].
    pub clock: Clock,
    /// For `rediss://` URLs (feature `tls`): the PEM certificate(s) of the
    /// CA that signed the server's certificate, trusted instead of the
    /// system's roots (a private CA). `None`: the system's roots.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "llm-tower:".into(),
            command_timeout: Duration::from_millis(50),
            clock: Clock::Redis,
            tls_ca_pem: None,
        }
    }
}

/// A connection to one Redis, shared by every store made from it (cheap to
/// clone).
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    prefix: Arc<str>,
    cfg: Arc<RedisConfig>,
    /// The limiter's and the budgets' scripts.
    scripts: Arc<[redis::Script; 2]>,
    /// The tokio clock's zero, for [`Clock::Tokio`].
    base: tokio::time::Instant,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("clock", &self.cfg.clock)
            .finish_non_exhaustive()
    }
}

/// A call that did not answer within the command timeout.
#[derive(Debug)]
struct TimedOut(Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis did not answer within {} ms", self.0.as_millis())
    }
}

impl std::error::Error for TimedOut {}

impl Redis {
    /// Connects to `url` (`redis://host:port/db`, or `rediss://` with the
    /// `tls` feature). The password, if the URL has one, is never logged.
    pub async fn connect(url: &str, cfg: RedisConfig) -> Result<Self, BoxError> {
        let client = Self::client(url, &cfg)?;
        let mut mc = ConnectionManagerConfig::new().set_number_of_retries(1);
        if cfg.clock == Clock::Redis {
            mc = mc
                .set_connection_timeout(Some(cfg.command_timeout))
                .set_response_timeout(Some(cfg.command_timeout));
        } else {
            mc = mc.set_connection_timeout(None).set_response_timeout(None);
        }
        let conn = ConnectionManager::new_with_config(client, mc).await?;
        let scripts = Arc::new([redis::Script::new(limits::SCRIPT), redis::Script::new(budgets::SCRIPT)]);
        let redis = Redis {
            conn,
            prefix: cfg.prefix.as_str().into(),
            cfg: Arc::new(cfg),
            scripts,
            base: tokio::time::Instant::now(),
        };
        // Loaded once; each call is by SHA (and reloads on NOSCRIPT, after
        // a Redis restart).
        for script in [limits::SCRIPT, budgets::SCRIPT] {
            let _: String = redis.query(redis::cmd("SCRIPT").arg("LOAD").arg(script)).await?;
        }
        Ok(redis)
    }

    fn client(url: &str, cfg: &RedisConfig) -> Result<redis::Client, BoxError> {
        let tls = url.starts_with("rediss://");
        if tls && !cfg!(feature = "tls") {
            return Err("rediss:// needs llm-tower-redis's `tls` feature".into());
        }
        if cfg.tls_ca_pem.is_some() && !tls {
            return Err("a TLS CA is given for a redis:// URL (rediss:// is TLS)".into());
        }
        #[cfg(feature = "tls")]
        if let Some(pem) = &cfg.tls_ca_pem {
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
            return Ok(redis::Client::build_with_tls(url, certs)?);
        }
        Ok(redis::Client::open(url)?)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A limiter's store, its keys under `namespace` (a provider's name,
    /// `tenants`): give it to `RateLimitLayer::with_store`.
    pub fn limits(&self, namespace: &str) -> RedisLimits {
        RedisLimits::new(self.clone(), namespace)
    }

    /// A budget store, its accounts under `namespace` (`tenants`): give it
    /// to `TokenAccountingLayer::with_store`.
    pub fn budgets(&self, namespace: &str) -> RedisBudgets {
        RedisBudgets::new(self.clone(), namespace)
    }

    /// The response cache's shared second tier: give it to
    /// `CacheLayer::with_l2`.
    pub fn cache(&self) -> RedisCache {
        RedisCache::new(self.clone())
    }

    /// The virtual-key store.
    pub fn keys(&self) -> RedisKeys {
        RedisKeys::new(self.clone())
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> Result<(), BoxError> {
        let pong: String = self.query(&mut redis::cmd("PING")).await?;
        if pong == "PONG" { Ok(()) } else { Err(format!("PING answered {pong}").into()) }
    }

    async fn bounded<T>(&self, fut: impl Future<Output = redis::RedisResult<T>>) -> Result<T, BoxError> {
        if self.cfg.clock == Clock::Tokio {
            return Ok(fut.await?);
        }
        match tokio::time::timeout(self.cfg.command_timeout, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => {
                metrics::counter!("llm_tower_redis_timeouts_total").increment(1);
                Err(Box::new(TimedOut(self.cfg.command_timeout)))
            }
        }
    }

    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Result<T, BoxError> {
        let mut conn = self.conn.clone();
        let cmd = cmd.clone();
        self.bounded(async move { cmd.query_async(&mut conn).await }).await
    }

    /// The `now` argument of a script: empty (Redis `TIME`) or the tokio
    /// clock, in microseconds (`millis`: milliseconds).
    pub(crate) fn now_arg(&self, millis: bool) -> String {
        match self.cfg.clock {
            Clock::Redis => String::new(),
            // +1: never zero.
            Clock::Tokio if millis => (self.base.elapsed().as_millis() as u64 + 1).to_string(),
            Clock::Tokio => (self.base.elapsed().as_micros() as u64 + 1).to_string(),
        }
    }

    /// Runs the limiter's script on `key`.
    pub(crate) async fn run_script<T: redis::FromRedisValue>(
        &self,
        key: &str,
        idle_ms: u64,
        args: Vec<String>,
    ) -> Result<T, BoxError> {
        let mut inv = self.scripts[0].key(key);
        inv.arg(self.now_arg(false)).arg(idle_ms);
        for a in &args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        self.bounded(async move { inv.invoke_async(&mut conn).await }).await
    }

    /// Runs a script invocation.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BoxError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { inv.invoke_async(&mut conn).await }).await
    }

    /// Runs the budgets' script on an account's two keys.
    pub(crate) async fn run_budget<T: redis::FromRedisValue>(
        &self,
        keys: [&str; 2],
        args: Vec<String>,
    ) -> Result<T, BoxError> {
        let mut inv = self.scripts[1].key(keys[0]);
        inv.key(keys[1]).arg(self.now_arg(true));
        for a in &args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        self.bounded(async move { inv.invoke_async(&mut conn).await }).await
    }

    /// Starts `fut` now (its command enters the connection's queue before
    /// this returns, so it is ordered before any later command of this
    /// process) and lets it finish in the background.
    pub(crate) fn send_in_order(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut fut = Box::pin(fut);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if fut.as_mut().poll(&mut cx).is_pending() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(fut);
                }
                Err(_) => tracing::warn!("a Redis adjustment outside a tokio runtime was dropped"),
            }
        }
    }
}
