//! `/admin/backups`: operators see each backup with its status, SHA-256 and error;
//! customers and visitors do not.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{spawn_app, OPERATOR_EMAIL, PASSWORD};
use j1msky_ops::backup::{self, Kind, Options, Quiet};

/// The test database's URL (pg_dump connects with it).
async fn url_of(app: &common::TestApp) -> String {
    if let Some(file) = app.db.sqlite_file() {
        return format!("sqlite://{}", file.display());
    }
    let (name,): (String,) =
        sqlx::query_as("SELECT CAST(current_database() AS TEXT)").fetch_one(app.db.pool()).await.expect("name");
    let server = std::env::var(j1msky_db::testing::POSTGRES_URL_ENV).expect("server url");
    let base = server.rsplit_once('/').map(|(b, _)| b.to_string()).expect("a server URL with a database");
    format!("{base}/{name}")
}

#[tokio::test]
async fn operators_see_each_backup_with_its_checksum_and_failures_with_their_error() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("dir");
    let url = url_of(&app).await;
    let good = Options { dir: dir.path().join("ok"), copy_to: None, kind: Kind::Manual };
    let done = backup::take(&app.db, &url, &good, &app.clock, &Quiet).await.expect("backup");
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"a file, not a directory").expect("file");
    let bad = Options { dir: blocked, copy_to: None, kind: Kind::Hourly };
    backup::take(&app.db, &url, &bad, &app.clock, &Quiet).await.expect_err("fails");

    let visitor = app.browser().get(app.url("/admin/backups")).send().await.expect("get");
    assert!(visitor.status().is_redirection() || visitor.status().is_client_error(), "{}", visitor.status());
    let op = app.browser();
    assert_eq!(app.login(&op, OPERATOR_EMAIL, PASSWORD).await.status(), 303);
    let page = op.get(app.url("/admin/backups")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("body");
    let sha = done.sha256.expect("sha");
    let file = std::path::Path::new(&done.path).file_name().expect("name").to_string_lossy().into_owned();
    assert!(html.contains(&sha[..16]) && html.contains(&file), "the good backup and its checksum");
    assert!(html.contains("failed") && html.contains("blocked"), "the failure and its error");
    assert!(html.contains("Backups</a>"), "in the navigation");
}
