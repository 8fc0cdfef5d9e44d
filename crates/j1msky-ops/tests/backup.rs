//! Backups on the engine the test run selects: a backup restores into a new database
//! (checked against its SHA-256, copied and checked again); a corrupt file, a file
//! without a checksum and a database with tables are refused; the hourly timer keeps the
//! day's first as daily and prunes past retention; a failure is recorded with an alert.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::path::Path;
use std::sync::Arc;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::{Clock, ManualClock};
use j1msky_db::testing::{fresh_url, TestDb};
use j1msky_ops::backup::{self, BackupError, CopyTo, Kind, Options, Quiet, RestoreOptions, Retention, Schedule};

/// 2026-11-25T00:00:00Z.
const DAY_START: i64 = 1_795_564_800_000_000;
const HOUR: i64 = 3_600_000_000;

async fn customer(db: &j1msky_db::Db, name: &str, now: i64) -> String {
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    j1msky_accounts::customers::create(
        db,
        &catalogue,
        &j1msky_audit::Actor::cli(),
        j1msky_accounts::customers::NewCustomer { name: name.into(), ..Default::default() },
        now,
    )
    .await
    .expect("customer")
    .id
}

async fn names(url: &str) -> Vec<String> {
    let db = j1msky_db::Db::connect(url).await.expect("connect");
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM customers ORDER BY name").fetch_all(db.pool()).await.expect("names");
    db.close().await;
    rows.into_iter().map(|r| r.0).collect()
}

#[tokio::test]
async fn a_backup_restores_into_a_new_database_and_bad_files_or_targets_are_refused() {
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START);
    customer(&t.db, "Before", clock.now_micros()).await;
    let dir = tempfile::tempdir().expect("dir");
    let opts = Options {
        dir: dir.path().join("main"),
        copy_to: Some(CopyTo::Dir(dir.path().join("copy"))),
        kind: Kind::Manual,
    };
    let b = backup::take(&t.db, &t.url, &opts, &clock, &Quiet).await.expect("backup");
    customer(&t.db, "After", clock.now_micros()).await;

    assert_eq!((b.status.as_str(), b.kind.as_str()), ("done", "manual"));
    let file = Path::new(&b.path);
    let (size, sha) = backup::sha256_file(file, &Quiet).await.expect("hash");
    assert_eq!((b.size_bytes, b.sha256.as_deref()), (Some(size as i64), Some(sha.as_str())));
    let manifest = backup::read_manifest(file).await.expect("manifest").expect("beside the file");
    assert_eq!((manifest.id.as_str(), manifest.sha256.as_str()), (b.id.as_str(), sha.as_str()));
    let copy = b.copied_to.clone().expect("copied");
    assert_eq!(backup::sha256_file(Path::new(&copy), &Quiet).await.expect("copy").1, sha);
    assert_eq!(backup::list(&t.db, false, 10).await.expect("list"), vec![b.clone()]);
    // Every secret of the database is in them: readable by the service's user alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        for p in [file, Path::new(&copy)] {
            assert_eq!(mode(p), 0o600, "{}", p.display());
            let manifest = std::path::PathBuf::from(format!("{}.json", p.display()));
            assert_eq!(mode(&manifest), 0o600, "{}", manifest.display());
        }
        assert_eq!(mode(&dir.path().join("main")), 0o700, "the directory it made");
    }

    // Restored from the copy into a new database: what was there at the backup, not after.
    let (target, _target_dir) = fresh_url().await;
    let restored =
        backup::restore(Path::new(&copy), &target, &RestoreOptions::default(), &clock, &Quiet).await.expect("restore");
    assert_eq!((restored.backup_id.as_deref(), restored.sha256.as_str()), (Some(b.id.as_str()), sha.as_str()));
    assert_eq!(names(&target).await, vec!["Before"]);
    let db = j1msky_db::Db::connect(&target).await.expect("restored");
    let restores = backup::restores(&db).await.expect("restores");
    assert_eq!(restores.len(), 1);
    assert_eq!((restores[0].backup_started_at, restores[0].reconciled_at), (manifest.started_at, None));
    let own = backup::get(&db, &b.id).await.expect("row").expect("the backup's own row");
    assert_eq!((own.status.as_str(), own.sha256.as_deref()), ("done", Some(sha.as_str())));
    db.close().await;

    // Into a database with tables: refused unless forced.
    let again = backup::restore(file, &target, &RestoreOptions::default(), &clock, &Quiet).await;
    assert!(matches!(again, Err(BackupError::NotEmpty(_))), "{again:?}");
    backup::restore(file, &target, &RestoreOptions { force: true, ..Default::default() }, &clock, &Quiet)
        .await
        .expect("forced");
    assert_eq!(names(&target).await, vec!["Before"]);

    // A byte changed: refused, and the target is left as it was.
    let bad = dir.path().join("bad.bin");
    let mut bytes = std::fs::read(file).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&bad, bytes).expect("write");
    std::fs::copy(format!("{}.json", file.display()), format!("{}.json", bad.display())).expect("manifest");
    let (fresh, _fresh_dir) = fresh_url().await;
    let err = backup::restore(&bad, &fresh, &RestoreOptions::default(), &clock, &Quiet).await.expect_err("corrupt");
    assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&sha) && err.to_string().contains("refusing"), "{err}");
    // Without a manifest the checksum must be given.
    std::fs::remove_file(format!("{}.json", bad.display())).expect("rm");
    let err = backup::restore(&bad, &fresh, &RestoreOptions::default(), &clock, &Quiet).await.expect_err("no sum");
    assert!(matches!(err, BackupError::NoChecksum(_)), "{err}");
    assert!(names_or_none(&fresh).await.is_none(), "nothing was written into the target");
}

/// The customers of a database, or None when it has no tables.
async fn names_or_none(url: &str) -> Option<Vec<String>> {
    let db = j1msky_db::Db::connect(url).await.expect("connect");
    let rows: Result<Vec<(String,)>, _> = sqlx::query_as("SELECT name FROM customers").fetch_all(db.pool()).await;
    db.close().await;
    rows.ok().map(|r| r.into_iter().map(|r| r.0).collect())
}

#[tokio::test]
async fn the_hourly_timer_keeps_each_days_first_as_daily_and_prunes_past_retention() {
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START + 5 * 60_000_000);
    let dir = tempfile::tempdir().expect("dir");
    let s = Schedule {
        db: t.db.clone(),
        url: t.url.clone(),
        clock: Arc::new(clock.clone()),
        dir: dir.path().join("hourly"),
        copy_to: None,
        keep: Retention { keep_hourly: 2, keep_daily: 1 },
    };
    let handlers = backup::timer_handlers(&s);
    // Scheduled at start-up; then four hours of day one, and (nothing running in
    // between) the first hour of day two: the hours missed are not caught up.
    handlers.schedule_recurring(&t.db, clock.now_micros()).await.expect("schedule");
    let mut fired = 0;
    for hour in [0, 1, 2, 3, 24] {
        clock.advance_micros(DAY_START + hour * HOUR + 5 * 60_000_000 - clock.now_micros());
        fired += j1msky_db::timers::run_due_once(&t.db, &handlers, clock.now_micros()).await.expect("fire");
        // A second round in the same hour takes nothing more.
        fired += j1msky_db::timers::run_due_once(&t.db, &handlers, clock.now_micros()).await.expect("again");
    }
    assert_eq!(fired, 5, "one backup an hour");
    let all = backup::list(&t.db, true, 100).await.expect("list");
    let by = |kind: &str, status: &str| all.iter().filter(|b| b.kind == kind && b.status == status).count();
    assert_eq!((by("daily", "done"), by("daily", "pruned")), (1, 1), "day two's first replaced day one's: {all:#?}");
    assert_eq!((by("hourly", "done"), by("hourly", "pruned")), (2, 1), "{all:#?}");
    for b in &all {
        let exists = Path::new(&b.path).exists();
        assert_eq!(exists, b.status == "done", "{} is {} and its file exists: {exists}", b.id, b.status);
    }
    let day_two = all.iter().find(|b| b.started_at >= DAY_START + 24 * HOUR).expect("day two");
    assert_eq!(day_two.kind, "daily");
}

#[tokio::test]
async fn a_failed_backup_is_recorded_and_raises_a_backup_failed_alert() {
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START);
    let dir = tempfile::tempdir().expect("dir");
    // A file where the directory should be: nothing can be written there.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, b"x").expect("file");
    let opts = Options { dir: blocked.clone(), copy_to: None, kind: Kind::Manual };
    let err = backup::take(&t.db, &t.url, &opts, &clock, &Quiet).await.expect_err("cannot write");
    assert!(err.to_string().contains("not-a-dir"), "the error names the place: {err}");
    let rows = backup::list(&t.db, false, 10).await.expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "failed");
    assert!(rows[0].error.as_deref().is_some_and(|e| e.contains("not-a-dir")));
    let alerts = j1msky_audit::alerts::recent(&t.db, 10).await.expect("alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, "backup_failed");
    assert!(alerts[0].message.contains(&rows[0].id), "{}", alerts[0].message);
}

/// A copy that keeps failing (its directory cannot be made) leaves each attempt's local
/// file: a usable backup, kept until a newer one of its kind is done and never more than
/// retention's count of them, so the disk does not fill while the store is down.
#[tokio::test]
async fn the_local_files_of_failed_copies_are_bounded_and_pruned_once_a_backup_succeeds() {
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START + 5 * 60_000_000);
    let dir = tempfile::tempdir().expect("dir");
    let blocked = dir.path().join("copies");
    std::fs::write(&blocked, b"not a directory").expect("file");
    let s = Schedule {
        db: t.db.clone(),
        url: t.url.clone(),
        clock: Arc::new(clock.clone()),
        dir: dir.path().join("local"),
        copy_to: Some(CopyTo::Dir(blocked.clone())),
        keep: Retention { keep_hourly: 2, keep_daily: 1 },
    };
    let files = |all: &[backup::Backup]| all.iter().filter(|b| Path::new(&b.path).exists()).count();
    for hour in 0..4 {
        clock.advance_micros(DAY_START + hour * HOUR + 5 * 60_000_000 - clock.now_micros());
        let err = backup::hourly(&s, clock.now_micros()).await.expect_err("the copy cannot be made");
        assert!(err.to_string().contains("copies"), "{err}");
        let all = backup::list(&t.db, true, 100).await.expect("list");
        // No daily is done, so every attempt of the day is its daily: one file kept.
        assert_eq!(files(&all), 1, "hour {hour}: {all:#?}");
        let newest = &all[0];
        assert_eq!((newest.status.as_str(), newest.kind.as_str()), ("failed", "daily"), "{all:#?}");
        assert!(Path::new(&newest.path).exists(), "the newest attempt's file is kept: {all:#?}");
        assert_eq!(all.iter().filter(|b| b.status == "failed").count(), 1, "older attempts pruned: {all:#?}");
    }
    // The store is back: the next hour's backup is done and the failed one's file goes.
    std::fs::remove_file(&blocked).expect("unblock");
    clock.advance_micros(DAY_START + 4 * HOUR + 5 * 60_000_000 - clock.now_micros());
    backup::hourly(&s, clock.now_micros()).await.expect("backup with its copy");
    let all = backup::list(&t.db, true, 100).await.expect("list");
    assert_eq!(all[0].status, "done", "{all:#?}");
    assert_eq!(files(&all), 1, "only the done backup's file is left: {all:#?}");
    assert!(Path::new(&all[0].path).exists());
    assert!(all.iter().all(|b| b.status != "failed"), "{all:#?}");
    assert!(all.iter().skip(1).all(|b| b.error.is_some()), "the failures keep their reason: {all:#?}");
    let local = std::fs::read_dir(dir.path().join("local")).expect("dir").count();
    assert_eq!(local, 2, "one backup and its manifest on the disk");
}

#[tokio::test]
async fn no_backup_for_hours_raises_one_alert_a_day_unless_the_operator_turned_the_check_off() {
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START);
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    assert_eq!(catalogue.alerts.backup_overdue_hours, 3, "the shipped threshold: three missed hourly backups");
    let ops = j1msky_ops::Ctx {
        db: t.db.clone(),
        catalogue: Arc::new(catalogue.clone()).into(),
        clock: Arc::new(clock.clone()),
    };
    let check = |now: i64| {
        let ops = ops.clone();
        async move { j1msky_ops::notify::spike::check_backups(&ops, now).await.expect("check") }
    };
    let overdue = |db: j1msky_db::Db| async move {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, message FROM alerts WHERE kind = 'backup_overdue' ORDER BY id")
                .fetch_all(db.pool())
                .await
                .expect("alerts");
        rows
    };
    // A new installation: nothing to say before its checks have run for three hours.
    assert!(!check(DAY_START).await);
    let notifier = j1msky_ops::notify::Notifier::new(ops.clone(), "templates".into(), "http://localhost");
    j1msky_ops::timers::handlers(&notifier).schedule_recurring(&t.db, DAY_START).await.expect("seed the checks");
    assert!(!check(DAY_START + 2 * HOUR).await, "two hours in: the first backup may still come");
    assert!(check(DAY_START + 4 * HOUR).await, "four hours without one");
    assert!(!check(DAY_START + 5 * HOUR).await, "once a day");
    let alerts = overdue(t.db.clone()).await;
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0].1.contains("no backup has ever been taken") && alerts[0].1.contains("--backup-dir"),
        "{alerts:?}"
    );

    // A backup at 05:00: fine for three hours, overdue again the next day.
    clock.advance_micros(5 * HOUR);
    let dir = tempfile::tempdir().expect("dir");
    let opts = Options { dir: dir.path().to_path_buf(), copy_to: None, kind: Kind::Manual };
    backup::take(&t.db, &t.url, &opts, &clock, &Quiet).await.expect("backup");
    assert!(!check(DAY_START + 7 * HOUR).await);
    assert!(!check(DAY_START + 20 * HOUR).await, "today's alert was raised already");
    assert!(check(DAY_START + 25 * HOUR).await, "a new day, still no backup since 05:00");
    let alerts = overdue(t.db.clone()).await;
    assert_eq!(alerts.len(), 2);
    assert!(alerts.iter().any(|a| a.1.contains("no backup has finished since 2026-11-25 05:00")), "{alerts:?}");

    // Backed up by other means: the operator turns the check off.
    let mut off = catalogue.clone();
    off.alerts.backup_overdue_hours = 0;
    let ops_off = j1msky_ops::Ctx { catalogue: Arc::new(off).into(), ..ops.clone() };
    assert!(!j1msky_ops::notify::spike::check_backups(&ops_off, DAY_START + 60 * HOUR).await.expect("check"));
    assert_eq!(overdue(t.db.clone()).await.len(), 2);
}

/// A failed attempt whose local file retention pruned is no backup: it keeps its error,
/// and the check for overdue backups does not count it as the newest good one.
#[tokio::test]
async fn a_pruned_failed_attempt_is_not_a_backup_that_finished_well() {
    let t = TestDb::new().await;
    let clock = ManualClock::new(DAY_START);
    let dir = tempfile::tempdir().expect("dir");
    // The copy's place is a file: the local backup is written, its copy fails.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, b"x").expect("file");
    for _ in 0..2 {
        let opts =
            Options { dir: dir.path().join("main"), copy_to: Some(CopyTo::Dir(blocked.clone())), kind: Kind::Hourly };
        backup::take(&t.db, &t.url, &opts, &clock, &Quiet).await.expect_err("the copy cannot be written");
        clock.advance_micros(HOUR);
    }
    let keep = Retention { keep_hourly: 1, keep_daily: 1 };
    let pruned = backup::prune(&t.db, keep, &backup::S3Settings::default()).await.expect("prune");
    assert_eq!(pruned.len(), 1, "the older failure's local file");
    let rows = backup::list(&t.db, true, 10).await.expect("list");
    assert!(rows.iter().any(|b| b.status == "pruned" && b.error.is_some()), "{rows:?}");
    assert_eq!(backup::newest_done(&t.db).await.expect("newest"), None, "no backup finished well");
}
