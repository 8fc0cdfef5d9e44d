//! What differs between the engines: taking the snapshot and loading it back.
//! SQLite's `VACUUM INTO` and PostgreSQL's own `pg_dump`/`pg_restore` are used rather than
//! copying rows ourselves: both give one consistent snapshot while the server writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use j1msky_db::{Backend, Db};
use sqlx::Row;

use super::{BackupError, Progress};

/// How often a running dump's file size is read for the progress bar.
const POLL: Duration = Duration::from_millis(200);

/// Writes a snapshot of `db` to `target` (which must not exist).
pub(super) async fn dump(db: &Db, url: &str, target: &Path, progress: &dyn Progress) -> Result<(), BackupError> {
    let _ = tokio::fs::remove_file(target).await;
    match db.backend() {
        Backend::Sqlite => {
            if db.sqlite_file().is_none() {
                return Err(BackupError::Unsupported("an in-memory SQLite database cannot be backed up".into()));
            }
            let size = sqlite_size(db).await.ok();
            progress.step("snapshot", size);
            let path = target.display().to_string();
            let run = async {
                sqlx::query("VACUUM INTO $1")
                    .bind(&path)
                    .execute(db.pool())
                    .await
                    .map(|_| ())
                    .map_err(BackupError::from)
            };
            watch_size(run, target, progress).await
        }
        Backend::Postgres => {
            let size: Option<u64> = sqlx::query("SELECT pg_database_size(current_database())")
                .fetch_one(db.pool())
                .await
                .ok()
                .and_then(|r| r.try_get::<i64, _>(0).ok())
                .and_then(|n| u64::try_from(n).ok());
            // A compressed dump ends well below the database's size: the bar is a hint.
            progress.step("pg_dump", size);
            let (conn, password) = libpq_url(url)?;
            let mut cmd = tokio::process::Command::new(find_tool("pg_dump")?);
            cmd.arg("--format=custom").arg("--no-password").arg(format!("--file={}", target.display()));
            cmd.arg(format!("--dbname={conn}"));
            watch_size(run_tool(cmd, password, "pg_dump"), target, progress).await
        }
    }
}

/// Loads a PostgreSQL dump into the database at `url` in one transaction; `clean` drops
/// what is there first.
pub(super) async fn pg_restore(file: &Path, url: &str, clean: bool) -> Result<(), BackupError> {
    let (conn, password) = libpq_url(url)?;
    let mut cmd = tokio::process::Command::new(find_tool("pg_restore")?);
    cmd.args(["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", "--no-password"]);
    if clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    cmd.arg(format!("--dbname={conn}")).arg(file);
    run_tool(cmd, password, "pg_restore").await
}

/// Whether the database at `url` holds any table (SQLite: a non-empty file).
pub(super) async fn has_tables(url: &str) -> Result<bool, BackupError> {
    match Backend::from_url(url)? {
        Backend::Sqlite => {
            let Some(path) = sqlite_path(url) else { return Ok(false) };
            match std::fs::metadata(&path) {
                Ok(m) if m.len() == 0 => Ok(false),
                Ok(_) => {
                    let db = Db::connect(url).await?;
                    let row = sqlx::query("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
                        .fetch_one(db.pool())
                        .await;
                    db.close().await;
                    let n: i64 = row?.try_get(0)?;
                    Ok(n > 0)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(BackupError::io(&path, e)),
            }
        }
        Backend::Postgres => {
            let db = Db::connect(url).await?;
            let row = sqlx::query(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
            )
            .fetch_one(db.pool())
            .await;
            db.close().await;
            let n: i64 = row?.try_get(0)?;
            Ok(n > 0)
        }
    }
}

/// The file behind a `sqlite:` URL.
pub(super) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

async fn sqlite_size(db: &Db) -> Result<u64, BackupError> {
    let row = sqlx::query("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
        .fetch_one(db.pool())
        .await?;
    let n: i64 = row.try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Runs `work` while reporting the size `target` has grown to.
async fn watch_size(
    work: impl std::future::Future<Output = Result<(), BackupError>>,
    target: &Path,
    progress: &dyn Progress,
) -> Result<(), BackupError> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep(POLL) => {
                if let Ok(m) = tokio::fs::metadata(target).await {
                    progress.at(m.len());
                }
            }
        }
    }
}

async fn run_tool(mut cmd: tokio::process::Command, password: Option<String>, tool: &str) -> Result<(), BackupError> {
    // The password goes through the environment, never the command line others can read.
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| BackupError::Tool {
        tool: tool.into(),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().chars().take(2000).collect();
    Err(BackupError::Tool { tool: tool.into(), status: out.status.to_string(), stderr })
}

/// The URL libpq is given (without its password) and the password.
fn libpq_url(url: &str) -> Result<(String, Option<String>), BackupError> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| BackupError::Unsupported(format!("the database URL is not valid: {e}")))?;
    let password = parsed.password().map(|p| {
        url::form_urlencoded::parse(format!("p={p}").as_bytes()).next().map_or_else(|| p.to_string(), |(_, v)| v.into())
    });
    if password.is_some() {
        let _ = parsed.set_password(None);
    }
    Ok((parsed.to_string(), password))
}

/// A PostgreSQL client tool: on PATH, else the newest `/usr/lib/postgresql/*/bin`, else
/// `/usr/local/bin`.
fn find_tool(name: &'static str) -> Result<PathBuf, BackupError> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    on_path
        .into_iter()
        .chain(versioned.into_iter().map(|(_, p)| p))
        .chain(std::iter::once(Path::new("/usr/local/bin").join(name)))
        .find(|p| p.is_file())
        .ok_or(BackupError::ToolMissing(name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_password_leaves_the_url() {
        let (url, pw) = super::libpq_url("postgres://app:s%40cret@db:5432/j1?sslmode=disable").unwrap();
        assert_eq!(url, "postgres://app@db:5432/j1?sslmode=disable");
        assert_eq!(pw.as_deref(), Some("s@cret"));
        assert_eq!(super::libpq_url("postgres://app@db/j1").unwrap().1, None);
        assert_eq!(super::sqlite_path("sqlite://data/x.db?mode=rwc"), Some("data/x.db".into()));
        assert_eq!(super::sqlite_path("sqlite::memory:"), None);
    }
}
