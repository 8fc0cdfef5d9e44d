//! Backup copies in an S3-compatible store, against moto's server on loopback, on the
//! engine the test run selects: a backup is uploaded in parts, carries its SHA-256 as
//! metadata and restores from its `s3://` URL; retention deletes remote copies with the
//! local ones; a copy whose bytes changed is refused; a store that is down fails the
//! backup with a `backup_failed` alert and keeps the local file.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::s3_server;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::{Clock, ManualClock};
use j1msky_db::testing::{fresh_url, TestDb};
use j1msky_ops::backup::{
    self, BackupError, CopyTo, Kind, Options, Quiet, RestoreOptions, Retention, S3Settings, S3Url, Schedule,
};
use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt, PutPayload};
use s3_server::{s3_python, Moto};

/// 2026-11-25T00:00:00Z.
const DAY_START: i64 = 1_795_564_800_000_000;
const HOUR: i64 = 3_600_000_000;

async fn customer(db: &j1msky_db::Db, name: &str, now: i64) {
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    j1msky_accounts::customers::create(
        db,
        &catalogue,
        &j1msky_audit::Actor::cli(),
        j1msky_accounts::customers::NewCustomer { name: name.into(), ..Default::default() },
        now,
    )
    .await
    .expect("customer");
}

/// The customers of a database, or None when it has no tables.
async fn names(url: &str) -> Option<Vec<String>> {
    let db = j1msky_db::Db::connect(url).await.expect("connect");
    let rows: Result<Vec<(String,)>, _> =
        sqlx::query_as("SELECT name FROM customers ORDER BY name").fetch_all(db.pool()).await;
    db.close().await;
    rows.ok().map(|r| r.into_iter().map(|r| r.0).collect())
}

/// Makes the database's backup larger than `bytes`: bytes that do not compress, so a
/// pg_dump is as large as a SQLite file.
async fn ballast(db: &j1msky_db::Db, bytes: usize) {
    let kind = match db.backend() {
        j1msky_db::Backend::Sqlite => "BLOB",
        j1msky_db::Backend::Postgres => "BYTEA",
    };
    sqlx::query(&format!("CREATE TABLE test_ballast (b {kind})")).execute(db.pool()).await.expect("table");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..bytes.div_ceil(1 << 20) {
        let chunk: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        sqlx::query("INSERT INTO test_ballast (b) VALUES ($1)").bind(chunk).execute(db.pool()).await.expect("ballast");
    }
}

async fn keys(bucket: &str, s: &S3Settings) -> BTreeSet<String> {
    let store = backup::s3_store(bucket, s).expect("store");
    let all: Vec<_> = store.list(None).try_collect().await.expect("list");
    all.into_iter().map(|m| m.location.to_string()).collect()
}

#[tokio::test]
async fn a_backup_is_uploaded_in_parts_checked_and_restored_from_its_s3_url() {
    let Some(python) = s3_python() else { return };
    let moto = Moto::start(&python);
    moto.bucket("backups").await;
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START);
    customer(&t.db, "Before", clock.now_micros()).await;
    ballast(&t.db, 11 << 20).await;
    let dir = tempfile::tempdir().expect("dir");
    // 5 MiB parts (S3's least): the ~11 MiB backup goes up in three.
    let s3 = S3Settings { part_size: Some(5 << 20), ..moto.settings() };
    let to = S3Url::parse("s3://backups/j1msky/prod/").expect("url");
    let opts = Options { dir: dir.path().join("main"), copy_to: Some(CopyTo::S3(to, s3.clone())), kind: Kind::Manual };
    let b = backup::take(&t.db, &t.url, &opts, &clock, &Quiet).await.expect("backup");
    customer(&t.db, "After", clock.now_micros()).await;

    let name = Path::new(&b.path).file_name().unwrap().to_string_lossy().into_owned();
    let copy = b.copied_to.clone().expect("copied");
    assert_eq!(copy, format!("s3://backups/j1msky/prod/{name}"));
    assert_eq!(backup::get(&t.db, &b.id).await.unwrap().unwrap().copied_to.as_deref(), Some(copy.as_str()));
    let sha = b.sha256.clone().expect("sha");
    let size = b.size_bytes.expect("size");
    assert!(size > 10 << 20, "the backup is large enough for parts: {size}");
    // What the store holds: the file (its SHA-256 in its metadata, an ETag of 3 parts)
    // and its manifest.
    let store = backup::s3_store("backups", &s3).expect("store");
    let key = object_store::path::Path::from(format!("j1msky/prod/{name}"));
    let head = store.get_opts(&key, GetOptions { head: true, ..Default::default() }).await.expect("head");
    assert_eq!(head.meta.size, size as u64);
    assert_eq!(head.attributes.get(&Attribute::Metadata("sha256".into())).map(|v| v.as_ref()), Some(sha.as_str()));
    assert!(head.meta.e_tag.as_deref().is_some_and(|e| e.trim_matches('"').ends_with("-3")), "{:?}", head.meta.e_tag);
    let manifest = store.get(&format!("j1msky/prod/{name}.json").into()).await.expect("manifest");
    let manifest: backup::Manifest = serde_json::from_slice(&manifest.bytes().await.unwrap()).unwrap();
    assert_eq!((manifest.id.as_str(), manifest.sha256.as_str()), (b.id.as_str(), sha.as_str()));

    // Restored from the store into a new database: what was there at the backup.
    let (target, target_dir) = fresh_url().await;
    let opts = RestoreOptions { s3: s3.clone(), ..Default::default() };
    let restored = backup::restore_from(&copy, &target, &opts, &clock, &Quiet).await.expect("restore");
    assert_eq!((restored.backup_id.as_deref(), restored.sha256.as_str()), (Some(b.id.as_str()), sha.as_str()));
    assert_eq!(names(&target).await, Some(vec!["Before".to_string()]));
    let db = j1msky_db::Db::connect(&target).await.expect("restored");
    let restores = backup::restores(&db).await.expect("restores");
    assert_eq!((restores.len(), restores[0].file.as_str()), (1, copy.as_str()), "the restore names its source");
    db.close().await;
    // The download (beside a SQLite target) was removed once restored.
    if let Some(d) = target_dir.dir() {
        let left: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".j1msky-download"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    // A key that is not there: a clear error naming it, the target untouched.
    let (fresh, _fresh_dir) = fresh_url().await;
    let missing = "s3://backups/j1msky/prod/nothing.db";
    let err = backup::restore_from(missing, &fresh, &opts, &clock, &Quiet).await.expect_err("missing");
    assert!(matches!(err, BackupError::Remote { .. }) && err.to_string().contains(missing), "{err}");
    assert!(names(&fresh).await.is_none());
}

#[tokio::test]
async fn retention_deletes_the_remote_copies_of_the_backups_it_prunes() {
    let Some(python) = s3_python() else { return };
    let moto = Moto::start(&python);
    moto.bucket("hourly").await;
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START + 5 * 60_000_000);
    let dir = tempfile::tempdir().expect("dir");
    let s = Schedule {
        db: t.db.clone(),
        url: t.url.clone(),
        clock: Arc::new(clock.clone()),
        dir: dir.path().join("hourly"),
        copy_to: Some(CopyTo::S3(S3Url::parse("s3://hourly/site-a").unwrap(), moto.settings())),
        keep: Retention { keep_hourly: 1, keep_daily: 1 },
    };
    let handlers = backup::timer_handlers(&s);
    handlers.schedule_recurring(&t.db, clock.now_micros()).await.expect("schedule");
    for hour in [0, 1, 2, 24] {
        clock.advance_micros(DAY_START + hour * HOUR + 5 * 60_000_000 - clock.now_micros());
        assert_eq!(j1msky_db::timers::run_due_once(&t.db, &handlers, clock.now_micros()).await.expect("fire"), 1);
    }
    let all = backup::list(&t.db, true, 100).await.expect("list");
    assert_eq!(all.len(), 4);
    let mut kept = BTreeSet::new();
    for b in &all {
        let copy = b.copied_to.as_deref().expect("each copied");
        let key = copy.strip_prefix("s3://hourly/").expect("in the bucket").to_string();
        assert!(key.starts_with("site-a/"), "{key}");
        if b.status == "done" {
            kept.insert(key.clone());
            kept.insert(format!("{key}.json"));
        }
    }
    // Kept: the newest hourly (hour 2) and day two's daily; pruned: day one's daily and
    // hour 1's hourly, here and there.
    assert_eq!(all.iter().filter(|b| b.status == "pruned").count(), 2, "{all:#?}");
    assert_eq!(keys("hourly", &moto.settings()).await, kept);
}

#[tokio::test]
async fn a_copy_whose_bytes_changed_in_the_store_is_refused() {
    let Some(python) = s3_python() else { return };
    let moto = Moto::start(&python);
    moto.bucket("tampered").await;
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START);
    customer(&t.db, "Before", clock.now_micros()).await;
    let dir = tempfile::tempdir().expect("dir");
    let to = S3Url::parse("s3://tampered").unwrap();
    let opts = Options { dir: dir.path().into(), copy_to: Some(CopyTo::S3(to, moto.settings())), kind: Kind::Manual };
    let b = backup::take(&t.db, &t.url, &opts, &clock, &Quiet).await.expect("backup");
    let copy = b.copied_to.clone().expect("copied");
    let sha = b.sha256.clone().unwrap();

    // One byte flipped in the store (its manifest and metadata still say the old sum).
    let store = backup::s3_store("tampered", &moto.settings()).unwrap();
    let key = object_store::path::Path::from(copy.strip_prefix("s3://tampered/").unwrap());
    let mut bytes = std::fs::read(&b.path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let tampered = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let mut attributes = object_store::Attributes::new();
    attributes.insert(Attribute::Metadata("sha256".into()), sha.clone().into());
    let put = object_store::PutOptions { attributes, ..Default::default() };
    store.put_opts(&key, PutPayload::from(bytes), put).await.unwrap();

    let (fresh, _fresh_dir) = fresh_url().await;
    let opts = RestoreOptions { s3: moto.settings(), ..Default::default() };
    let err = backup::restore_from(&copy, &fresh, &opts, &clock, &Quiet).await.expect_err("corrupt");
    assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&sha) && err.to_string().contains(&copy), "{err}");
    assert!(names(&fresh).await.is_none(), "nothing was written into the target");
    // Even given the changed file's own sum by hand, the store's metadata disagrees.
    let given = RestoreOptions { sha256: Some(tampered.clone()), ..opts.clone() };
    let err = backup::restore_from(&copy, &fresh, &given, &clock, &Quiet).await.expect_err("metadata");
    assert!(matches!(err, BackupError::Corrupt { .. }) && err.to_string().contains(&tampered), "{err}");
    assert!(names(&fresh).await.is_none());
}

#[tokio::test]
async fn a_store_that_is_down_fails_the_backup_with_an_alert_and_keeps_the_local_file() {
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START);
    customer(&t.db, "Before", clock.now_micros()).await;
    let dir = tempfile::tempdir().expect("dir");
    // Nothing listens there: every request is refused.
    let dead = s3_server::settings(&format!("http://127.0.0.1:{}", s3_server::free_port()));
    let to = S3Url::parse("s3://backups/down").unwrap();
    let opts = Options { dir: dir.path().into(), copy_to: Some(CopyTo::S3(to, dead)), kind: Kind::Manual };
    let err = backup::take(&t.db, &t.url, &opts, &clock, &Quiet).await.expect_err("store down");
    assert!(err.to_string().contains("s3://backups/down/"), "the error names the copy: {err}");
    let rows = backup::list(&t.db, false, 10).await.expect("list");
    assert_eq!((rows.len(), rows[0].status.as_str(), rows[0].copied_to.as_deref()), (1, "failed", None));
    let alerts = j1msky_audit::alerts::recent(&t.db, 10).await.expect("alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, "backup_failed");
    assert!(alerts[0].message.contains(&rows[0].id), "{}", alerts[0].message);
    // The local file and its manifest are whole, and restore.
    let file = Path::new(&rows[0].path);
    let manifest = backup::read_manifest(file).await.expect("manifest").expect("beside the file");
    assert_eq!(backup::sha256_file(file, &Quiet).await.unwrap().1, manifest.sha256);
    let (target, _target_dir) = fresh_url().await;
    backup::restore(file, &target, &RestoreOptions::default(), &clock, &Quiet).await.expect("restore");
    assert_eq!(names(&target).await, Some(vec!["Before".to_string()]));
}
