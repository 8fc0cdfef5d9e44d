//! Fresh databases for tests: a temporary SQLite file by default, or a new
//! PostgreSQL database when `J1MSKY_TEST_BACKEND=postgres` and
//! `J1MSKY_TEST_POSTGRES_URL` (a server URL with rights to create databases) are set.

// A fixture that cannot give a test its database must stop that test loudly, and this
// module is compiled only for tests (feature `testing`).
#![allow(clippy::panic)]

use crate::{Backend, Db};

/// Environment variable choosing the engine for tests (`sqlite` or `postgres`).
pub const BACKEND_ENV: &str = "J1MSKY_TEST_BACKEND";
/// Environment variable with the PostgreSQL server URL for tests.
pub const POSTGRES_URL_ENV: &str = "J1MSKY_TEST_POSTGRES_URL";

/// Environment variable that keeps the PostgreSQL test databases after their tests
/// (`1`), to look at one by hand; by default each is dropped with its test.
pub const KEEP_ENV: &str = "J1MSKY_TEST_KEEP_DB";

/// A migrated, empty database that lives as long as this value.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _scratch: Scratch,
}

/// What a test database occupies outside the test: the temporary directory of a SQLite
/// file, or a PostgreSQL database on the test server. Dropping it gives that back, so a
/// whole run (thousands of databases of about 10 MB each) does not fill the server's disk.
pub struct Scratch {
    tempdir: Option<tempfile::TempDir>,
    pg: Option<PgDatabase>,
}

impl Scratch {
    /// The temporary directory holding a SQLite database (none for PostgreSQL).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.tempdir.as_ref().map(|d| d.path())
    }
}

struct PgDatabase {
    server: String,
    name: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(pg) = self.pg.take() else { return };
        if std::env::var(KEEP_ENV).as_deref() == Ok("1") {
            return;
        }
        // Drop runs inside the test's runtime, which cannot be blocked on from its own
        // thread: the database is dropped from a thread with a runtime of its own, and
        // the test waits for it. FORCE ends the connections still open on it (the
        // test's pool, a server process the test started).
        let name = pg.name.clone();
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let admin = Db::connect(&pg.server).await.map_err(|e| e.to_string())?;
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name);
                let result = sqlx::query(&sql).execute(admin.pool()).await.map(|_| ()).map_err(|e| e.to_string());
                admin.close().await;
                result
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("test database {name} was not dropped: {e}"),
            Err(_) => eprintln!("test database {name} was not dropped: the dropping thread panicked"),
        }
    }
}

/// The engine the test run asked for.
pub fn requested_backend() -> Backend {
    match std::env::var(BACKEND_ENV).as_deref() {
        Ok("postgres") | Ok("postgresql") => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

impl TestDb {
    /// A new empty database on the requested engine, migrated.
    /// Panics with a clear message when PostgreSQL was asked for but is not reachable:
    /// a test run that silently fell back to SQLite would prove nothing.
    pub async fn new() -> TestDb {
        TestDb::on(requested_backend()).await
    }

    /// As [`TestDb::new`] on the given engine, whatever the run asked for (tests that
    /// need both engines at once, such as the schema-parity test).
    pub async fn on(backend: Backend) -> TestDb {
        let (url, scratch) = match backend {
            Backend::Sqlite => fresh_url_on(backend).await,
            // A copy of a database migrated once per schema: running the migrations for
            // each of a run's thousands of databases was most of the PostgreSQL half.
            Backend::Postgres => postgres_scratch(create_postgres_database(true).await),
        };
        let db = match Db::open(&url).await {
            Ok(db) => db,
            Err(e) => panic!("test database {url}: {e}"),
        };
        TestDb { db, url, _scratch: scratch }
    }
}

/// A URL to a new empty (unmigrated) database on the requested engine, and the
/// [`Scratch`] that must outlive its use (bind it to a named variable: `_` drops it at
/// once, and the database with it).
pub async fn fresh_url() -> (String, Scratch) {
    fresh_url_on(requested_backend()).await
}

/// As [`fresh_url`] on the given engine.
pub async fn fresh_url_on(backend: Backend) -> (String, Scratch) {
    match backend {
        Backend::Sqlite => {
            let dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => panic!("temporary directory: {e}"),
            };
            let url = format!("sqlite://{}/test.db", dir.path().display());
            (url, Scratch { tempdir: Some(dir), pg: None })
        }
        Backend::Postgres => postgres_scratch(create_postgres_database(false).await),
    }
}

fn postgres_scratch((server, name): (String, String)) -> (String, Scratch) {
    let url = with_database(&server, &name);
    (url, Scratch { tempdir: None, pg: Some(PgDatabase { server, name }) })
}

/// The migrated template of this build's schema, made once per server and schema.
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// Makes the template database if the server lacks it: under an advisory lock (test
/// binaries of other runs may ask at once), migrated under another name and renamed when
/// complete, so a half-migrated template is never copied.
async fn template(server: &str) -> String {
    let name = format!("j1msky_tpl_{}", crate::db::postgres_schema_fingerprint());
    let admin = match Db::connect(server).await {
        Ok(db) => db,
        Err(e) => panic!("cannot reach the test PostgreSQL server: {e}"),
    };
    let mut conn = match admin.pool().acquire().await {
        Ok(c) => c,
        Err(e) => panic!("test PostgreSQL server: {e}"),
    };
    let step = |what: &str, e: sqlx::Error| -> ! { panic!("test template {name}, {what}: {e}") };
    const LOCK: &str = "SELECT pg_advisory_lock(7281942), 1";
    if let Err(e) = sqlx::query(LOCK).execute(&mut *conn).await {
        step("lock", e)
    }
    let exists: i64 = match sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut *conn)
        .await
    {
        Ok(n) => n,
        Err(e) => step("lookup", e),
    };
    if exists == 0 {
        let building = format!("{name}_{}", ulid::Ulid::new().to_string().to_ascii_lowercase());
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE {building}")).execute(&mut *conn).await {
            step("create", e)
        }
        match Db::open(&with_database(server, &building)).await {
            Ok(db) => db.close().await,
            Err(e) => panic!("test template {building}: {e}"),
        }
        if let Err(e) = sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}")).execute(&mut *conn).await {
            step("rename", e)
        }
    }
    if let Err(e) = sqlx::query("SELECT pg_advisory_unlock(7281942), 1").execute(&mut *conn).await {
        step("unlock", e)
    }
    drop(conn);
    admin.close().await;
    name
}

/// Creates a database on the test server, empty or (`migrated`) a copy of the migrated
/// template: the server's URL and the new name.
async fn create_postgres_database(migrated: bool) -> (String, String) {
    let Ok(server) = std::env::var(POSTGRES_URL_ENV) else {
        panic!("{BACKEND_ENV}=postgres needs {POSTGRES_URL_ENV}=postgres://user@host:port/db");
    };
    let from = match migrated {
        true => format!(" TEMPLATE {}", TEMPLATE.get_or_init(|| template(&server)).await),
        false => String::new(),
    };
    let name = format!("j1msky_test_{}", ulid::Ulid::new().to_string().to_ascii_lowercase());
    let admin = match Db::connect(&server).await {
        Ok(db) => db,
        Err(e) => panic!("cannot reach the test PostgreSQL server: {e}"),
    };
    if let Err(e) = sqlx::query(&format!("CREATE DATABASE {name}{from}")).execute(admin.pool()).await {
        panic!("CREATE DATABASE {name}: {e}");
    }
    admin.close().await;
    (server, name)
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Stores an event with a payload given as raw JSON, inside the caller's
/// transaction: for tests that need rows the typed `outbox::emit_typed` would
/// never write (old shapes, malformed payloads, filler).
pub async fn emit_raw(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    kind: j1msky_core::events::Kind,
    customer_id: Option<&str>,
    payload: &serde_json::Value,
    now: i64,
) -> Result<String, crate::DbError> {
    crate::outbox::insert(conn, backend, kind, customer_id, payload, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_database_name() {
        assert_eq!(with_database("postgres://u@h:5/postgres", "x"), "postgres://u@h:5/x");
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(with_database("postgres://u@h:5/p?sslmode=disable", "x"), "postgres://u@h:5/x?sslmode=disable");
    }
}
