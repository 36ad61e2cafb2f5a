//! The state file over real SQLite files in the temp directory.

use std::path::PathBuf;
use std::time::Duration;

use llm_tower_auth::{KeyStore, contract};
use llm_tower_core::Key;
use llm_tower_sqlite::SqliteState;
use llm_tower_tokens::{AccountingConfig, Budget, BudgetStore, Period, TokenAccountingLayer, Usage};

/// A fresh path for one test (removed with its WAL files when dropped).
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("llm-tower-sqlite-{}-{name}.db", std::process::id()));
        let db = TempDb(p);
        db.clean();
        db
    }

    fn clean(&self) {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", self.0.display()));
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.clean();
    }
}

#[tokio::test]
async fn the_file_keeps_the_key_store_contract_and_is_in_wal_mode() {
    let db = TempDb::new("contract");
    let state = SqliteState::open(&db.0).await.unwrap();
    assert_eq!(state.journal_mode().await.unwrap().as_deref(), Some("wal"));
    contract::key_store(&state).await;
}

#[tokio::test]
async fn keys_spend_and_usage_survive_a_reopen() {
    let db = TempDb::new("reopen");
    let budget = Budget { limit_micros: 1_000, period: Period::Day };
    let team = Key::from_static("team-a");
    {
        let state = SqliteState::open(&db.0).await.unwrap();
        let rec = llm_tower_auth::KeyRecord {
            name: "team-a".into(),
            hash: llm_tower_auth::KeyHash::of("llmt-a"),
            grant: Default::default(),
            created_unix: 1,
            source: llm_tower_auth::KeySource::Admin,
        };
        state.put(rec).await.unwrap();
        let acc = TokenAccountingLayer::new(AccountingConfig::default());
        let r = acc.budgets().reserve(&team, &budget, 400).await.unwrap();
        acc.budgets().settle(&team, &budget, r, 700);
        acc.ledger().record(
            "team-a",
            "gpt-4o-mini",
            "mock",
            &Usage { input: 5, output: 7, ..Default::default() },
            700,
        );
        let flusher = state.spawn_flusher(acc.clone(), Duration::from_secs(1));
        let done = flusher.shutdown().await.unwrap();
        assert_eq!((done.accounts, done.ledger_lines), (1, 1), "shutdown writes what the ticks had not");
    }
    let state = SqliteState::open(&db.0).await.unwrap();
    let keys = state.load().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].hash, llm_tower_auth::KeyHash::of("llmt-a"));
    let acc = TokenAccountingLayer::new(AccountingConfig::default());
    let restored = state.restore(&acc).await.unwrap();
    assert_eq!((restored.accounts, restored.ledger_lines), (1, 1));
    assert_eq!(acc.budgets().balance(&team), Some((700, 0)), "spend continues where it was");
    assert!(acc.budgets().reserve(&team, &budget, 400).await.is_err(), "700 + 400 is over the 1,000 budget");
    acc.budgets().reserve(&team, &budget, 300).await.unwrap();
    let line = &acc.ledger().entries()[0];
    assert_eq!((line.total.requests, line.total.output_tokens, line.total.cost_micros), (1, 7, 700));
    // Restoring is not a change to write back.
    assert_eq!(state.flush(&acc).await.unwrap().ledger_lines, 0);
}

#[tokio::test]
async fn a_period_keeps_its_start_across_a_restart() {
    let db = TempDb::new("period");
    let budget = Budget { limit_micros: 1_000, period: Period::Day };
    let team = Key::from_static("t");
    let state = SqliteState::open(&db.0).await.unwrap();
    let acc = TokenAccountingLayer::new(AccountingConfig::default());
    let r = acc.budgets().reserve(&team, &budget, 1_000).await.unwrap();
    acc.budgets().settle(&team, &budget, r, 1_000);
    state.flush(&acc).await.unwrap();
    let again = TokenAccountingLayer::new(AccountingConfig::default());
    state.restore(&again).await.unwrap();
    let snap = again.budgets().drain_changed();
    assert!(snap.is_empty(), "a restored account is not changed");
    assert!(again.budgets().reserve(&team, &budget, 1).await.is_err(), "the day is spent, and not over");
}

#[tokio::test]
async fn a_bad_path_or_a_newer_schema_is_a_typed_error() {
    let err = SqliteState::open("/proc/llm-tower-cannot-write-here/state.db").await.unwrap_err();
    assert!(err.to_string().starts_with("state file /proc/llm-tower-cannot-write-here/state.db:"), "{err}");
    let db = TempDb::new("newer");
    {
        let c = rusqlite::Connection::open(&db.0).unwrap();
        c.pragma_update(None, "user_version", 9).unwrap();
    }
    let err = SqliteState::open(&db.0).await.unwrap_err();
    assert!(err.to_string().contains("newer llm-tower"), "{err}");
}
