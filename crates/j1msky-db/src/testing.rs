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

/// A migrated, empty database that lives as long as this value.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
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
        let (url, dir) = fresh_url_on(backend).await;
        let db = match Db::open(&url).await {
            Ok(db) => db,
            Err(e) => panic!("test database {url}: {e}"),
        };
        TestDb { db, url, _dir: dir }
    }
}

/// A URL to a new empty (unmigrated) database on the requested engine, and the
/// temporary directory that must outlive it (SQLite).
pub async fn fresh_url() -> (String, Option<tempfile::TempDir>) {
    fresh_url_on(requested_backend()).await
}

/// As [`fresh_url`] on the given engine.
pub async fn fresh_url_on(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => panic!("temporary directory: {e}"),
            };
            let url = format!("sqlite://{}/test.db", dir.path().display());
            (url, Some(dir))
        }
        Backend::Postgres => (create_postgres_database().await, None),
    }
}

async fn create_postgres_database() -> String {
    let Ok(server) = std::env::var(POSTGRES_URL_ENV) else {
        panic!("{BACKEND_ENV}=postgres needs {POSTGRES_URL_ENV}=postgres://user@host:port/db");
    };
    let name = format!("j1msky_test_{}", ulid::Ulid::new().to_string().to_ascii_lowercase());
    let admin = match Db::connect(&server).await {
        Ok(db) => db,
        Err(e) => panic!("cannot reach the test PostgreSQL server: {e}"),
    };
    if let Err(e) = sqlx::query(&format!("CREATE DATABASE {name}")).execute(admin.pool()).await {
        panic!("CREATE DATABASE {name}: {e}");
    }
    admin.close().await;
    with_database(&server, &name)
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
