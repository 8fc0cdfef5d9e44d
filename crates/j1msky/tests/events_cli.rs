//! `j1msky events …` as an operator uses it: real processes on a real database
//! (SQLite, or PostgreSQL when the run asks for it).
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use j1msky_accounts::reactions::{self, SUBSCRIPTION_STATE, SUBSCRIPTION_STATE_KIND};
use j1msky_core::events::Kind;
use j1msky_core::ManualClock;
use j1msky_db::{consumers, outbox, Db};
use serde_json::{json, Value};

use crate::common;

use common::Cli;

async fn emit(db: &Db, kind: Kind, customer: Option<&str>, payload: Value, now: i64) -> i64 {
    let mut tx = db.begin().await.expect("begin");
    j1msky_db::testing::emit_raw(&mut tx, db.backend(), kind, customer, &payload, now).await.expect("emit");
    tx.commit().await.expect("commit");
    outbox::recent(db, 1).await.expect("recent")[0].seq
}

#[tokio::test]
async fn the_operator_tails_events_sees_consumers_retries_a_parked_event_and_replays() {
    let cli = Cli::new().await;
    let out = cli.run(&["customer", "add", "--name", "Tail Co", "--email", "t@tail.test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = Db::open(&cli.url).await.expect("db");
    let clock = ManualClock::new(1_795_000_000_000_000);
    let cid = j1msky_accounts::customers::list(&db, None, 10).await.expect("customers")[0].id.clone();
    for i in 0..3 {
        emit(&db, Kind::TaskStarted, None, json!({"i": i}), 1).await;
    }

    let all = cli.json(&["events", "tail"]);
    let kinds: Vec<&str> = all.as_array().expect("array").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.len() >= 4 && kinds.contains(&"task.started"), "{kinds:?}");
    let pings = cli.json(&["events", "tail", "--kind", "task.started", "--limit", "2"]);
    let pings = pings.as_array().expect("array");
    assert_eq!(pings.len(), 2);
    assert!(pings.iter().all(|e| e["kind"] == "task.started"));
    assert!(pings[0]["seq"].as_i64() < pings[1]["seq"].as_i64(), "oldest first: {pings:?}");
    assert_eq!(pings[1]["payload"]["i"], 2, "the latest two");

    // A state accounts cannot apply is parked by its (blocking) consumer.
    let bad = json!({"plan": null, "stage": "royalty", "billing_status": null, "at": 1});
    let seq = emit(&db, SUBSCRIPTION_STATE_KIND, Some(&cid), bad, 1).await;
    for _ in 0..consumers::DEFAULT_MAX_ATTEMPTS {
        reactions::catch_up(&db, &clock).await.expect("consumers");
        clock.advance_secs(3_600);
    }
    let listed = cli.json(&["events", "consumers"]);
    let c = &listed["consumers"][0];
    assert_eq!(
        (c["consumer"].as_str(), c["cursor"].as_i64(), c["lag"].as_i64()),
        (Some(SUBSCRIPTION_STATE), Some(seq - 1), Some(1))
    );
    assert_eq!(listed["failures"][0]["seq"].as_i64(), Some(seq));
    assert_eq!(listed["failures"][0]["parked"], true);

    let out = cli.run(&["events", "retry", "--consumer", SUBSCRIPTION_STATE, "--seq", &seq.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!consumers::failures(&db, false, 10).await.expect("failures")[0].parked);
    let out = cli.run(&["events", "retry", "--consumer", SUBSCRIPTION_STATE, "--seq", &seq.to_string()]);
    assert_eq!(out.status.code(), Some(2), "nothing parked to retry");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no parked event"));

    let replayed = cli.json(&["events", "replay", "--consumer", SUBSCRIPTION_STATE, "--from", "2"]);
    assert_eq!(replayed["cursor_was"].as_i64(), Some(seq - 1));
    assert_eq!(consumers::status(&db).await.expect("status")[0].cursor, 1);
    let out = cli.run(&["events", "replay", "--consumer", "nobody", "--from", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
}

#[tokio::test]
async fn tail_follow_prints_events_as_they_are_written() {
    let cli = Cli::new().await;
    let db = Db::open(&cli.url).await.expect("db");
    // One written before: shown first, once.
    emit(&db, Kind::TaskCancelled, None, json!({"n": 6}), 1).await;
    let mut child = cli
        .command(&["--json", "events", "tail", "--follow", "--kind", "task.cancelled"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    emit(&db, Kind::TaskRetried, None, json!({}), 1).await;
    emit(&db, Kind::TaskCancelled, None, json!({"n": 7}), 1).await;
    // The events are written while the command starts: whether it reads them as the latest
    // or follows them, each is printed once, in order.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("a followed event within a minute");
        let event: Value = serde_json::from_str(&line).expect("one JSON event per line");
        seen.push((event["kind"].as_str().map(str::to_string), event["payload"]["n"].as_i64()));
    }
    // Nothing more (a second copy of either would arrive within the follow interval).
    let extra = rx.recv_timeout(Duration::from_millis(2_500)).ok();
    let _ = child.kill();
    let _ = child.wait();
    let cancelled = |n| (Some("task.cancelled".to_string()), Some(n));
    assert_eq!(seen, vec![cancelled(6), cancelled(7)]);
    assert_eq!(extra, None, "an event printed twice");
}
