//! The outbox's ordering rule under concurrent writers (issue 16): on PostgreSQL writers no
//! longer queue on one lock, so events may commit out of number order; a reader following
//! its cursor must still see every committed event exactly once, in number order, and must
//! never wait for the writers of another database on the same server.

// A test stops at the first surprise: panicking shortcuts and untracked tasks are fine
// here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use j1msky_core::events::Kind;
use j1msky_db::testing::TestDb;
use j1msky_db::{outbox, Backend};
use serde_json::json;

const WRITERS: u64 = 8;
const PER_WRITER: u64 = 40;

/// A small deterministic generator (xorshift): the interleavings vary per writer and
/// per transaction without a dependency for it.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_commits_and_rollbacks_are_read_exactly_once_in_number_order() {
    let t = TestDb::new().await;
    let committed = Arc::new(Mutex::new(HashSet::new()));
    let done = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (db, committed) = (t.db.clone(), committed.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (w + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
            for i in 0..PER_WRITER {
                let mut tx = db.begin().await.expect("tx");
                let payload = json!({"w": w, "i": i});
                let id = j1msky_db::testing::emit_raw(&mut tx, db.backend(), Kind::TaskStarted, None, &payload, 1)
                    .await
                    .expect("emit");
                // Hold the number for a while (a later writer may draw and commit a
                // higher one meanwhile), then commit or roll back.
                let r = next(&mut rng);
                if !r.is_multiple_of(3) {
                    tokio::time::sleep(Duration::from_micros(r % 4_000)).await;
                }
                if r.is_multiple_of(5) {
                    tx.rollback().await.expect("rollback");
                } else {
                    tx.commit().await.expect("commit");
                    committed.lock().unwrap().insert(id);
                }
            }
        }));
    }

    let reader = {
        let (db, done) = (t.db.clone(), done.clone());
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (0_i64, Vec::<String>::new());
            loop {
                // Read whether the writers were done before this round: the round after
                // they finished drains whatever is left.
                let finished = done.load(Ordering::SeqCst);
                let batch = outbox::after(&db, cursor, 25).await.expect("after");
                for e in &batch {
                    assert!(e.seq > cursor, "event {} read after the cursor passed it ({cursor})", e.seq);
                    cursor = e.seq;
                    seen.push(e.id.clone());
                }
                if batch.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("reader");

    let committed = committed.lock().unwrap().clone();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an event was read twice");
    let missed: Vec<&String> = committed.difference(&unique).collect();
    assert!(missed.is_empty(), "{} committed events were passed over by the reader: {missed:?}", missed.len());
    let phantom: Vec<&String> = unique.difference(&committed).collect();
    assert!(phantom.is_empty(), "rolled-back events were read: {phantom:?}");
    assert!(committed.len() > (WRITERS * PER_WRITER / 2) as usize, "most transactions commit");
}

#[tokio::test]
async fn a_reader_never_waits_for_the_writers_of_another_database() {
    let here = TestDb::new().await;
    if here.db.backend() != Backend::Postgres {
        return; // One SQLite file is one database: there is no other to wait for.
    }
    // Another database on the same server has a writer in flight for as long as it likes.
    let elsewhere = TestDb::new().await;
    let mut open = elsewhere.db.begin().await.expect("tx elsewhere");
    j1msky_db::testing::emit_raw(&mut open, Backend::Postgres, Kind::TaskStarted, None, &json!({}), 1)
        .await
        .expect("emit elsewhere");

    let mut tx = here.db.begin().await.expect("tx");
    let id = j1msky_db::testing::emit_raw(&mut tx, Backend::Postgres, Kind::TaskSucceeded, None, &json!({}), 2)
        .await
        .expect("emit");
    tx.commit().await.expect("commit");

    // Were the reader held back by the other database's writer, it would give up after
    // its lock timeout and report nothing new.
    let read = outbox::after(&here.db, 0, 10).await.expect("after");
    assert_eq!(read.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);

    // In its own database the same open writer does hold readers back (its number is
    // lower than one committed after it), and is read once it commits.
    let mut tx = elsewhere.db.begin().await.expect("tx");
    j1msky_db::testing::emit_raw(&mut tx, Backend::Postgres, Kind::TaskSucceeded, None, &json!({}), 3)
        .await
        .expect("emit later");
    tx.commit().await.expect("commit later");
    assert!(outbox::after(&elsewhere.db, 0, 10).await.expect("after").is_empty(), "would pass over the open one");
    open.commit().await.expect("commit elsewhere");
    assert_eq!(outbox::after(&elsewhere.db, 0, 10).await.expect("after").len(), 2);
}
