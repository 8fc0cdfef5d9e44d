//! What `kpi rebuild` does around its bulk statements on SQLite: a bigger page cache for
//! its transaction's connection (SQLite's sorter also keeps up to that much in memory
//! before it spills to temporary files), and a rollup table's secondary
//! indexes dropped before its rows are written and created again after (one sorted build
//! instead of millions of random inserts into each index). Both happen inside the
//! rebuild's transaction, so readers keep the old rows and indexes until it commits.
//!
//! PostgreSQL is left as it is: dropping an index there takes a lock that would make the
//! board wait for the whole rebuild. (`temp_store` is not set: SQLite refuses to change
//! it inside a transaction. Nor is `threads`: with helper threads SQLite's sorter splits
//! each sort into runs it merges, and the rebuild's model-cost GROUP BY took over 20 %
//! more CPU for it on the shared 2-core machine, where the second core was never free.)

use j1msky_db::Backend;
use sqlx::AnyConnection;

use crate::InsightsError;

/// The rebuild connection's page cache, in KiB (negative: SQLite's unit for "KiB"): large
/// enough that the ledger's and the tasks' index lookups stay in memory at a million
/// customers instead of going through a system call per page.
const CACHE_KIB: i64 = 1 << 20;

/// The connection's settings before [`tune`], given back by [`untune`].
pub struct Tuned {
    cache_size: i64,
}

/// Raises the page cache of this connection (SQLite only).
pub async fn tune(conn: &mut AnyConnection, backend: Backend) -> Result<Option<Tuned>, InsightsError> {
    if backend != Backend::Sqlite {
        return Ok(None);
    }
    let cache_size: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&mut *conn).await?;
    sqlx::query(&format!("PRAGMA cache_size = -{CACHE_KIB}")).execute(&mut *conn).await?;
    Ok(Some(Tuned { cache_size }))
}

/// Gives the pooled connection its settings back (the cache is freed as it shrinks).
pub async fn untune(conn: &mut AnyConnection, tuned: Option<Tuned>) -> Result<(), InsightsError> {
    let Some(t) = tuned else { return Ok(()) };
    sqlx::query(&format!("PRAGMA cache_size = {}", t.cache_size)).execute(&mut *conn).await?;
    Ok(())
}

/// Drops `table`'s secondary indexes (SQLite only), returning their `CREATE INDEX`
/// statements as the schema holds them, for [`create_indexes`].
/// A SQLite table's secondary indexes with the statements that make them (`sql IS NULL`:
/// the indexes behind PRIMARY KEY and UNIQUE, which stay); the table is parameter 1.
pub(crate) const SECONDARY_INDEXES: &str =
    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL ORDER BY name";

/// The statement dropping index `name` (a name from the schema, not from input; quoted all
/// the same).
pub(crate) fn drop_index(name: &str) -> String {
    format!("DROP INDEX \"{}\"", name.replace('"', "\"\""))
}

pub async fn drop_indexes(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
) -> Result<Vec<String>, InsightsError> {
    if backend != Backend::Sqlite {
        return Ok(Vec::new());
    }
    let indexes: Vec<(String, String)> = sqlx::query_as(SECONDARY_INDEXES).bind(table).fetch_all(&mut *conn).await?;
    let mut out = Vec::with_capacity(indexes.len());
    for (name, sql) in indexes {
        sqlx::query(&drop_index(&name)).execute(&mut *conn).await?;
        out.push(sql);
    }
    Ok(out)
}

/// Creates the indexes [`drop_indexes`] dropped.
pub async fn create_indexes(conn: &mut AnyConnection, statements: &[String]) -> Result<(), InsightsError> {
    for sql in statements {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}
