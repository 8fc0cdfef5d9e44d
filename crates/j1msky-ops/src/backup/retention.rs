//! How many backups are kept: the newest N hourly and the newest M daily ones; manual
//! backups are the operator's and never pruned.
//!
//! A scheduled backup whose copy failed is recorded `failed` but leaves a whole local file
//! (with its manifest): the only backup there is while the copy's store is down, so it is
//! kept until a newer backup of its kind is done, and at most N (M) of them are kept
//! meanwhile. Without this, a store down for a day would leave every hour's attempts on
//! the disk for good.

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
/// of the scheduled backups past `keep`, marking them `pruned`; returns them. The local
/// files of failed ones are deleted once a newer backup of their kind is done, or past
/// `keep` among the failed ones.
pub async fn prune(db: &Db, keep: Retention, s3: &S3Settings) -> Result<Vec<Backup>, BackupError> {
    let mut pruned = Vec::new();
    for (kind, n) in [("hourly", keep.keep_hourly), ("daily", keep.keep_daily)] {
        let done = records::of_kind(db, kind, "done").await?;
        let newest_done = done.first().map(|b| b.started_at);
        for b in done.into_iter().skip(n.max(1)) {
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
        // A failed attempt that left nothing on the disk stays `failed`, as the record of
        // the failure; one that left its file is pruned like a done one.
        let failed = records::of_kind(db, kind, "failed").await?;
        for (i, b) in failed.into_iter().enumerate() {
            let superseded = newest_done.is_some_and(|t| t > b.started_at);
            let file = Path::new(&b.path);
            let left_a_file = file.exists() || verify::manifest_path(file).exists();
            if !left_a_file || !(superseded || i >= n.max(1)) {
                continue;
            }
            verify::remove_with_manifest(file).await?;
            records::set_pruned(db, &b.id).await?;
            tracing::info!(backup = %b.id, kind, superseded, "the local file of a failed backup pruned");
            pruned.push(b);
        }
    }
    Ok(pruned)
}
