//! Operator alerts: things a person must look at (budget levels, a provider refusing our
//! key, a ledger that cannot be written, a cost spike, a stuck queue). Each alert has a
//! caller-chosen id so the same condition raised again is recorded once; a new one is
//! announced as `alert.raised` in the same transaction, which is what delivers it to
//! people (ops' `notify`). An operator acknowledges it ("seen, on it") and resolves it
//! ("fixed"); both are audited and written only here.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use j1msky_core::events::AlertRaised;
use j1msky_db::{outbox, Backend, Db, DbError};

use crate::Actor;

/// One alert as the dashboards show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub kind: String,
    pub message: String,
    pub created_at: i64,
}

/// One alert with its id and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRow {
    pub id: String,
    pub kind: String,
    pub message: String,
    pub created_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
}

impl AlertRow {
    /// `open`, `acknowledged` or `resolved`.
    pub fn status(&self) -> &'static str {
        if self.resolved_at.is_some() {
            "resolved"
        } else if self.acknowledged_at.is_some() {
            "acknowledged"
        } else {
            "open"
        }
    }
}

/// Which alerts a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    Acknowledged,
    Resolved,
    All,
}

impl Status {
    /// Reads `open`, `acknowledged` (or `acked`), `resolved`, `all`.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "open" => Some(Status::Open),
            "acknowledged" | "acked" => Some(Status::Acknowledged),
            "resolved" => Some(Status::Resolved),
            "all" => Some(Status::All),
            _ => None,
        }
    }

    fn condition(self) -> &'static str {
        match self {
            Status::Open => "acknowledged_at IS NULL AND resolved_at IS NULL",
            Status::Acknowledged => "acknowledged_at IS NOT NULL AND resolved_at IS NULL",
            Status::Resolved => "resolved_at IS NOT NULL",
            Status::All => "1 = 1",
        }
    }
}

fn backend_of(conn: &AnyConnection) -> Backend {
    if conn.backend_name().eq_ignore_ascii_case("postgresql") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// Records alert `id` inside the caller's transaction; true when it is new (an alert
/// with that id already recorded is left as it was). A new alert emits `alert.raised`.
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
    .execute(&mut *conn)
    .await?;
    let new = inserted.rows_affected() == 1;
    if new {
        let backend = backend_of(conn);
        let event = AlertRaised { alert: id.into(), kind: kind.into(), message: message.into() };
        outbox::emit_typed(conn, backend, event, None, now).await?;
    }
    Ok(new)
}

/// Records alert `id` in a transaction of its own; true when it is new.
pub async fn raise(
    db: &Db,
    id: &str,
    kind: &str,
    message: &str,
    detail: &serde_json::Value,
    now: i64,
) -> Result<bool, DbError> {
    let mut tx = db.begin().await?;
    let new = record(&mut tx, id, kind, message, detail, now).await?;
    tx.commit().await?;
    Ok(new)
}

/// Alerts nobody has acknowledged or resolved, however old, newest first (at most
/// `limit`), and how many there are in all.
pub async fn open(db: &Db, limit: i64) -> Result<(Vec<Alert>, i64), DbError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, message, created_at FROM alerts
         WHERE acknowledged_at IS NULL AND resolved_at IS NULL
         ORDER BY created_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let total: i64 = if (rows.len() as i64) < limit {
        rows.len() as i64
    } else {
        sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE acknowledged_at IS NULL AND resolved_at IS NULL")
            .fetch_one(db.pool())
            .await?
    };
    Ok((rows.into_iter().map(|(kind, message, created_at)| Alert { kind, message, created_at }).collect(), total))
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

const COLUMNS: &str = "id, kind, message, created_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by";

fn row_of(r: &sqlx::any::AnyRow) -> Result<AlertRow, DbError> {
    Ok(AlertRow {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        message: r.try_get(2)?,
        created_at: r.try_get(3)?,
        acknowledged_at: r.try_get(4)?,
        acknowledged_by: r.try_get(5)?,
        resolved_at: r.try_get(6)?,
        resolved_by: r.try_get(7)?,
    })
}

/// Alerts in `status`, newest first.
pub async fn list(db: &Db, status: Status, limit: i64) -> Result<Vec<AlertRow>, DbError> {
    let sql =
        format!("SELECT {COLUMNS} FROM alerts WHERE {} ORDER BY created_at DESC, id DESC LIMIT $1", status.condition());
    let rows = sqlx::query(&sql).bind(limit).fetch_all(db.pool()).await?;
    rows.iter().map(row_of).collect()
}

/// One alert, if it exists.
pub async fn get(db: &Db, id: &str) -> Result<Option<AlertRow>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM alerts WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(db.pool()).await?;
    row.as_ref().map(row_of).transpose()
}

/// Alerts of `kind` raised in `[from, to)`, oldest first (for a digest).
pub async fn of_kind_between(db: &Db, kind: &str, from: i64, to: i64) -> Result<Vec<AlertRow>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM alerts WHERE kind = $1 AND created_at >= $2 AND created_at < $3
         ORDER BY created_at, id"
    );
    let rows = sqlx::query(&sql).bind(kind).bind(from).bind(to).fetch_all(db.pool()).await?;
    rows.iter().map(row_of).collect()
}

/// Marks alert `id` acknowledged by `actor` (audited); `None` when there is no such
/// alert. Acknowledging twice keeps the first acknowledgement.
pub async fn acknowledge(db: &Db, actor: &Actor, id: &str, now: i64) -> Result<Option<AlertRow>, DbError> {
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE alerts SET acknowledged_at = $1, acknowledged_by = $2 WHERE id = $3 AND acknowledged_at IS NULL",
    )
    .bind(now)
    .bind(actor.as_str())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() == 1 {
        crate::audit::record(&mut tx, actor, "alert.acknowledged", id, None, serde_json::json!({}), now).await?;
    }
    tx.commit().await?;
    get(db, id).await
}

/// Marks alert `id` resolved by `actor` (and acknowledged, when nobody had), audited;
/// `None` when there is no such alert. Resolving twice keeps the first resolution.
pub async fn resolve(db: &Db, actor: &Actor, id: &str, now: i64) -> Result<Option<AlertRow>, DbError> {
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE alerts SET resolved_at = $1, resolved_by = $2,
             acknowledged_at = COALESCE(acknowledged_at, $1), acknowledged_by = COALESCE(acknowledged_by, $2)
         WHERE id = $3 AND resolved_at IS NULL",
    )
    .bind(now)
    .bind(actor.as_str())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() == 1 {
        crate::audit::record(&mut tx, actor, "alert.resolved", id, None, serde_json::json!({}), now).await?;
    }
    tx.commit().await?;
    get(db, id).await
}
