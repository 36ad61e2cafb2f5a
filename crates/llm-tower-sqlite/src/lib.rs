//! The state of one gateway in a SQLite file: virtual keys created at run
//! time, budget spend per period, and the usage ledger, so a restart (a
//! deploy) keeps every key and continues every tenant's spend.
//!
//! - **Keys** ([`SqliteState`] is a [`KeyStore`]): written when the admin API
//!   changes one, before it answers; read at start.
//! - **Spend and usage** live in memory on the hot path (the accounting
//!   layer's `MemoryBudgets` and `Ledger`); a [`Flusher`] writes what changed
//!   every second in one transaction, off the request path, and once more on
//!   shutdown. A crash (not a graceful stop) loses at most the last second of
//!   spend. [`SqliteState::restore`] puts the saved spend back at start; a
//!   budget period keeps its wall-clock start, so it ends when it would have.
//!   With budgets in a shared store (Redis) the store is its own durable
//!   copy: only the ledger is written here.
//! - The file is in WAL mode (readers never block the writer), `synchronous
//!   = NORMAL` (a power loss may lose the last commits, never corrupt), with a
//!   schema version checked at open.
//!
//! Every call runs on tokio's blocking pool: no request thread waits on disk.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use llm_tower_sqlite::SqliteState;
//! use llm_tower_tokens::{AccountingConfig, TokenAccountingLayer, Usage};
//! let path = std::env::temp_dir().join(format!("llm-tower-doc-{}.db", std::process::id()));
//! # let _ = std::fs::remove_file(&path);
//! let state = SqliteState::open(&path).await?;
//! let accounting = TokenAccountingLayer::new(AccountingConfig::default());
//! accounting.ledger().record("team-a", "gpt-4o-mini", "openai", &Usage { input: 10, ..Default::default() }, 3);
//! state.flush(&accounting).await?;
//!
//! // After a restart: the same file, a new accounting layer.
//! let again = TokenAccountingLayer::new(AccountingConfig::default());
//! SqliteState::open(&path).await?.restore(&again).await?;
//! assert_eq!(again.ledger().entries()[0].total.cost_micros, 3);
//! # drop(state); let _ = std::fs::remove_file(&path);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llm_tower_auth::{KeyRecord, KeySource, KeyStore, StoreError, StoreFuture};
use llm_tower_core::Key;
use llm_tower_tokens::{
    AccountSnapshot, BudgetStore, LedgerLine, MemoryBudgets, TokenAccountingLayer, Totals,
};
use rusqlite::{Connection, OptionalExtension, params};

/// The schema this crate writes (`PRAGMA user_version`).
const SCHEMA: i64 = 1;

/// Why the state file could not be used.
#[derive(Debug)]
pub struct StateError {
    path: PathBuf,
    what: String,
}

impl StateError {
    fn new(path: &Path, what: impl fmt::Display) -> Self {
        StateError { path: path.to_owned(), what: what.to_string() }
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state file {}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for StateError {}

/// A gateway's state file. Cheap to clone (one connection, shared).
#[derive(Clone)]
pub struct SqliteState {
    conn: Arc<Mutex<Connection>>,
    path: Arc<Path>,
}

impl fmt::Debug for SqliteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteState").field("path", &self.path).finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteState {
    /// Opens (creating if needed) the state file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path: Arc<Path> = path.as_ref().into();
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || Self::open_blocking(&p))
            .await
            .map_err(|e| StateError::new(&path, e))??;
        Ok(SqliteState { conn: Arc::new(Mutex::new(conn)), path })
    }

    fn open_blocking(path: &Path) -> Result<Connection, StateError> {
        let err = |e: rusqlite::Error| StateError::new(path, e);
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "state file is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        if version > SCHEMA {
            return Err(StateError::new(
                path,
                format!("written by a newer llm-tower (schema {version}, this one knows {SCHEMA})"),
            ));
        }
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS keys (
                 name TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, grant_json TEXT NOT NULL,
                 created_unix INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS budgets (
                 key TEXT PRIMARY KEY, spent_micros INTEGER NOT NULL, period_start_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS ledger (
                 tenant TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL,
                 requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
                 cached_input_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
                 cost_micros INTEGER NOT NULL, PRIMARY KEY (tenant, model, provider));
             PRAGMA user_version = 1;
             COMMIT;",
        )
        .map_err(err)?;
        Ok(conn)
    }

    /// The file's journal mode (`wal` once opened).
    pub async fn journal_mode(&self) -> Result<Option<String>, StateError> {
        self.run(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).optional()).await
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c).map_err(|e| StateError::new(&p, e))
        })
        .await
        .map_err(|e| StateError::new(&path, e))?
    }

    /// Writes what changed in `accounting`'s budgets and ledger since the
    /// last flush, in one transaction. On failure the changes are lost to the
    /// file (they stay in memory and count from there).
    pub async fn flush<St: BudgetStore>(
        &self,
        accounting: &TokenAccountingLayer<St>,
    ) -> Result<Flushed, StateError> {
        let accounts = accounting.budgets().drain_changed();
        let lines = accounting.ledger().drain_changed();
        if accounts.is_empty() && lines.is_empty() {
            return Ok(Flushed::default());
        }
        let done = Flushed { accounts: accounts.len(), ledger_lines: lines.len() };
        self.run(move |c| {
            let now = now_ms();
            let tx = c.transaction()?;
            {
                let mut put = tx.prepare_cached(
                    "INSERT INTO budgets (key, spent_micros, period_start_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET spent_micros = ?2, period_start_ms = ?3",
                )?;
                for a in &accounts {
                    let age = i64::try_from(a.period_age.as_millis()).unwrap_or(i64::MAX);
                    put.execute(params![a.key.as_str(), to_i64(a.spent_micros), now.saturating_sub(age)])?;
                }
                let mut put = tx.prepare_cached(
                    "INSERT INTO ledger VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (tenant, model, provider) DO UPDATE SET requests = ?4, input_tokens = ?5,
                     output_tokens = ?6, cached_input_tokens = ?7, reasoning_tokens = ?8, cost_micros = ?9",
                )?;
                for l in &lines {
                    let t = &l.totals;
                    put.execute(params![
                        &*l.tenant,
                        &*l.model,
                        &*l.provider,
                        to_i64(t.requests),
                        to_i64(t.input_tokens),
                        to_i64(t.output_tokens),
                        to_i64(t.cached_input_tokens),
                        to_i64(t.reasoning_tokens),
                        to_i64(t.cost_micros)
                    ])?;
                }
            }
            tx.commit()
        })
        .await?;
        Ok(done)
    }

    /// Puts the saved spend and usage back into `accounting` (at start,
    /// before it serves).
    pub async fn restore<St: BudgetStore>(
        &self,
        accounting: &TokenAccountingLayer<St>,
    ) -> Result<Flushed, StateError> {
        let (accounts, lines) = self
            .run(|c| {
                let now = now_ms();
                let mut q = c.prepare("SELECT key, spent_micros, period_start_ms FROM budgets")?;
                let accounts = q
                    .query_map([], |r| {
                        let start: i64 = r.get(2)?;
                        Ok(AccountSnapshot {
                            key: Key::from(r.get::<_, String>(0)?),
                            spent_micros: to_u64(r.get(1)?),
                            period_age: Duration::from_millis(to_u64(now.saturating_sub(start))),
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut q = c.prepare("SELECT * FROM ledger")?;
                let lines = q
                    .query_map([], |r| {
                        Ok(LedgerLine {
                            tenant: r.get::<_, String>(0)?.into(),
                            model: r.get::<_, String>(1)?.into(),
                            provider: r.get::<_, String>(2)?.into(),
                            totals: Totals {
                                requests: to_u64(r.get(3)?),
                                input_tokens: to_u64(r.get(4)?),
                                output_tokens: to_u64(r.get(5)?),
                                cached_input_tokens: to_u64(r.get(6)?),
                                reasoning_tokens: to_u64(r.get(7)?),
                                cost_micros: to_u64(r.get(8)?),
                            },
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((accounts, lines))
            })
            .await?;
        for a in &accounts {
            accounting.budgets().restore(a);
        }
        for l in &lines {
            accounting.ledger().restore(l);
        }
        Ok(Flushed { accounts: accounts.len(), ledger_lines: lines.len() })
    }

    /// Flushes `accounting` into this file every `every` (one second is the
    /// documented bound on what a crash loses) until the [`Flusher`] is shut
    /// down, which flushes once more.
    pub fn spawn_flusher<St: BudgetStore>(
        &self,
        accounting: TokenAccountingLayer<St>,
        every: Duration,
    ) -> Flusher<St> {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let state = self.clone();
        let acc = accounting.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = state.flush(&acc).await {
                            tracing::error!(error = %e, "could not save spend and usage");
                        }
                    }
                    _ = &mut stopped => break,
                }
            }
        });
        Flusher { task, stop: Some(stop), state: self.clone(), accounting }
    }
}

/// What a flush or restore moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Budget accounts.
    pub accounts: usize,
    /// Ledger lines.
    pub ledger_lines: usize,
}

/// The background writer of [`SqliteState::spawn_flusher`].
#[derive(Debug)]
pub struct Flusher<St = MemoryBudgets> {
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    state: SqliteState,
    accounting: TokenAccountingLayer<St>,
}

impl<St: BudgetStore> Flusher<St> {
    /// Stops the periodic writes and flushes what is left (graceful shutdown).
    pub async fn shutdown(mut self) -> Result<Flushed, StateError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        self.state.flush(&self.accounting).await
    }
}

impl<St> Drop for Flusher<St> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KeyStore for SqliteState {
    fn load(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        Box::pin(async move {
            let rows = self
                .run(|c| {
                    let mut q =
                        c.prepare("SELECT name, hash, grant_json, created_unix FROM keys ORDER BY name")?;
                    q.query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for (name, hash, grant, created) in rows {
                let bad = |what: &dyn fmt::Display| -> StoreError { format!("key {name}: {what}").into() };
                out.push(KeyRecord {
                    hash: hash.parse().map_err(|e| bad(&e))?,
                    grant: serde_json::from_str(&grant).map_err(|e| bad(&e))?,
                    created_unix: to_u64(created),
                    source: KeySource::Admin,
                    name,
                });
            }
            Ok(out)
        })
    }

    fn put(&self, record: KeyRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let grant = serde_json::to_string(&record.grant)?;
            self.run(move |c| {
                c.execute(
                    "INSERT INTO keys (name, hash, grant_json, created_unix) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET hash = ?2, grant_json = ?3, created_unix = ?4",
                    params![record.name, record.hash.to_string(), grant, to_i64(record.created_unix)],
                )
                .map(drop)
            })
            .await?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        let name = name.to_owned();
        Box::pin(async move {
            let n = self.run(move |c| c.execute("DELETE FROM keys WHERE name = ?1", [name])).await?;
            Ok(n > 0)
        })
    }
}
