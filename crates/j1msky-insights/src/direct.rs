//! `kpi rebuild` on a SQLite file through a connection of its own, driven directly
//! (rusqlite, the same bundled SQLite sqlx links). Through sqlx every row read or written
//! is handed between sqlx's worker thread and ours (about 10 µs a row, most of an
//! in-memory rebuild's time at a million customers); here a prepared statement is
//! stepped and bound in place, well under a microsecond a value.
//!
//! The work runs on a blocking thread inside one `BEGIN IMMEDIATE` transaction: it takes
//! the write lock first, so a consumer that runs meanwhile waits and then finds nothing
//! to change (as with the SQL rebuild's transaction), and readers keep the old rows and
//! indexes until the commit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::InsightsError;

/// The rebuild connection's page cache, in KiB (negative: SQLite's unit for "KiB"); as
/// `bulk`'s for the SQL rebuild: SQLite's sorter also keeps up to this much in memory.
const CACHE_KIB: i64 = 1 << 20;

/// How long the rebuild waits for a writer that holds the lock (the pool's own timeout).
const BUSY: Duration = Duration::from_secs(10);

/// A rusqlite error as the crate's error (as a storage error, like sqlx's).
pub fn err(e: rusqlite::Error) -> InsightsError {
    InsightsError::Db(j1msky_db::DbError::Sqlx(sqlx::Error::Io(std::io::Error::other(format!(
        "kpi rebuild on SQLite: {e}"
    )))))
}

/// Runs `work` in one immediate transaction on a new connection to `file`, on a blocking
/// thread, and commits it when `work` succeeds (rolls back otherwise).
pub async fn in_transaction<T, F>(file: &Path, work: F) -> Result<T, InsightsError>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> Result<T, InsightsError> + Send + 'static,
{
    let file: PathBuf = file.to_owned();
    let run = move || {
        let mut conn = Connection::open(&file).map_err(err)?;
        conn.busy_timeout(BUSY).map_err(err)?;
        // The file is in WAL mode already (the pool sets it); these are per connection.
        conn.execute_batch(&format!("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -{CACHE_KIB};")).map_err(err)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let out = work(&tx)?;
        tx.commit().map_err(err)?;
        Ok(out)
    };
    tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| InsightsError::Db(j1msky_db::DbError::Corrupt(format!("kpi rebuild thread: {e}"))))?
}

/// Drops `table`'s secondary indexes, returning their `CREATE INDEX` statements (see
/// `bulk::drop_indexes`: one sorted build after the rows instead of random inserts).
pub fn drop_indexes(tx: &Transaction<'_>, table: &str) -> Result<Vec<String>, InsightsError> {
    let mut stmt = tx.prepare(crate::bulk::SECONDARY_INDEXES).map_err(err)?;
    let indexes: Vec<(String, String)> =
        stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?.collect::<Result<_, _>>().map_err(err)?;
    for (name, _) in &indexes {
        tx.execute_batch(&crate::bulk::drop_index(name)).map_err(err)?;
    }
    Ok(indexes.into_iter().map(|(_, sql)| sql).collect())
}

/// Creates the indexes [`drop_indexes`] dropped.
pub fn create_indexes(tx: &Transaction<'_>, statements: &[String]) -> Result<(), InsightsError> {
    for sql in statements {
        tx.execute_batch(sql).map_err(err)?;
    }
    Ok(())
}
