//! Hourly state events (`hourly::emit`): calls of one process that want the same mark at
//! once leave the database to the first of them, instead of each opening a transaction and
//! queueing on the same lock.

// A test stops at the first surprise: panicking shortcuts and untracked tasks are fine
// here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::time::Duration;

use j1msky_core::events::CustomerActive;
use j1msky_db::testing::TestDb;
use j1msky_db::{hourly, Backend};

#[tokio::test]
async fn while_one_call_asks_the_database_about_a_mark_the_others_go_on_without_it() {
    let t = TestDb::new().await;
    let db = t.db.clone();
    let customer = format!("cus_hourly_{}", std::process::id());
    let now = 1_800_000_000_000_000;
    // Hold what asking waits for: the write lock (SQLite) or the mark's own lock (PostgreSQL).
    let mut blocker = db.begin().await.unwrap();
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(1785294195, hashtext($1 || '/' || $2 || '/' || $3))")
            .bind("customer.active")
            .bind(&customer)
            .bind("")
            .execute(&mut *blocker)
            .await
            .unwrap();
    }
    let call = || {
        let (db, customer) = (db.clone(), customer.clone());
        tokio::spawn(async move {
            let payload = CustomerActive { source: "api_key".into() };
            hourly::emit(&db, &customer, None, &payload, now).await
        })
    };
    let (mut a, mut b) = (call(), call());
    // One of them asks and waits for the lock; the other goes on at once, emitting nothing.
    // (Without the rule both would wait until the lock is let go: the deadline catches it.)
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            r = &mut a => (r, true),
            r = &mut b => (r, false),
        }
    })
    .await
    .expect("a call went on while the other asked the database");
    let (went_on, a_first) = first;
    assert!(!went_on.unwrap().unwrap(), "the call that went on emitted nothing");
    blocker.rollback().await.unwrap();
    let asked = if a_first { b.await } else { a.await };
    assert!(asked.unwrap().unwrap(), "the call that asked emitted the mark");
    let (events,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM events WHERE kind = 'customer.active' AND customer_id = $1")
            .bind(&customer)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(events, 1);
    // Remembered: a later call within the hour goes on without asking.
    let payload = CustomerActive { source: "task".into() };
    assert!(!hourly::emit(&db, &customer, None, &payload, now + 1).await.unwrap());
}
