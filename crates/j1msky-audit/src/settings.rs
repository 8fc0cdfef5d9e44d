//! Operator settings (`settings`), each change kept in `settings_history` with the value
//! it replaced, who made it and why, so a bad change can be seen and undone.

use serde::Serialize;
use sqlx::AnyConnection;

use crate::Actor;
use j1msky_db::{Db, DbError};

/// A setting in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// One change of a setting; `None` is "not set" (before it existed, or removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `seth_…`: what `config rollback` names.
    pub id: String,
    pub key: String,
    pub previous: Option<String>,
    pub value: Option<String>,
    pub changed_at: i64,
    pub changed_by: String,
    /// Why (`None` for changes made before a reason was asked for).
    pub reason: Option<String>,
}

/// The settings whose key starts with `prefix`.
pub async fn with_prefix(db: &Db, prefix: &str) -> Result<Vec<Setting>, DbError> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT key, value, updated_at, updated_by FROM settings WHERE key LIKE $1 ESCAPE '\\' ORDER BY key",
    )
    .bind(format!("{}%", like_escape(prefix)))
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, value, updated_at, updated_by)| Setting { key, value, updated_at, updated_by })
        .collect())
}

/// Sets (`Some`) or removes (`None`) `key` inside the caller's transaction, keeping the
/// value it replaced and the reason given in the history.
pub async fn put(
    conn: &mut AnyConnection,
    actor: &Actor,
    key: &str,
    value: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<(), DbError> {
    let previous: Option<(String,)> =
        sqlx::query_as("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&mut *conn).await?;
    match value {
        Some(v) => {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at, updated_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
                 updated_by = excluded.updated_by",
            )
            .bind(key)
            .bind(v)
            .bind(now)
            .bind(actor.as_str())
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM settings WHERE key = $1").bind(key).execute(&mut *conn).await?;
        }
    }
    let previous = previous.map(|(v,)| v);
    record(conn, actor, key, previous.as_deref(), value, reason, now).await
}

/// Keeps one change in the history inside the caller's transaction, for a value its
/// owner stores elsewhere (a customer's monthly budget lives on `customers`): the same
/// history, shown and rolled back with the settings'.
pub async fn record(
    conn: &mut AnyConnection,
    actor: &Actor,
    key: &str,
    previous: Option<&str>,
    value: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO settings_history (id, key, previous_value, value, changed_at, changed_by, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(j1msky_core::ids::new_id("seth"))
    .bind(key)
    .bind(previous)
    .bind(value)
    .bind(now)
    .bind(actor.as_str())
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The rule for the reason every change keeps (field `reason`): required, one line's
/// worth. The owners of each change call it, so the dashboard and the CLI refuse alike.
pub fn check_reason(reason: &str) -> Result<&str, &'static str> {
    match reason.trim() {
        "" => Err("say why you make this change (it is kept in the history)"),
        r if r.chars().count() > 500 => Err("keep the reason under 500 characters"),
        r => Ok(r),
    }
}

/// id, key, previous value, value, when, by whom, why.
type ChangeRow = (String, String, Option<String>, Option<String>, i64, String, Option<String>);

const CHANGE_COLUMNS: &str = "id, key, previous_value, value, changed_at, changed_by, reason";

fn change((id, key, previous, value, changed_at, changed_by, reason): ChangeRow) -> Change {
    Change { id, key, previous, value, changed_at, changed_by, reason }
}

/// The changes of `key`, newest first.
pub async fn history(db: &Db, key: &str, limit: i64) -> Result<Vec<Change>, DbError> {
    let rows: Vec<ChangeRow> = sqlx::query_as(&format!(
        "SELECT {CHANGE_COLUMNS} FROM settings_history WHERE key = $1 ORDER BY changed_at DESC, id DESC LIMIT $2"
    ))
    .bind(key)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(change).collect())
}

/// The changes of every key starting with `prefix` (all: `""`) made before `before`
/// (none: now), newest first.
pub async fn changes(db: &Db, prefix: &str, before: Option<i64>, limit: i64) -> Result<Vec<Change>, DbError> {
    let rows: Vec<ChangeRow> = sqlx::query_as(&format!(
        "SELECT {CHANGE_COLUMNS} FROM settings_history WHERE key LIKE $1 ESCAPE '\\' AND changed_at < $2
         ORDER BY changed_at DESC, id DESC LIMIT $3"
    ))
    .bind(format!("{}%", like_escape(prefix)))
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(change).collect())
}

/// One change by its id.
pub async fn change_by_id(db: &Db, id: &str) -> Result<Option<Change>, DbError> {
    let row: Option<ChangeRow> =
        sqlx::query_as(&format!("SELECT {CHANGE_COLUMNS} FROM settings_history WHERE id = $1"))
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.map(change))
}

fn like_escape(prefix: &str) -> String {
    prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}
