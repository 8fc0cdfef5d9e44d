//! Leased jobs and the event outbox on a real database (SQLite, or PostgreSQL when the
//! run asks for it), including two processes claiming from one PostgreSQL database.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::HashSet;
use std::process::Command;

use j1msky_core::events::{Kind, TaskCancelled, TaskStarted, Typed};
use j1msky_db::testing::{requested_backend, TestDb};
use j1msky_db::{jobs, outbox, Backend, Db};
use serde_json::json;

const SEC: i64 = 1_000_000;
const LEASE: i64 = 30 * SEC;
const CHILD_URL: &str = "J1MSKY_TEST_CHILD_CLAIMER_URL";

async fn enqueue(db: &Db, queue: &str, n: i64, priority: i64, run_at: i64, key: Option<&str>) -> String {
    let mut conn = db.pool().acquire().await.expect("conn");
    let payload = json!({"n": n});
    let job = jobs::NewJob { queue, payload: &payload, priority, run_at, max_attempts: 3, idempotency_key: key };
    jobs::enqueue(&mut conn, &job, 0).await.expect("enqueue")
}

#[tokio::test]
async fn a_live_lease_is_exclusive_and_an_expired_one_is_taken_over_with_fencing() {
    let t = TestDb::new().await;
    let id = enqueue(&t.db, "q", 1, 0, 0, None).await;
    let mut first = jobs::claim(&t.db, "q", "worker-a", SEC, LEASE).await.expect("claim").expect("a job");
    assert_eq!((first.job_id.as_str(), first.attempt), (id.as_str(), 1));
    assert_eq!(first.payload, json!({"n": 1}));
    assert!(jobs::claim(&t.db, "q", "worker-b", 2 * SEC, LEASE).await.expect("claim").is_none(), "lease is live");
    assert!(jobs::heartbeat(&t.db, &mut first, 10 * SEC, LEASE).await.expect("heartbeat"));
    assert!(
        jobs::claim(&t.db, "q", "worker-b", 35 * SEC, LEASE).await.expect("claim").is_none(),
        "heartbeat extended it"
    );

    // worker-a goes silent; after the lease runs out worker-b takes the job over.
    let second = jobs::claim(&t.db, "q", "worker-b", 41 * SEC, LEASE).await.expect("claim").expect("expired lease");
    assert_eq!((second.job_id.as_str(), second.attempt, second.owner.as_str()), (id.as_str(), 2, "worker-b"));
    // The old owner is fenced off.
    assert!(!jobs::heartbeat(&t.db, &mut first, 42 * SEC, LEASE).await.expect("heartbeat"));
    let mut conn = t.db.pool().acquire().await.expect("conn");
    assert!(!jobs::complete(&mut conn, &first, 42 * SEC).await.expect("complete"));
    assert!(jobs::complete(&mut conn, &second, 43 * SEC).await.expect("complete"));
    assert_eq!(jobs::state(&t.db, &id).await.expect("state"), Some(("done".into(), 2)));
    assert!(jobs::claim(&t.db, "q", "worker-c", 1000 * SEC, LEASE).await.expect("claim").is_none(), "done is final");
}

#[tokio::test]
async fn released_jobs_wait_for_their_retry_time_and_fail_after_max_attempts() {
    let t = TestDb::new().await;
    let id = enqueue(&t.db, "q", 1, 0, 0, None).await;
    for attempt in 1..=3 {
        let now = attempt * 100 * SEC;
        let lease = jobs::claim(&t.db, "q", "w", now, LEASE).await.expect("claim").expect("job");
        assert_eq!(lease.attempt, attempt);
        assert!(jobs::release(&t.db, &lease, "boom", now + 50 * SEC, now).await.expect("release"));
        if attempt < 3 {
            assert!(
                jobs::claim(&t.db, "q", "w", now + 49 * SEC, LEASE).await.expect("claim").is_none(),
                "not before retry_at"
            );
        }
    }
    assert_eq!(jobs::state(&t.db, &id).await.expect("state"), Some(("failed".into(), 3)));
    assert!(jobs::claim(&t.db, "q", "w", 10_000 * SEC, LEASE).await.expect("claim").is_none());

    // A job whose worker dies on every attempt ends failed too, not claimed forever.
    let id = enqueue(&t.db, "crashy", 2, 0, 0, None).await;
    let mut now = 0;
    for _ in 0..3 {
        now += 100 * SEC;
        assert!(jobs::claim(&t.db, "crashy", "w", now, LEASE).await.expect("claim").is_some());
    }
    now += 100 * SEC;
    assert!(jobs::claim(&t.db, "crashy", "w", now, LEASE).await.expect("claim").is_none(), "attempts used up");
    assert_eq!(jobs::fail_exhausted(&t.db, now).await.expect("sweep"), 1);
    assert_eq!(jobs::state(&t.db, &id).await.expect("state"), Some(("failed".into(), 3)));
}

#[tokio::test]
async fn order_is_priority_then_run_time_queues_are_separate_and_keys_deduplicate() {
    let t = TestDb::new().await;
    let late = enqueue(&t.db, "q", 1, 0, 20 * SEC, None).await;
    let early = enqueue(&t.db, "q", 2, 0, 10 * SEC, None).await;
    let urgent = enqueue(&t.db, "q", 3, 5, 15 * SEC, None).await;
    let future = enqueue(&t.db, "q", 4, 9, 500 * SEC, None).await;
    let other = enqueue(&t.db, "other", 5, 0, 0, None).await;
    let a = enqueue(&t.db, "q", 6, 0, 30 * SEC, Some("charge-1")).await;
    let b = enqueue(&t.db, "q", 7, 0, 30 * SEC, Some("charge-1")).await;
    assert_eq!(a, b, "same idempotency key, same job");

    let mut order = Vec::new();
    while let Some(l) = jobs::claim(&t.db, "q", "w", 100 * SEC, LEASE).await.expect("claim") {
        order.push(l.job_id);
    }
    assert_eq!(order, [urgent, early, late, a], "priority first, then run_at; the future job waits");
    assert!(!order.contains(&future) && !order.contains(&other));
    let l = jobs::claim(&t.db, "other", "w", 100 * SEC, LEASE).await.expect("claim").expect("other queue");
    assert_eq!(l.job_id, other);
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_job() {
    let t = TestDb::new().await;
    let mut ids = HashSet::new();
    for n in 0..60 {
        ids.insert(enqueue(&t.db, "q", n, 0, 0, None).await);
    }
    let mut handles = Vec::new();
    for w in 0..8 {
        let db = t.db.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(l) = jobs::claim(&db, "q", &format!("w{w}"), SEC, LEASE).await.expect("claim") {
                mine.push(l.job_id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for h in handles {
        claimed.extend(h.await.expect("join"));
    }
    let unique: HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), unique.len(), "a job was claimed twice");
    assert_eq!(unique, ids, "every job was claimed");
}

/// Child mode of the two-process test: claims until the queue is empty, printing ids.
#[tokio::test]
async fn child_claimer() {
    let Ok(url) = std::env::var(CHILD_URL) else { return };
    let db = Db::connect(&url).await.expect("child connects");
    let me = format!("pid-{}", std::process::id());
    while let Some(l) = jobs::claim(&db, "shared", &me, SEC, LEASE).await.expect("claim") {
        println!("CLAIMED {}", l.job_id);
        // Hold each job a moment, as a worker would, so both processes take part.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn two_processes_claim_from_one_postgres_database_without_overlap() {
    if requested_backend() != Backend::Postgres {
        println!("skipped: needs PostgreSQL (J1MSKY_TEST_BACKEND=postgres)");
        return;
    }
    let t = TestDb::new().await;
    let mut ids = HashSet::new();
    for n in 0..200 {
        let mut conn = t.db.pool().acquire().await.expect("conn");
        let payload = json!({"n": n});
        let job = jobs::NewJob {
            queue: "shared",
            payload: &payload,
            priority: 0,
            run_at: 0,
            max_attempts: 3,
            idempotency_key: None,
        };
        ids.insert(jobs::enqueue(&mut conn, &job, 0).await.expect("enqueue"));
    }
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "lease_and_outbox::child_claimer", "--nocapture", "--test-threads", "1"])
                .env(CHILD_URL, &t.url)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut per_child = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("child output");
        assert!(out.status.success(), "child failed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // libtest may print its own "test child_claimer ... " in front of the first line.
        let mine: Vec<String> =
            text.lines().filter_map(|l| l.split_once("CLAIMED ").map(|(_, id)| id.trim().to_string())).collect();
        per_child.push(mine);
    }
    let all: Vec<&String> = per_child.iter().flatten().collect();
    let unique: HashSet<String> = all.iter().map(|s| s.to_string()).collect();
    assert_eq!(all.len(), unique.len(), "two processes claimed the same job");
    assert_eq!(unique, ids, "every job claimed");
    assert!(
        per_child.iter().all(|c| !c.is_empty()),
        "both processes claimed: {:?}",
        per_child.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn outbox_events_follow_their_transaction_and_cursors_only_move_forward() {
    let t = TestDb::new().await;
    let b = t.db.backend();
    let mut tx = t.db.begin().await.expect("tx");
    j1msky_db::testing::emit_raw(&mut tx, b, Kind::LedgerBacklog, None, &json!({}), 1).await.expect("emit");
    tx.rollback().await.expect("rollback");
    for kind in [Kind::TaskSubmitted, Kind::TaskStarted, Kind::TaskSucceeded] {
        let mut tx = t.db.begin().await.expect("tx");
        j1msky_db::testing::emit_raw(&mut tx, b, kind, Some("cus_x"), &json!({"k": kind.as_str()}), 2)
            .await
            .expect("emit");
        tx.commit().await.expect("commit");
    }
    let batch = outbox::next_batch(&t.db, "mailer", 10).await.expect("batch");
    let kinds: Vec<&str> = batch.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["task.submitted", "task.started", "task.succeeded"],
        "rolled-back events never appear; order is kept"
    );
    assert!(batch.windows(2).all(|w| w[0].seq < w[1].seq));

    let mut conn = t.db.pool().acquire().await.expect("conn");
    outbox::advance(&mut conn, "mailer", batch[1].seq, 3).await.expect("advance");
    outbox::advance(&mut conn, "mailer", batch[0].seq, 4).await.expect("advance back is ignored");
    assert_eq!(outbox::cursor(&mut conn, "mailer").await.expect("cursor"), batch[1].seq);
    let rest = outbox::next_batch(&t.db, "mailer", 10).await.expect("batch");
    assert_eq!(rest.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["task.succeeded"]);
    assert_eq!(outbox::next_batch(&t.db, "metrics", 10).await.expect("batch").len(), 3, "cursors are per consumer");
}

#[tokio::test]
async fn a_later_commit_is_never_skipped_by_a_consumer() {
    // Transaction A emits first but commits last. A consumer that reads between the two
    // commits must not advance past A's event without having seen it.
    let t = TestDb::new().await;
    let b = t.db.backend();
    let mut tx_a = t.db.begin().await.expect("tx a");
    j1msky_db::testing::emit_raw(&mut tx_a, b, Kind::TaskStarted, None, &json!({}), 1).await.expect("emit a");
    let db = t.db.clone();
    let writer_b = tokio::spawn(async move {
        let mut tx_b = db.begin().await.expect("tx b");
        j1msky_db::testing::emit_raw(&mut tx_b, b, Kind::TaskSucceeded, None, &json!({}), 2).await.expect("emit b");
        tx_b.commit().await.expect("commit b");
    });
    // Whatever B does meanwhile, the consumer sees nothing it could skip A with.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let seen_early = outbox::next_batch(&t.db, "c", 10).await.expect("batch");
    assert!(
        seen_early.iter().all(|e| e.kind != "task.succeeded"),
        "b is visible before a committed: a would be skipped"
    );
    tx_a.commit().await.expect("commit a");
    writer_b.await.expect("join");
    let all = outbox::next_batch(&t.db, "c", 10).await.expect("batch");
    assert_eq!(all.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["task.started", "task.succeeded"]);
}

#[tokio::test]
async fn an_unknown_or_unreadable_stored_event_is_kept_and_skipped_by_decode() {
    let t = TestDb::new().await;
    let b = t.db.backend();
    // Rows as an older or newer build may have left them: a kind this build does not
    // know, and a payload that is not JSON.
    for (id, kind, payload) in [("evt_old1", "legacy.kind", "{\"x\":1}"), ("evt_old2", "task.succeeded", "not json")] {
        sqlx::query("INSERT INTO events (id, kind, customer_id, payload, created_at) VALUES ($1, $2, NULL, $3, 1)")
            .bind(id)
            .bind(kind)
            .bind(payload)
            .execute(t.db.pool())
            .await
            .expect("raw insert");
    }
    let mut tx = t.db.begin().await.expect("tx");
    j1msky_db::testing::emit_raw(&mut tx, b, Kind::TaskSucceeded, Some("cus_x"), &json!({"task": "t1"}), 2)
        .await
        .expect("emit");
    tx.commit().await.expect("commit");

    let batch = outbox::next_batch(&t.db, "reader", 10).await.expect("reading past unknown rows does not fail");
    assert_eq!(batch.len(), 3, "unknown rows are kept");
    assert_eq!(batch[0].decode(), None, "unknown kind is skipped");
    assert_eq!(batch[1].decode(), None, "unreadable payload is skipped");
    let known = batch[2].decode().expect("a current event decodes");
    assert_eq!((known.kind, known.version), (Kind::TaskSucceeded, 1));
    assert_eq!(known.payload, json!({"task": "t1", "v": 1}), "stored with its version");
}

#[tokio::test]
async fn typed_events_are_stored_with_their_kind_and_read_back_as_their_struct() {
    let t = TestDb::new().await;
    let b = t.db.backend();
    sqlx::query("INSERT INTO events (id, kind, customer_id, payload, created_at) VALUES ('evt_legacy', 'legacy.kind', NULL, '{}', 1)")
        .execute(t.db.pool())
        .await
        .expect("raw insert");
    let started = TaskStarted { task_id: "tsk_1".into(), attempt: 2, worker: "w1".into() };
    let mut tx = t.db.begin().await.expect("tx");
    outbox::emit_typed(&mut tx, b, started.clone(), Some("cus_x"), 3).await.expect("emit typed");
    // A row written before versioning, of a known kind: no `v`.
    sqlx::query(
        "INSERT INTO events (id, kind, customer_id, payload, created_at)
         VALUES ('evt_old', 'task.cancelled', 'cus_x', '{\"task_id\":\"tsk_1\",\"by\":\"usr_1\"}', 4)",
    )
    .execute(&mut *tx)
    .await
    .expect("old row");
    tx.commit().await.expect("commit");

    let batch = outbox::next_batch(&t.db, "typed_reader", 10).await.expect("batch");
    assert_eq!(batch.len(), 3);
    assert_eq!(batch[0].typed(), None, "an unknown kind is kept and skipped, not an error");
    assert_eq!(batch[1].kind, "task.started");
    assert_eq!(batch[1].payload, json!({"task_id": "tsk_1", "attempt": 2, "worker": "w1", "v": 1}));
    assert_eq!(batch[1].typed(), Some(Typed::TaskStarted(started)));
    assert_eq!(
        batch[2].typed(),
        Some(Typed::TaskCancelled(TaskCancelled { task_id: "tsk_1".into(), by: "usr_1".into() })),
        "an old row without `v` reads as version 1"
    );
}
