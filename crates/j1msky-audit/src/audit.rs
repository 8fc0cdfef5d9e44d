//! The audit log: who changed what and when (accounts, keys, stages, settings).

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::Actor;
use j1msky_db::{Db, DbError};

/// One audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub customer_id: Option<String>,
    pub detail: serde_json::Value,
}

/// Records an entry inside the caller's transaction.
pub async fn record(
    conn: &mut AnyConnection,
    actor: &Actor,
    action: &str,
    subject: &str,
    customer_id: Option<&str>,
    detail: serde_json::Value,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, subject, customer_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(j1msky_core::ids::new_id("aud"))
    .bind(now)
    .bind(actor.as_str())
    .bind(action)
    .bind(subject)
    .bind(customer_id)
    .bind(detail.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Latest entries, newest first, optionally for one customer.
pub async fn list(db: &Db, customer_id: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>, DbError> {
    let rows = sqlx::query(
        "SELECT id, at, actor, action, subject, customer_id, detail FROM audit_log
         WHERE ($1 IS NULL OR customer_id = $1) ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(customer_id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let detail: String = r.try_get(6)?;
            Ok(AuditEntry {
                id: r.try_get(0)?,
                at: r.try_get(1)?,
                actor: r.try_get(2)?,
                action: r.try_get(3)?,
                subject: r.try_get(4)?,
                customer_id: r.try_get(5)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}
