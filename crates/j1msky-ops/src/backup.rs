//! Backups that are proven to restore. SQLite is copied online with `VACUUM INTO` (a
//! consistent snapshot while the server keeps writing), PostgreSQL with `pg_dump -Fc`
//! (one repeatable-read snapshot). Every file gets a SHA-256, recorded in `ops_backups`
//! and in a JSON manifest beside it (`<file>.json`), and is checked again before it is
//! restored. The hourly timer (`schedule`) keeps 48 hourly and 30 daily backups by
//! default and may copy each to a second directory or an S3-compatible store (`remote`);
//! a failure is recorded and raises a `backup_failed` alert, the local file kept. A restore (`restore`) leaves a mark in the restored database so
//! the first server started on it reconciles with Stripe before its billing jobs run.

mod engine;
mod records;
mod remote;
mod restore;
mod retention;
mod schedule;
mod verify;

use std::path::{Path, PathBuf};

use j1msky_core::Clock;
use j1msky_db::{Backend, Db};
use serde::Serialize;

pub use records::{get, list, newest_done, restores, Backup, Restore};
pub use remote::{store as s3_store, S3Settings, S3Url, SHA256_METADATA};
pub use restore::{reconcile_after_restore, reconciled_first, restore, restore_from, RestoreOptions, Restored};
pub use retention::{prune, Retention};
pub use schedule::{handlers as timer_handlers, hourly, run_schedule, Schedule, TIMER};
pub use verify::{read_manifest, sha256_file, Manifest};

/// What went wrong with a backup or a restore, said so the operator can act on it.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Db(#[from] j1msky_db::DbError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{tool} failed ({status}): {stderr}")]
    Tool { tool: String, status: String, stderr: String },
    #[error("{0} not found on PATH, in /usr/lib/postgresql/*/bin or /usr/local/bin (install the PostgreSQL client)")]
    ToolMissing(&'static str),
    #[error("{file} is corrupt: its SHA-256 is {actual}, the backup recorded {expected}; refusing to restore it")]
    Corrupt { file: String, expected: String, actual: String },
    #[error("{0} has no manifest ({0}.json) to check it against: give its SHA-256 with --sha256")]
    NoChecksum(String),
    #[error("{0} is not empty: restoring would overwrite it (pass --force to replace it)")]
    NotEmpty(String),
    #[error("{file} is a {file_engine} backup and cannot be restored into {target_engine}")]
    EngineMismatch { file: String, file_engine: String, target_engine: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{url}: {message}")]
    Remote { url: String, message: String },
    #[error("reconciling with Stripe after the restore: {0}")]
    Billing(#[from] j1msky_billing::BillingError),
}

impl From<sqlx::Error> for BackupError {
    fn from(e: sqlx::Error) -> Self {
        BackupError::Db(j1msky_db::DbError::Sqlx(e))
    }
}

impl BackupError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> BackupError {
        BackupError::Io { path: path.display().to_string(), source }
    }
}

/// Why a backup was taken: the hourly timer, its first of a UTC day, or an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Hourly,
    Daily,
    Manual,
}

impl Kind {
    /// Lower-case name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hourly => "hourly",
            Kind::Daily => "daily",
            Kind::Manual => "manual",
        }
    }
}

/// Where a backup is copied besides its directory, to survive the loss of that disk.
#[derive(Debug, Clone)]
pub enum CopyTo {
    /// Another directory (another disk, a mounted share); the copy is checked there.
    Dir(PathBuf),
    /// An S3-compatible bucket and key prefix; the upload is checked.
    S3(S3Url, S3Settings),
}

impl CopyTo {
    /// `s3://bucket/prefix` (reached through the AWS environment) or a directory.
    pub fn parse(s: &str) -> Result<CopyTo, BackupError> {
        if S3Url::is_s3(s) {
            Ok(CopyTo::S3(S3Url::parse(s)?, S3Settings::default()))
        } else if s.trim().is_empty() {
            Err(BackupError::Unsupported("the copy target is empty: give a directory or s3://bucket/prefix".into()))
        } else {
            Ok(CopyTo::Dir(PathBuf::from(s)))
        }
    }

    /// How the S3 copies are reached (the environment's when not copying to S3).
    pub fn s3_settings(&self) -> S3Settings {
        match self {
            CopyTo::S3(_, s) => s.clone(),
            CopyTo::Dir(_) => S3Settings::default(),
        }
    }
}

/// Where a backup goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory the file and its manifest are written to (created when missing).
    pub dir: PathBuf,
    /// Where each backup is copied too.
    pub copy_to: Option<CopyTo>,
    pub kind: Kind,
}

/// Told how far a long step has come (the CLI draws a bar; the timer has none).
pub trait Progress: Send + Sync {
    /// A step starts; `total` bytes when known.
    fn step(&self, name: &str, total: Option<u64>);
    /// Bytes done so far in the current step.
    fn at(&self, done: u64);
}

/// No progress shown.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _name: &str, _total: Option<u64>) {}
    fn at(&self, _done: u64) {}
}

/// Takes a backup of `db` (whose URL is `url`: `pg_dump` needs it) into `opts.dir`,
/// checksums it, writes its manifest, copies it when asked, and records it. A failure is
/// recorded too, with a `backup_failed` alert, and returned.
pub async fn take(
    db: &Db,
    url: &str,
    opts: &Options,
    clock: &dyn Clock,
    progress: &dyn Progress,
) -> Result<Backup, BackupError> {
    let id = j1msky_core::ids::new_id("bak");
    let started = clock.now_micros();
    let stamp = chrono::DateTime::from_timestamp_micros(started).unwrap_or_default().format("%Y%m%dT%H%M%SZ");
    let ext = match db.backend() {
        Backend::Sqlite => "db",
        Backend::Postgres => "dump",
    };
    let name = format!("j1msky-{}-{stamp}-{}-{}.{ext}", db.backend().name(), opts.kind.name(), &id[4..]);
    let path = absolute(&opts.dir.join(name));
    records::insert_running(db, &id, db.backend().name(), opts.kind.name(), &path.display().to_string(), started)
        .await?;
    match write(db, url, opts, &id, &path, started, clock, progress).await {
        Ok(done) => {
            records::finish(db, &id, &done, clock.now_micros()).await?;
            records::get(db, &id).await?.ok_or_else(|| BackupError::Unsupported(format!("backup {id} vanished")))
        }
        Err(e) => {
            let message = e.to_string();
            tracing::error!(backup = %id, error = %message, "backup failed");
            records::fail(db, &id, &message, clock.now_micros()).await?;
            Err(e)
        }
    }
}

/// What a finished backup wrote.
pub(crate) struct Written {
    pub size: u64,
    pub sha256: String,
    pub copied_to: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn write(
    db: &Db,
    url: &str,
    opts: &Options,
    id: &str,
    path: &Path,
    started: i64,
    clock: &dyn Clock,
    progress: &dyn Progress,
) -> Result<Written, BackupError> {
    let made = !tokio::fs::try_exists(&opts.dir).await.unwrap_or(false);
    tokio::fs::create_dir_all(&opts.dir).await.map_err(|e| BackupError::io(&opts.dir, e))?;
    if made {
        owner_only(&opts.dir, 0o700).await?;
    }
    // Written under a temporary name first: a file with the final name is always whole.
    let partial = path.with_extension("partial");
    let dumped = engine::dump(db, url, &partial, progress).await;
    if let Err(e) = dumped {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    // Password hashes, customers' data and Stripe's events: for the service's user only.
    owner_only(&partial, 0o600).await?;
    let (size, sha256) = verify::sha256_file(&partial, progress).await?;
    tokio::fs::rename(&partial, path).await.map_err(|e| BackupError::io(path, e))?;
    let manifest = Manifest {
        id: id.to_string(),
        engine: db.backend().name().to_string(),
        kind: opts.kind.name().to_string(),
        file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        size_bytes: size,
        sha256: sha256.clone(),
        started_at: started,
        finished_at: clock.now_micros(),
    };
    verify::write_manifest(path, &manifest).await?;
    // A copy that fails leaves the local file and its manifest as they are.
    let copied_to = match &opts.copy_to {
        Some(CopyTo::Dir(dir)) => Some(verify::copy_checked(path, dir, &sha256, progress).await?.display().to_string()),
        Some(CopyTo::S3(to, s3)) => {
            let manifest = verify::manifest_path(path);
            Some(remote::upload(path, &manifest, size, &sha256, to, s3, progress).await?)
        }
        None => None,
    };
    Ok(Written { size, sha256, copied_to })
}

/// `path` made absolute against the working directory (the row and the manifest name a
/// file the operator can find from anywhere).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Restricts `path` to the user the service runs as (`mode`: 0o600 for a file, 0o700 for
/// a directory); a backup holds every secret the database does.
pub(crate) async fn owner_only(path: &Path, mode: u32) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| BackupError::io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}
