//! The test fixture gives back what a test database occupies when the test is done: a
//! full run creates thousands of them, and a PostgreSQL server that kept each (about
//! 10 MB) ran out of disk in the middle of a run.
// A test stops at the first surprise (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use j1msky_db::testing::{fresh_url, requested_backend, TestDb, KEEP_ENV, POSTGRES_URL_ENV};
use j1msky_db::{Backend, Db};

/// Whether the database behind `url` still exists.
async fn exists(url: &str) -> bool {
    match requested_backend() {
        Backend::Sqlite => {
            let path = url.strip_prefix("sqlite://").expect("a SQLite URL");
            std::path::Path::new(path).parent().expect("its directory").exists()
        }
        Backend::Postgres => {
            let name = url.rsplit('/').next().expect("a database name");
            let name = name.split('?').next().unwrap_or(name);
            let server = std::env::var(POSTGRES_URL_ENV).expect("the test server");
            let admin = Db::connect(&server).await.expect("the test server");
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
                .bind(name)
                .fetch_one(admin.pool())
                .await
                .expect("pg_database");
            admin.close().await;
            n == 1
        }
    }
}

#[tokio::test]
async fn a_test_database_is_given_back_when_its_test_is_done_even_with_connections_open() {
    let kept = std::env::var(KEEP_ENV).as_deref() == Ok("1");
    let t = TestDb::new().await;
    let url = t.url.clone();
    // A connection still open (the test's pool) does not keep the database alive.
    sqlx::query("SELECT 1").execute(t.db.pool()).await.expect("a query");
    assert!(exists(&url).await, "the database exists while its test runs");
    drop(t);
    assert_eq!(exists(&url).await, kept, "dropped with its test unless {KEEP_ENV}=1");

    let (url, scratch) = fresh_url().await;
    let db = Db::open(&url).await.expect("migrated");
    assert!(exists(&url).await);
    drop(scratch);
    assert_eq!(exists(&url).await, kept, "an unmigrated fresh database too");
    drop(db);
}
