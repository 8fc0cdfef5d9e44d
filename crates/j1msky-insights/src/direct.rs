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
use std::time::{Duration, Instant};

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, Statement, ToSql, Transaction, TransactionBehavior};

use crate::InsightsError;

/// The rebuild connection's page cache, in KiB (negative: SQLite's unit for "KiB"); as
/// `bulk`'s for the SQL rebuild: SQLite's sorter also keeps up to this much in memory.
const CACHE_KIB: i64 = 1 << 20;

/// How much of the file the reading connection maps (SQLite caps it at its compiled-in
/// maximum, 2 GB by default; pages beyond it are read through the cache).
const READER_MMAP: i64 = 1 << 34;

/// How long the rebuild waits for a writer that holds the lock (the pool's own timeout).
const BUSY: Duration = Duration::from_secs(10);

/// A rusqlite error as the crate's error (as a storage error, like sqlx's).
pub fn err(e: rusqlite::Error) -> InsightsError {
    InsightsError::Db(j1msky_db::DbError::Sqlx(sqlx::Error::Io(std::io::Error::other(format!(
        "kpi rebuild on SQLite: {e}"
    )))))
}

/// An error of the rebuild's own making (a thread stopped, a table not as expected), as
/// a storage error prefixed "kpi rebuild".
pub fn broken(what: impl std::fmt::Display) -> InsightsError {
    InsightsError::Db(j1msky_db::DbError::Corrupt(format!("kpi rebuild: {what}")))
}

/// Opens `file` for the rebuild (busy timeout, the page cache above).
fn open(file: &Path) -> Result<Connection, InsightsError> {
    let conn = Connection::open(file).map_err(err)?;
    conn.busy_timeout(BUSY).map_err(err)?;
    // The file is in WAL mode already (the pool sets it); these are per connection.
    conn.execute_batch(&format!("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -{CACHE_KIB};")).map_err(err)?;
    Ok(conn)
}

/// Logs (at debug, `RUST_LOG=j1msky_insights=debug`) how long a step of a rebuild took
/// since `since`, and starts the next step's clock: where an operator's rebuild spends
/// its time.
pub(crate) fn step(since: &mut Instant, what: &str) {
    let now = Instant::now();
    tracing::debug!(step = what, seconds = format!("{:.1}", (now - *since).as_secs_f64()), "kpi rebuild step");
    *since = now;
}

/// Runs `work` on a blocking thread, as the crate's error.
async fn blocking<T: Send + 'static>(
    run: impl FnOnce() -> Result<T, InsightsError> + Send + 'static,
) -> Result<T, InsightsError> {
    tokio::task::spawn_blocking(run).await.map_err(|e| broken(format!("its thread: {e}")))?
}

/// Runs `work` in one immediate transaction on a new connection to `file`, on a blocking
/// thread, and commits it when `work` succeeds (rolls back otherwise).
pub async fn in_transaction<T, F>(file: &Path, work: F) -> Result<T, InsightsError>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> Result<T, InsightsError> + Send + 'static,
{
    let file: PathBuf = file.to_owned();
    blocking(move || immediate(&file, |tx| work(tx).map(|out| (out, ())))).await
}

/// Opens `file`, runs `work` in one immediate transaction on it, and commits it when
/// `work` succeeds (dropping it rolls back otherwise). What `work` hands back besides its
/// result is freed on another thread while the commit writes: the rebuild's sums at
/// 20,000,000 tasks took ~3 s to free, about as long as the commit of a merge.
fn immediate<T, L: Send>(
    file: &Path,
    work: impl FnOnce(&Transaction<'_>) -> Result<(T, L), InsightsError>,
) -> Result<T, InsightsError> {
    let mut conn = open(file)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
    let mut clock = Instant::now();
    let (out, leftovers) = work(&tx)?;
    step(&mut clock, "written");
    // A scoped thread, joined before this returns: only the freeing of this one rebuild's sums.
    std::thread::scope(|s| {
        s.spawn(move || drop(leftovers));
        tx.commit().map_err(err)
    })?;
    step(&mut clock, "committed");
    Ok(out)
}

/// As [`in_transaction`], with `N` more connections to `file`, each in a read transaction
/// that sees exactly what the writer's transaction saw when it began: they are opened
/// after the writer holds the write lock, so nothing can commit in between (and nothing
/// does until the writer commits). `work` may hand the readers to other threads (WAL
/// readers run beside the writer); a reader's transaction ends when it is dropped (closed).
/// Besides its result `work` hands back what it is done with, freed while the transaction
/// commits.
pub async fn in_transaction_with_readers<const N: usize, T, L, F>(file: &Path, work: F) -> Result<T, InsightsError>
where
    T: Send + 'static,
    L: Send,
    F: FnOnce(&Transaction<'_>, [Connection; N]) -> Result<(T, L), InsightsError> + Send + 'static,
{
    let file: PathBuf = file.to_owned();
    blocking(move || {
        immediate(&file, |tx| {
            let mut readers = Vec::with_capacity(N);
            for _ in 0..N {
                let reader = open(&file)?;
                // The reader's pages straight from the mapped file: with SQLite's page caches in
                // one shared group (as this build of SQLite makes them), every page the reader
                // fetched through its cache took the lock the writer's cache takes too (the reads
                // at 100,000 customers took 6-8 s this way against 12 s through the cache).
                reader.execute_batch(&format!("PRAGMA mmap_size = {READER_MMAP}")).map_err(err)?;
                // A read transaction begins at its first read: take the snapshot now.
                reader.execute_batch("BEGIN").map_err(err)?;
                reader.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map_err(err)?;
                readers.push(reader);
            }
            let readers: [Connection; N] = readers.try_into().map_err(|_| broken("the reading connections"))?;
            work(tx, readers)
        })
    })
    .await
}

/// Drops `table`'s secondary indexes, returning their `CREATE INDEX` statements (see
/// `bulk::drop_indexes`: one sorted build after the rows instead of random inserts).
pub fn drop_indexes(tx: &Connection, table: &str) -> Result<Vec<String>, InsightsError> {
    let mut stmt = tx.prepare(crate::bulk::SECONDARY_INDEXES).map_err(err)?;
    let indexes: Vec<(String, String)> =
        stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?.collect::<Result<_, _>>().map_err(err)?;
    for (name, _) in &indexes {
        tx.execute_batch(&crate::bulk::drop_index(name)).map_err(err)?;
    }
    Ok(indexes.into_iter().map(|(_, sql)| sql).collect())
}

/// Creates the indexes [`drop_indexes`] dropped.
pub fn create_indexes(tx: &Connection, statements: &[String]) -> Result<(), InsightsError> {
    for sql in statements {
        tx.execute_batch(sql).map_err(err)?;
    }
    Ok(())
}

/// SQLite's sorter memory per run while [`create_indexes_on_both_cores`] builds, in KiB
/// (the page cache bounds a run).
const SORT_RUN_KIB: i64 = 1 << 16;

/// As [`create_indexes`], with SQLite's sorter on two threads: it sorts runs of
/// [`SORT_RUN_KIB`] on a helper thread while the next run is read, and merges them on
/// both. For the end of the rebuild, when the reading thread is done and the second core
/// free: at 1,000,000 customers and 20,000,000 tasks `insights_tasks_times` took 78.8 s
/// on one thread with the rebuild's whole cache as one run, 44.1 s this way, with less
/// CPU (smaller runs sort faster; docs/BENCHMARKS.md). The cache and threads are given
/// back after (a smaller cache inside the transaction only writes dirty pages to the WAL
/// sooner, which the commit would have written anyway).
pub fn create_indexes_on_both_cores(tx: &Connection, statements: &[String]) -> Result<(), InsightsError> {
    tx.execute_batch(&format!("PRAGMA threads = 2; PRAGMA cache_size = -{SORT_RUN_KIB};")).map_err(err)?;
    let mut clock = Instant::now();
    let built = create_indexes(tx, statements);
    step(&mut clock, "indexes built");
    tx.execute_batch(&format!("PRAGMA threads = 0; PRAGMA cache_size = -{CACHE_KIB};")).map_err(err)?;
    built
}

/// One value of a row [`Insert`] writes (borrowed text, an integer or NULL).
#[derive(Clone, Copy)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Null,
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Text(s)
    }
}

impl From<i64> for Value<'_> {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Value::Text(s) => ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(s.as_bytes())),
            Value::Int(i) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(i)),
            Value::Null => ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Null),
        })
    }
}

/// A prepared single-row INSERT for one table.
pub(crate) struct Insert<'c> {
    stmt: Statement<'c>,
}

impl<'c> Insert<'c> {
    pub(crate) fn new(conn: &'c Connection, table: &str, columns: &[&str]) -> Result<Self, InsightsError> {
        let marks = vec!["?"; columns.len()].join(", ");
        let sql = format!("INSERT INTO {table} ({}) VALUES ({marks})", columns.join(", "));
        Ok(Insert { stmt: conn.prepare(&sql).map_err(err)? })
    }

    /// Writes one row, its values in the columns' order.
    pub(crate) fn push<'v>(&mut self, row: impl IntoIterator<Item = Value<'v>>) -> Result<(), InsightsError> {
        for (i, v) in row.into_iter().enumerate() {
            self.stmt.raw_bind_parameter(i + 1, v).map_err(err)?;
        }
        self.stmt.raw_execute().map_err(err)?;
        Ok(())
    }
}
