//! Checksums and manifests: what proves a backup file is the one that was written.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{BackupError, Progress};

/// What `<file>.json` says about a backup file: enough to check and restore it on a
/// machine that has lost the database that recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub engine: String,
    pub kind: String,
    /// The file's name (it lives beside the manifest).
    pub file: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub started_at: i64,
    pub finished_at: i64,
}

pub(super) fn manifest_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".json");
    PathBuf::from(name)
}

/// (size, lower-case hex SHA-256) of `path`, read in 1 MiB pieces.
pub async fn sha256_file(path: &Path, progress: &dyn Progress) -> Result<(u64, String), BackupError> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| BackupError::io(path, e))?;
    let total = file.metadata().await.map_err(|e| BackupError::io(path, e))?.len();
    progress.step("checksum", Some(total));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| BackupError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress.at(done);
    }
    Ok((done, hex::encode(hasher.finalize())))
}

pub(super) async fn write_manifest(file: &Path, m: &Manifest) -> Result<(), BackupError> {
    let path = manifest_path(file);
    let text = serde_json::to_string_pretty(m).map_err(|e| BackupError::Unsupported(format!("manifest: {e}")))?;
    tokio::fs::write(&path, text).await.map_err(|e| BackupError::io(&path, e))?;
    super::owner_only(&path, 0o600).await
}

/// The manifest beside `file`, if there is one; an unreadable one is an error.
pub async fn read_manifest(file: &Path) -> Result<Option<Manifest>, BackupError> {
    let path = manifest_path(file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| BackupError::Unsupported(format!("{}: not a backup manifest: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BackupError::io(&path, e)),
    }
}

/// Copies `file` and its manifest into `dir` and checks the copy's SHA-256; returns the
/// copy's path. A copy that does not match is deleted and reported.
pub(super) async fn copy_checked(
    file: &Path,
    dir: &Path,
    sha256: &str,
    progress: &dyn Progress,
) -> Result<PathBuf, BackupError> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| BackupError::io(dir, e))?;
    let name = file.file_name().ok_or_else(|| BackupError::Unsupported(format!("{} has no name", file.display())))?;
    let target = super::absolute(&dir.join(name));
    progress.step("copy", None);
    tokio::fs::copy(file, &target).await.map_err(|e| BackupError::io(&target, e))?;
    super::owner_only(&target, 0o600).await?;
    let (_, copied) = sha256_file(&target, progress).await?;
    if copied != sha256 {
        let _ = tokio::fs::remove_file(&target).await;
        return Err(BackupError::Corrupt {
            file: target.display().to_string(),
            expected: sha256.to_string(),
            actual: copied,
        });
    }
    let manifest = manifest_path(file);
    let manifest_copy = manifest_path(&target);
    tokio::fs::copy(&manifest, &manifest_copy).await.map_err(|e| BackupError::io(&manifest_copy, e))?;
    super::owner_only(&manifest_copy, 0o600).await?;
    Ok(target)
}

/// Deletes a backup file and its manifest; a file already gone is fine.
pub(super) async fn remove_with_manifest(file: &Path) -> Result<(), BackupError> {
    for path in [file.to_path_buf(), manifest_path(file)] {
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::io(&path, e)),
        }
    }
    Ok(())
}
