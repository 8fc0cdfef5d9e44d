//! How many backups are kept: the newest N hourly and the newest M daily ones; manual
//! backups are the operator's and never pruned.

use std::path::Path;

use j1msky_db::Db;

use super::{records, remote, verify, Backup, BackupError, S3Settings, S3Url};

/// How many scheduled backups to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_hourly: usize,
    pub keep_daily: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep_hourly: 48, keep_daily: 30 }
    }
}

/// Deletes the files (and their copies, in a directory or an S3 store reached with `s3`)
/// of the scheduled backups past `keep`, marking them `pruned`; returns them.
pub async fn prune(db: &Db, keep: Retention, s3: &S3Settings) -> Result<Vec<Backup>, BackupError> {
    let mut pruned = Vec::new();
    for (kind, n) in [("hourly", keep.keep_hourly), ("daily", keep.keep_daily)] {
        for b in records::done_of_kind(db, kind).await?.into_iter().skip(n.max(1)) {
            verify::remove_with_manifest(Path::new(&b.path)).await?;
            match &b.copied_to {
                Some(copy) if S3Url::is_s3(copy) => remote::remove(&S3Url::parse(copy)?, s3).await?,
                Some(copy) => verify::remove_with_manifest(Path::new(copy)).await?,
                None => {}
            }
            records::set_pruned(db, &b.id).await?;
            tracing::info!(backup = %b.id, kind, "backup pruned");
            pruned.push(b);
        }
    }
    Ok(pruned)
}
