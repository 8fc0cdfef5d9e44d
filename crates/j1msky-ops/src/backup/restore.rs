//! Restoring a backup into a database, and what the first server on it does before
//! billing: reconcile with Stripe from the backup's time, so what Stripe sent after the
//! backup is stored and applied. Invoice items are not sent again: each is keyed by its
//! task (or customer day), so a charge reported after the backup and reported again from
//! the restored database is replayed by Stripe, not created twice.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use j1msky_core::catalogue::{Catalogue, LiveCatalogue};
use j1msky_core::Clock;
use j1msky_db::{Backend, Db};
use serde::Serialize;

use super::{engine, records, remote, verify, BackupError, Manifest, Progress, S3Settings, S3Url};

/// How a restore may proceed.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Replace a database that already holds tables.
    pub force: bool,
    /// The file's SHA-256 when it has no manifest beside it.
    pub sha256: Option<String>,
    /// How an `s3://` backup is reached (the AWS environment by default).
    pub s3: S3Settings,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub restore_id: String,
    pub backup_id: Option<String>,
    pub engine: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub backup_started_at: i64,
}

/// Restores `file` into the database at `target_url` after checking its SHA-256 against
/// its manifest (or `opts.sha256`); refuses a corrupt file, a backup of the other engine,
/// and a database with tables unless `opts.force`. The restored database is migrated to
/// this version's schema and remembers the restore (see [`reconcile_after_restore`]).
pub async fn restore(
    file: &Path,
    target_url: &str,
    opts: &RestoreOptions,
    clock: &dyn Clock,
    progress: &dyn Progress,
) -> Result<Restored, BackupError> {
    restore_checked(file, &file.display().to_string(), None, target_url, opts, clock, progress).await
}

/// Restores `source`: a file, or an `s3://bucket/key` copy, downloaded first (with its
/// manifest) and checked against its SHA-256 (given, in its manifest, or in the object's
/// metadata: each one present must match) before anything is written into the target.
pub async fn restore_from(
    source: &str,
    target_url: &str,
    opts: &RestoreOptions,
    clock: &dyn Clock,
    progress: &dyn Progress,
) -> Result<Restored, BackupError> {
    if !S3Url::is_s3(source) {
        return restore(Path::new(source), target_url, opts, clock, progress).await;
    }
    let url = S3Url::parse(source)?;
    let name = url.key.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("backup").to_string();
    // A SQLite restore lands beside its target (same disk, sized for it); a PostgreSQL
    // one is loaded from the temporary directory.
    let base = match engine::sqlite_path(target_url).and_then(|p| p.parent().map(Path::to_path_buf)) {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::env::temp_dir(),
    };
    let work = base.join(format!(".j1msky-download-{}", j1msky_core::ids::new_id("dl")));
    tokio::fs::create_dir_all(&work).await.map_err(|e| BackupError::io(&work, e))?;
    let file = work.join(&name);
    let out = async {
        let got = remote::download(&url, &file, &verify::manifest_path(&file), &opts.s3, progress).await?;
        let meta = got.sha256_metadata.as_deref();
        restore_checked(&file, source, meta, target_url, opts, clock, progress).await
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    out
}

/// Checks `file` against its expected SHA-256 (and `also`, the store's record of it),
/// then restores it; `shown` names it in errors and in the restore's row.
async fn restore_checked(
    file: &Path,
    shown: &str,
    also: Option<&str>,
    target_url: &str,
    opts: &RestoreOptions,
    clock: &dyn Clock,
    progress: &dyn Progress,
) -> Result<Restored, BackupError> {
    let shown = shown.to_string();
    let manifest = verify::read_manifest(file).await?;
    let expected = match (&opts.sha256, &manifest, also) {
        (Some(given), _, _) => given.trim().to_ascii_lowercase(),
        (None, Some(m), _) => m.sha256.clone(),
        (None, None, Some(meta)) => meta.to_string(),
        (None, None, None) => return Err(BackupError::NoChecksum(shown)),
    };
    let (size, actual) = verify::sha256_file(file, progress).await?;
    for expected in std::iter::once(expected.as_str()).chain(also) {
        if actual != expected {
            return Err(BackupError::Corrupt { file: shown, expected: expected.to_string(), actual });
        }
    }
    let file_engine = engine_of(file, manifest.as_ref()).await?;
    let target = Backend::from_url(target_url)?;
    if file_engine != target {
        return Err(BackupError::EngineMismatch {
            file: shown,
            file_engine: file_engine.name().into(),
            target_engine: target.name().into(),
        });
    }
    if !opts.force && engine::has_tables(target_url).await? {
        return Err(BackupError::NotEmpty(redact(target_url)));
    }
    progress.step("restore", Some(size));
    match target {
        Backend::Sqlite => restore_sqlite(file, target_url).await?,
        Backend::Postgres => engine::pg_restore(file, target_url, opts.force).await?,
    }
    progress.at(size);
    let db = Db::open(target_url).await?;
    let started = manifest.as_ref().map_or(0, |m| m.started_at);
    let restore_id =
        records::record_restore(&db, manifest.as_ref(), &shown, &actual, started, clock.now_micros()).await;
    db.close().await;
    Ok(Restored {
        restore_id: restore_id?,
        backup_id: manifest.as_ref().map(|m| m.id.clone()),
        engine: target.name().into(),
        sha256: actual,
        size_bytes: size,
        backup_started_at: started,
    })
}

/// The engine a file was taken from: its manifest, else its first bytes.
async fn engine_of(file: &Path, manifest: Option<&Manifest>) -> Result<Backend, BackupError> {
    if let Some(m) = manifest {
        return match m.engine.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" => Ok(Backend::Postgres),
            other => Err(BackupError::Unsupported(format!("the manifest names an unknown engine `{other}`"))),
        };
    }
    let mut head = [0u8; 16];
    let mut f = tokio::fs::File::open(file).await.map_err(|e| BackupError::io(file, e))?;
    let n = tokio::io::AsyncReadExt::read(&mut f, &mut head).await.map_err(|e| BackupError::io(file, e))?;
    if head[..n].starts_with(b"SQLite format 3\0") {
        Ok(Backend::Sqlite)
    } else if head[..n].starts_with(b"PGDMP") {
        Ok(Backend::Postgres)
    } else {
        Err(BackupError::Unsupported(format!("{} is neither a SQLite database nor a pg_dump archive", file.display())))
    }
}

/// Copies the file beside the target, checks it opens as a whole database, then moves it
/// into place (a crash leaves the old file or the new one, never half of one).
async fn restore_sqlite(file: &Path, url: &str) -> Result<(), BackupError> {
    let target = engine::sqlite_path(url)
        .ok_or_else(|| BackupError::Unsupported("restore into a SQLite file, not an in-memory database".into()))?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(|e| BackupError::io(dir, e))?;
    }
    let staging = target.with_extension("restoring");
    tokio::fs::copy(file, &staging).await.map_err(|e| BackupError::io(&staging, e))?;
    let staged = Db::connect(&format!("sqlite://{}", staging.display())).await?;
    let check: Result<(String,), sqlx::Error> = sqlx::query_as("PRAGMA integrity_check").fetch_one(staged.pool()).await;
    // Leaves a single file: the WAL folded back in before the move.
    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(staged.pool()).await;
    staged.close().await;
    match check {
        Ok((ok,)) if ok == "ok" => {}
        Ok((problem,)) => {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(BackupError::Unsupported(format!("{}: integrity check failed: {problem}", file.display())));
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(e.into());
        }
    }
    for side in ["-wal", "-shm"] {
        let _ = tokio::fs::remove_file(format!("{}{side}", target.display())).await;
        let _ = tokio::fs::remove_file(format!("{}{side}", staging.display())).await;
    }
    tokio::fs::rename(&staging, &target).await.map_err(|e| BackupError::io(&target, e))
}

/// Reconciles with Stripe when this database was restored and has not been since: lists
/// Stripe's events from an hour before the oldest such backup (at most 30 days back),
/// stores the ones missed, applies them, and marks the restores reconciled. None when
/// there was nothing to do.
pub async fn reconcile_after_restore(
    db: &Db,
    stripe: &j1msky_billing::Stripe,
    catalogue: &Catalogue,
    now: i64,
) -> Result<Option<j1msky_billing::webhook::Reconciled>, BackupError> {
    let pending = records::unreconciled(db).await?;
    let Some(oldest) = pending.iter().map(|(_, at)| *at).min() else { return Ok(None) };
    let now_secs = now.div_euclid(1_000_000);
    let since = (oldest.div_euclid(1_000_000) - 3600).max(now_secs - 30 * 86_400);
    let ctx = j1msky_billing::apply::Ctx { catalogue };
    let r = j1msky_billing::webhook::reconcile(db, stripe, &ctx, since, now).await?;
    let note = format!("{} events listed, {} missed and stored, {} applied", r.listed, r.missed, r.applied);
    let ids: Vec<String> = pending.into_iter().map(|(id, _)| id).collect();
    records::mark_reconciled(db, &ids, &note, now).await?;
    tracing::info!(%note, "reconciled with Stripe after a restore");
    Ok(Some(r))
}

/// Runs `billing_jobs` once [`reconcile_after_restore`] has succeeded (retried every 30 s
/// while Stripe cannot be reached), so no billing job works from a restored database
/// that has not caught up with Stripe.
pub async fn reconciled_first(
    db: Db,
    catalogue: LiveCatalogue,
    clock: Arc<dyn Clock>,
    stripe: j1msky_billing::Stripe,
    mut stop: tokio::sync::watch::Receiver<bool>,
    billing_jobs: impl std::future::Future<Output = ()>,
) {
    loop {
        match reconcile_after_restore(&db, &stripe, &catalogue, clock.now_micros()).await {
            Ok(_) => break,
            Err(e) => tracing::error!(error = %e, "reconciling with Stripe after a restore; billing jobs wait"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
    billing_jobs.await;
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}
