//! `j1msky db migrate|backup|backups|restore`, and the backup flags of `serve`/`worker`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use j1msky_ops::backup::{self, BackupError, CopyTo, Kind, Options, Progress, RestoreOptions, Retention};

use crate::context::{self, Globals};
use crate::{output, Failure, EXIT_INVALID};

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations (the server also does this at start).
    Migrate,
    /// Take a backup now (SQLite: VACUUM INTO; PostgreSQL: pg_dump -Fc), safe while the
    /// server runs; prints its file and SHA-256.
    Backup {
        /// Directory for the file and its manifest.
        #[arg(long, env = "J1MSKY_BACKUP_DIR", default_value = "data/backups")]
        dir: PathBuf,
        /// Also copy it to this directory or to s3://bucket/prefix (checked again there;
        /// the store from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
        /// AWS_SECRET_ACCESS_KEY).
        #[arg(long, env = "J1MSKY_BACKUP_COPY_TO", value_parser = copy_to)]
        copy_to: Option<CopyTo>,
    },
    /// The backups taken, newest first.
    Backups {
        /// Include those retention pruned.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Restore a backup file into a database (checked against its SHA-256 first).
    Restore {
        /// The backup file (its manifest FILE.json beside it), or s3://bucket/key
        /// (downloaded with its manifest first).
        file: String,
        /// The database to restore into: sqlite://PATH or postgres://… (an existing,
        /// empty database).
        #[arg(long)]
        into: String,
        /// Confirm the restore.
        #[arg(long)]
        yes: bool,
        /// Replace a database that already holds tables.
        #[arg(long)]
        force: bool,
        /// The file's SHA-256, when it has no manifest.
        #[arg(long)]
        sha256: Option<String>,
    },
}

/// The hourly backups of `serve` and `worker` (role `billing`).
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Take a backup every hour into this directory (off when not given).
    #[arg(long = "backup-dir", env = "J1MSKY_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Copy each hourly backup to this directory or s3://bucket/prefix too.
    #[arg(long = "backup-copy-to", env = "J1MSKY_BACKUP_COPY_TO", value_parser = copy_to)]
    pub backup_copy_to: Option<CopyTo>,
    /// Hourly backups kept.
    #[arg(long, default_value_t = 48)]
    pub backup_keep_hourly: usize,
    /// Daily backups (each UTC day's first) kept.
    #[arg(long, default_value_t = 30)]
    pub backup_keep_daily: usize,
}

impl BackupArgs {
    /// The runtime's backup schedule, when a directory was given.
    pub fn schedule(&self, g: &Globals, db: &j1msky_db::Db) -> Option<backup::Schedule> {
        let Some(dir) = self.backup_dir.clone() else {
            tracing::warn!("no --backup-dir: hourly backups are off");
            return None;
        };
        Some(backup::Schedule {
            db: db.clone(),
            url: g.database_url.clone(),
            clock: Arc::new(j1msky_core::SystemClock),
            dir,
            copy_to: self.backup_copy_to.clone(),
            keep: Retention { keep_hourly: self.backup_keep_hourly, keep_daily: self.backup_keep_daily },
        })
    }
}

pub async fn db(g: &Globals, c: DbCommand) -> Result<(), Failure> {
    match c {
        DbCommand::Migrate => {
            let db = context::open_db(g).await?;
            output::done(
                g,
                &format!("migrations applied ({})", db.backend().name()),
                serde_json::json!({"migrated": true, "backend": db.backend().name()}),
            );
            db.close().await;
            Ok(())
        }
        DbCommand::Backup { dir, copy_to } => {
            let db = context::open_db(g).await?;
            let bar = Bar::new(g);
            let opts = Options { dir, copy_to, kind: Kind::Manual };
            let taken = backup::take(&db, &g.database_url, &opts, &j1msky_core::SystemClock, &bar).await;
            bar.finish();
            db.close().await;
            let b = taken.map_err(failure)?;
            let message = format!(
                "backup {} written: {} ({} bytes, sha256 {}){}",
                b.id,
                b.path,
                output::opt(b.size_bytes),
                output::opt(b.sha256.clone()),
                b.copied_to.as_deref().map(|c| format!("; copied to {c}")).unwrap_or_default()
            );
            output::done(g, &message, serde_json::json!({ "backup": b }));
            Ok(())
        }
        DbCommand::Backups { all, limit } => {
            let db = context::open_db(g).await?;
            let rows = backup::list(&db, all, limit.clamp(1, 10_000)).await.map_err(failure)?;
            db.close().await;
            let columns = ["id", "kind", "status", "started", "size", "sha256", "path", "copy", "error"];
            output::list(g, &rows, &columns, |b| {
                vec![
                    b.id.clone(),
                    b.kind.clone(),
                    b.status.clone(),
                    output::when(Some(b.started_at)),
                    output::opt(b.size_bytes),
                    b.sha256.as_deref().map(|s| s[..12.min(s.len())].to_string()).unwrap_or_else(|| "-".into()),
                    b.path.clone(),
                    output::opt(b.copied_to.clone()),
                    output::opt(b.error.clone()),
                ]
            });
            Ok(())
        }
        DbCommand::Restore { file, into, yes, force, sha256 } => {
            if !yes {
                return Err(Failure {
                    code: EXIT_INVALID,
                    error: anyhow::anyhow!(
                        "restoring writes into {}: run again with --yes to confirm",
                        context::redact(&into)
                    ),
                });
            }
            let bar = Bar::new(g);
            let opts = RestoreOptions { force, sha256, ..Default::default() };
            let done = backup::restore_from(&file, &into, &opts, &j1msky_core::SystemClock, &bar).await;
            bar.finish();
            let r = done.map_err(failure)?;
            let message = format!(
                "restored {} into {} (sha256 {} checked). Start the server on it: it reconciles with Stripe before billing.",
                file,
                context::redact(&into),
                r.sha256
            );
            output::done(g, &message, serde_json::json!({ "restored": r }));
            Ok(())
        }
    }
}

/// `--copy-to`: a directory or s3://bucket/prefix, a bad one refused with why.
fn copy_to(s: &str) -> Result<CopyTo, String> {
    CopyTo::parse(s).map_err(|e| e.to_string())
}

/// Refusals the operator can fix exit 2; the rest 1.
fn failure(e: BackupError) -> Failure {
    let code = match e {
        BackupError::Corrupt { .. }
        | BackupError::NoChecksum(_)
        | BackupError::NotEmpty(_)
        | BackupError::EngineMismatch { .. }
        | BackupError::Unsupported(_) => EXIT_INVALID,
        _ => 1,
    };
    Failure { code, error: e.into() }
}

/// A progress bar on stderr (drawn only on a terminal, never with --json).
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new(g: &Globals) -> Bar {
        let target =
            if g.json { indicatif::ProgressDrawTarget::hidden() } else { indicatif::ProgressDrawTarget::stderr() };
        Bar(indicatif::ProgressBar::with_draw_target(None, target))
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn step(&self, name: &str, total: Option<u64>) {
        let style = match total {
            Some(_) => indicatif::ProgressStyle::with_template("{msg:>9} [{bar:30}] {bytes}/{total_bytes} {eta}"),
            None => indicatif::ProgressStyle::with_template("{msg:>9} {spinner} {bytes}"),
        };
        if let Ok(style) = style {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.set_length(total.unwrap_or(0));
        self.0.set_position(0);
        self.0.set_message(name.to_string());
    }

    fn at(&self, done: u64) {
        // pg_dump's compressed file may outgrow nothing, but a SQLite copy can pass the
        // estimate taken before it began.
        if self.0.length().is_some_and(|l| l > 0 && done > l) {
            self.0.set_length(done);
        }
        self.0.set_position(done);
    }
}
