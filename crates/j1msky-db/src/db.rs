use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

use crate::error::DbError;

/// Where the embedded database lives unless told otherwise.
pub const DEFAULT_SQLITE_PATH: &str = "data/j1msky.db";

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// What names this build's PostgreSQL schema: a digest of its migrations' versions and
/// checksums (the test fixture keeps one migrated template database per schema).
#[cfg(feature = "testing")]
pub(crate) fn postgres_schema_fingerprint() -> String {
    // FNV-1a, written out: the digest only names a database, nothing relies on it
    // being hard to forge, and the checksums in it are already SHA-384.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for m in POSTGRES_MIGRATIONS.iter() {
        for b in m.version.to_le_bytes().iter().chain(m.checksum.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Reads the engine from a URL scheme.
    pub fn from_url(url: &str) -> Result<Backend, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(DbError::UnsupportedUrl(redact(url)))
        }
    }

    /// Lower-case engine name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A write transaction. Pass `&mut *tx` to functions that take `&mut AnyConnection`.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The shared database handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// The database file, for SQLite on disk.
    file: Option<std::path::PathBuf>,
    /// Where it was opened, for connections outside the pool (the invalidation listener).
    url: Url,
    /// Generations of the cached reads (see [`crate::invalidation`]).
    invalidations: std::sync::Arc<crate::invalidation::Invalidations>,
}

/// A connection URL, shown without its password.
#[derive(Clone)]
struct Url(std::sync::Arc<str>);

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl Db {
    /// Connects to `url` (`sqlite://path`, `sqlite::memory:` or `postgres://…`).
    /// SQLite files and their directory are created when missing.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let given = Url(url.into());
        let mut url = url.to_string();
        let mut file = None;
        if backend == Backend::Sqlite {
            if let Some(path) = sqlite_file_path(&url) {
                file = Some(std::path::PathBuf::from(&path));
                if let Some(parent) = Path::new(&path).parent() {
                    if !parent.as_os_str().is_empty() {
                        std::fs::create_dir_all(parent)
                            .map_err(|source| DbError::DataDir { path: parent.display().to_string(), source })?;
                    }
                }
                if !url.contains("mode=") {
                    url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
                }
            }
        }
        let options = AnyConnectOptions::from_str(&url)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let max = match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            // On PostgreSQL the pool's check of an idle connection before handing it out is
            // a network round trip of its own (Sync, then ReadyForQuery) before every
            // statement. Without it a connection the server dropped fails its one statement
            // and is closed by the pool, which the callers' error paths already handle.
            .test_before_acquire(backend == Backend::Sqlite)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; foreign keys are
                        // off by default in SQLite; the busy timeout makes a second
                        // process (the CLI beside a running server) wait instead of failing.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
                             PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Db { pool, backend, file, url: given, invalidations: Default::default() })
    }

    /// Applies pending migrations for this engine.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Db, DbError> {
        let db = Db::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// The connection pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The database file when this is SQLite on disk (None for memory and PostgreSQL).
    pub fn sqlite_file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The URL this handle was opened with.
    pub(crate) fn url(&self) -> &str {
        &self.url.0
    }

    /// The generations of cached reads through this handle ([`crate::invalidation`]).
    pub fn invalidations(&self) -> &crate::invalidation::Invalidations {
        &self.invalidations
    }

    /// The engine behind this handle.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`) so two writers queue on the busy timeout instead of
    /// failing when a read lock cannot be upgraded.
    ///
    /// The BEGIN runs in its own task: a caller cancelled while it is in flight (a client
    /// that hung up) must not leave a pooled connection inside a half-begun transaction,
    /// which would make every later `begin` on that connection fail.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        let pool = self.pool.clone();
        let backend = self.backend;
        // Tracked: the handle is awaited just below; only a cancelled caller detaches it,
        // which is the point (the BEGIN completes and the pool gets the connection back).
        #[allow(clippy::disallowed_methods)]
        let started = tokio::spawn(async move {
            match backend {
                Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
                Backend::Postgres => pool.begin().await,
            }
        });
        match started.await {
            Ok(tx) => Ok(tx?),
            Err(e) => Err(DbError::Corrupt(format!("the task starting a transaction failed: {e}"))),
        }
    }

    /// A cheap round trip, for readiness probes.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Pool figures: (open connections, idle connections).
    pub fn pool_stats(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The file behind a `sqlite:` URL, if it names one.
fn sqlite_file_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(path.to_string())
    }
}

/// Drops a password from a URL before it is shown anywhere.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_backends_and_redacts() {
        assert_eq!(Backend::from_url("sqlite://data/x.db").ok(), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("postgres://u@h/db").ok(), Some(Backend::Postgres));
        let err = Backend::from_url("mysql://root:hunter2@h/db").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(sqlite_file_path("sqlite://data/j.db?mode=rwc").as_deref(), Some("data/j.db"));
        assert_eq!(sqlite_file_path("sqlite::memory:"), None);
    }
}
