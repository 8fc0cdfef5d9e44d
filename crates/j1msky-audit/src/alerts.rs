//! Operator alerts: things a person must look at (budget levels, a provider refusing our
//! key, a ledger that cannot be written). Each alert has a caller-chosen id so the same
//! condition raised again is recorded once.

use serde::Serialize;
use sqlx::AnyConnection;

use j1msky_db::{Db, DbError};

/// One alert as the dashboards show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub kind: String,
    pub message: String,
    pub created_at: i64,
}

/// Records alert `id` inside the caller's transaction; true when it is new (an alert
/// with that id already recorded is left as it was).
pub async fn record(
    conn: &mut AnyConnection,
    id: &str,
    kind: &str,
    message: &str,
    detail: &serde_json::Value,
    now: i64,
) -> Result<bool, DbError> {
    let inserted = sqlx::query(
        "INSERT INTO alerts (id, kind, message, detail, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(message)
    .bind(detail.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Alerts raised since `since` that nobody has acknowledged, newest first.
pub async fn open_since(db: &Db, since: i64, limit: i64) -> Result<Vec<Alert>, DbError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, message, created_at FROM alerts WHERE acknowledged_at IS NULL AND created_at >= $1
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(|(kind, message, created_at)| Alert { kind, message, created_at }).collect())
}

/// The newest alerts first.
pub async fn recent(db: &Db, limit: i64) -> Result<Vec<Alert>, DbError> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, message, created_at FROM alerts ORDER BY created_at DESC, id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
    Ok(rows.into_iter().map(|(kind, message, created_at)| Alert { kind, message, created_at }).collect())
}
