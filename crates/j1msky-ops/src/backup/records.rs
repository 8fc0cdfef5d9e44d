//! The rows of `ops_backups` and `ops_restores`.

use j1msky_db::Db;
use serde::Serialize;
use sqlx::Row;

use super::{BackupError, Written};

/// One backup attempt as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backup {
    pub id: String,
    pub engine: String,
    /// `hourly`, `daily` or `manual`.
    pub kind: String,
    /// `running`, `done`, `failed` or `pruned` (its file deleted by retention).
    pub status: String,
    pub path: String,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub copied_to: Option<String>,
}

/// One restore into this database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restore {
    pub id: String,
    pub backup_id: Option<String>,
    pub file: String,
    pub sha256: String,
    pub backup_started_at: i64,
    pub restored_at: i64,
    pub reconciled_at: Option<i64>,
    pub reconcile_note: Option<String>,
}

const COLUMNS: &str = "id, engine, kind, status, path, size_bytes, sha256, started_at, finished_at, error, copied_to";

fn backup(r: &sqlx::any::AnyRow) -> Result<Backup, sqlx::Error> {
    Ok(Backup {
        id: r.try_get(0)?,
        engine: r.try_get(1)?,
        kind: r.try_get(2)?,
        status: r.try_get(3)?,
        path: r.try_get(4)?,
        size_bytes: r.try_get(5)?,
        sha256: r.try_get(6)?,
        started_at: r.try_get(7)?,
        finished_at: r.try_get(8)?,
        error: r.try_get(9)?,
        copied_to: r.try_get(10)?,
    })
}

pub(super) async fn insert_running(
    db: &Db,
    id: &str,
    engine: &str,
    kind: &str,
    path: &str,
    now: i64,
) -> Result<(), BackupError> {
    sqlx::query(
        "INSERT INTO ops_backups (id, engine, kind, status, path, started_at) VALUES ($1, $2, $3, 'running', $4, $5)",
    )
    .bind(id)
    .bind(engine)
    .bind(kind)
    .bind(path)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

pub(super) async fn finish(db: &Db, id: &str, w: &Written, now: i64) -> Result<(), BackupError> {
    sqlx::query(
        "UPDATE ops_backups SET status = 'done', size_bytes = $2, sha256 = $3, copied_to = $4, finished_at = $5
         WHERE id = $1",
    )
    .bind(id)
    .bind(i64::try_from(w.size).unwrap_or(i64::MAX))
    .bind(&w.sha256)
    .bind(&w.copied_to)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Marks the backup failed and raises its `backup_failed` alert, together.
pub(super) async fn fail(db: &Db, id: &str, error: &str, now: i64) -> Result<(), BackupError> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE ops_backups SET status = 'failed', error = $2, finished_at = $3 WHERE id = $1")
        .bind(id)
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let message = format!("backup {id} failed: {error}");
    let detail = serde_json::json!({"backup": id, "error": error});
    j1msky_audit::alerts::record(&mut tx, &format!("backup_failed:{id}"), "backup_failed", &message, &detail, now)
        .await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(())
}

pub(super) async fn set_pruned(db: &Db, id: &str) -> Result<(), BackupError> {
    sqlx::query("UPDATE ops_backups SET status = 'pruned' WHERE id = $1").bind(id).execute(db.pool()).await?;
    Ok(())
}

/// The backup `id`, if recorded.
pub async fn get(db: &Db, id: &str) -> Result<Option<Backup>, BackupError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM ops_backups WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.as_ref().map(backup).transpose()?)
}

/// The newest backups first, at most `limit`; pruned ones only with `with_pruned`.
pub async fn list(db: &Db, with_pruned: bool, limit: i64) -> Result<Vec<Backup>, BackupError> {
    let filter = if with_pruned { "" } else { "WHERE status <> 'pruned'" };
    let rows =
        sqlx::query(&format!("SELECT {COLUMNS} FROM ops_backups {filter} ORDER BY started_at DESC, id DESC LIMIT $1"))
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
    Ok(rows.iter().map(backup).collect::<Result<_, _>>()?)
}

/// Backups of `kind` in `status` (`done` or `failed`), newest first (what retention weighs).
pub(super) async fn of_kind(db: &Db, kind: &str, status: &str) -> Result<Vec<Backup>, BackupError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM ops_backups WHERE kind = $1 AND status = $2 ORDER BY started_at DESC, id DESC"
    ))
    .bind(kind)
    .bind(status)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(backup).collect::<Result<_, _>>()?)
}

/// Whether a daily backup finished in `[from, to)`.
pub(super) async fn daily_between(db: &Db, from: i64, to: i64) -> Result<bool, BackupError> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM ops_backups WHERE kind = 'daily' AND status = 'done' AND started_at >= $1 AND started_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(db.pool())
    .await?;
    let n: i64 = row.try_get(0)?;
    Ok(n > 0)
}

/// When the newest backup that finished well ended (whatever its kind, pruned since or
/// not; a failed attempt that retention pruned keeps its error); `None` when none did.
pub async fn newest_done(db: &Db) -> Result<Option<i64>, BackupError> {
    let t: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(finished_at) FROM ops_backups WHERE status = 'done' OR (status = 'pruned' AND error IS NULL)",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(t)
}

/// The restores recorded in this database, newest first.
pub async fn restores(db: &Db) -> Result<Vec<Restore>, BackupError> {
    let rows = sqlx::query(
        "SELECT id, backup_id, file, sha256, backup_started_at, restored_at, reconciled_at, reconcile_note
         FROM ops_restores ORDER BY restored_at DESC, id DESC",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(Restore {
            id: r.try_get(0)?,
            backup_id: r.try_get(1)?,
            file: r.try_get(2)?,
            sha256: r.try_get(3)?,
            backup_started_at: r.try_get(4)?,
            restored_at: r.try_get(5)?,
            reconciled_at: r.try_get(6)?,
            reconcile_note: r.try_get(7)?,
        });
    }
    Ok(out)
}

/// Records a restore in the restored database; the backup's own row, captured while it
/// was still running, gets what its manifest says it became.
pub(super) async fn record_restore(
    db: &Db,
    manifest: Option<&super::Manifest>,
    file: &str,
    sha256: &str,
    backup_started_at: i64,
    now: i64,
) -> Result<String, BackupError> {
    let id = j1msky_core::ids::new_id("rst");
    let mut tx = db.begin().await?;
    if let Some(m) = manifest {
        sqlx::query(
            "UPDATE ops_backups SET status = 'done', size_bytes = $2, sha256 = $3, finished_at = $4
             WHERE id = $1 AND status = 'running'",
        )
        .bind(&m.id)
        .bind(i64::try_from(m.size_bytes).unwrap_or(i64::MAX))
        .bind(&m.sha256)
        .bind(m.finished_at)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO ops_restores (id, backup_id, file, sha256, backup_started_at, restored_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(manifest.map(|m| m.id.clone()))
    .bind(file)
    .bind(sha256)
    .bind(backup_started_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(id)
}

/// Restores not yet reconciled with Stripe: (id, the backup's start).
pub(super) async fn unreconciled(db: &Db) -> Result<Vec<(String, i64)>, BackupError> {
    Ok(sqlx::query_as(
        "SELECT id, backup_started_at FROM ops_restores WHERE reconciled_at IS NULL ORDER BY restored_at",
    )
    .fetch_all(db.pool())
    .await?)
}

pub(super) async fn mark_reconciled(db: &Db, ids: &[String], note: &str, now: i64) -> Result<(), BackupError> {
    for id in ids {
        sqlx::query("UPDATE ops_restores SET reconciled_at = $2, reconcile_note = $3 WHERE id = $1")
            .bind(id)
            .bind(now)
            .bind(note)
            .execute(db.pool())
            .await?;
    }
    Ok(())
}
