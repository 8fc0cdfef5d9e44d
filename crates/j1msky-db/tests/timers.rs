//! Durable timers on a real database (SQLite, or PostgreSQL when the run asks for it):
//! one timer per key, fired once by two runners on separate pools, kept across a
//! restart, retried with back-off then failed for good, recurring without doubles.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use j1msky_db::testing::TestDb;
use j1msky_db::timers::{self, Handlers, NewTimer, Occurrence, Recurrence};
use j1msky_db::Db;
use serde_json::json;

const SEC: i64 = 1_000_000;
const T0: i64 = 1_800_000_000 * SEC;

async fn schedule(db: &Db, kind: &str, key: &str, run_at: i64, max_attempts: i64) -> String {
    let payload = json!({"key": key});
    let timer = NewTimer { kind, key, payload: &payload, run_at, max_attempts };
    timers::schedule_on(db, &timer, T0).await.expect("schedule")
}

/// A handler that counts how often each key fired.
fn counting(kind: &str) -> (Handlers, Arc<Mutex<HashMap<String, usize>>>) {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s = seen.clone();
    let handlers = Handlers::new().on(kind, move |fired| {
        let s = s.clone();
        async move {
            *s.lock().expect("lock").entry(fired.key.clone()).or_insert(0) += 1;
            tokio::task::yield_now().await;
            Ok(())
        }
    });
    (handlers, seen)
}

#[tokio::test]
async fn scheduling_the_same_key_twice_is_one_timer_that_fires_once_at_its_time() {
    let t = TestDb::new().await;
    let a = schedule(&t.db, "remind", "cus_1", T0 + 60 * SEC, 3).await;
    let b = schedule(&t.db, "remind", "cus_1", T0 + 999 * SEC, 3).await;
    assert_eq!(a, b, "the second schedule is the same timer");
    let other = schedule(&t.db, "other", "cus_1", T0, 3).await;
    assert_ne!(a, other, "keys are per kind");

    let (handlers, seen) = counting("remind");
    assert_eq!(timers::run_due_once(&t.db, &handlers, T0 + 59 * SEC).await.expect("run"), 0, "not due yet");
    assert_eq!(timers::run_due_once(&t.db, &handlers, T0 + 60 * SEC).await.expect("run"), 1);
    assert_eq!(timers::run_due_once(&t.db, &handlers, T0 + 9999 * SEC).await.expect("run"), 0, "fired once");
    assert_eq!(seen.lock().expect("lock").get("cus_1"), Some(&1));
    let state = timers::find(&t.db, "remind", "cus_1").await.expect("find").expect("timer");
    assert_eq!((state.state.as_str(), state.attempts, state.run_at), ("done", 1, T0 + 60 * SEC));
    assert_eq!(timers::find(&t.db, "other", "cus_1").await.expect("find").expect("timer").state, "ready");
    // Scheduling a done key again does not bring it back.
    schedule(&t.db, "remind", "cus_1", T0, 3).await;
    assert_eq!(timers::run_due_once(&t.db, &handlers, T0 + 99_999 * SEC).await.expect("run"), 0);
}

#[tokio::test]
async fn two_runners_on_separate_pools_fire_each_timer_once() {
    let t = TestDb::new().await;
    let second = Db::open(&t.url).await.expect("second pool");
    for n in 0..30 {
        schedule(&t.db, "ping", &format!("k{n}"), T0 + n * SEC, 3).await;
    }
    let (handlers, seen) = counting("ping");
    let now = T0 + 100 * SEC;
    let (a, b) =
        tokio::join!(timers::run_due_once(&t.db, &handlers, now), timers::run_due_once(&second, &handlers, now));
    assert_eq!(a.expect("first") + b.expect("second"), 30);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 30);
    assert!(seen.values().all(|n| *n == 1), "each fired once: {seen:?}");
}

#[tokio::test]
async fn a_timer_survives_a_restart() {
    let t = TestDb::new().await;
    let first = Db::open(&t.url).await.expect("first process");
    schedule(&first, "wake", "later", T0 + 3600 * SEC, 3).await;
    let (handlers, seen) = counting("wake");
    assert_eq!(timers::run_due_once(&first, &handlers, T0).await.expect("run"), 0);
    first.close().await;

    let restarted = Db::open(&t.url).await.expect("restarted process");
    assert_eq!(timers::run_due_once(&restarted, &handlers, T0 + 3600 * SEC).await.expect("run"), 1);
    assert_eq!(seen.lock().expect("lock").get("later"), Some(&1));
}

#[tokio::test]
async fn a_failing_handler_is_retried_with_back_off_then_failed_for_good() {
    let t = TestDb::new().await;
    schedule(&t.db, "flaky", "job", T0, 3).await;
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let handlers = Handlers::new().on("flaky", move |fired| {
        let c = c.clone();
        async move {
            *c.lock().expect("lock") += 1;
            Err(format!("refused on attempt {}", fired.attempt))
        }
    });
    let mut now = T0;
    for attempt in 1..=3 {
        assert_eq!(timers::run_due_once(&t.db, &handlers, now).await.expect("run"), 0);
        assert_eq!(*calls.lock().expect("lock"), attempt);
        let state = timers::find(&t.db, "flaky", "job").await.expect("find").expect("timer");
        assert_eq!(state.last_error.as_deref(), Some(format!("refused on attempt {attempt}").as_str()));
        if attempt < 3 {
            assert_eq!(state.state, "ready");
            let retry_at = now + timers::backoff(attempt);
            assert_eq!(state.run_at, retry_at);
            timers::run_due_once(&t.db, &handlers, retry_at - 1).await.expect("run");
            assert_eq!(*calls.lock().expect("lock"), attempt, "not before its back-off");
            now = retry_at;
        } else {
            assert_eq!((state.state.as_str(), state.attempts), ("failed", 3));
        }
    }
    assert_eq!(timers::failed(&t.db, "flaky").await.expect("failed"), vec!["job".to_string()]);
    timers::run_due_once(&t.db, &handlers, now + 1_000_000 * SEC).await.expect("run");
    assert_eq!(*calls.lock().expect("lock"), 3, "failed is final");
}

fn minute(t: i64) -> Occurrence {
    let start = t.div_euclid(60 * SEC) * 60 * SEC;
    Occurrence { key: format!("{}", start / SEC), run_at: start }
}

fn next_minute(_due: i64, now: i64) -> Occurrence {
    minute(now + 60 * SEC)
}

#[tokio::test]
async fn a_recurring_timer_runs_each_occurrence_once_with_two_runners_and_a_restart() {
    let t = TestDb::new().await;
    let second = Db::open(&t.url).await.expect("second pool");
    let every = Recurrence { current: minute, next: next_minute, max_attempts: 3 };
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s = seen.clone();
    let handlers = Handlers::new().recurring("tick", every, move |fired| {
        let s = s.clone();
        async move {
            *s.lock().expect("lock").entry(fired.key.clone()).or_insert(0) += 1;
            Ok(())
        }
    });
    handlers.schedule_recurring(&t.db, T0).await.expect("seed");
    handlers.schedule_recurring(&second, T0 + SEC).await.expect("seed again, same minute");
    for m in 0..5 {
        let now = T0 + m * 60 * SEC + 5 * SEC;
        let (a, b) =
            tokio::join!(timers::run_due_once(&t.db, &handlers, now), timers::run_due_once(&second, &handlers, now));
        assert_eq!(a.expect("a") + b.expect("b"), 1, "minute {m}");
        // A restart in the middle of the minute seeds what is already there.
        handlers.schedule_recurring(&second, now).await.expect("seed after restart");
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let upcoming = minute(T0 + 5 * 60 * SEC);
    let state = timers::find(&t.db, "tick", &upcoming.key).await.expect("find").expect("next occurrence");
    assert_eq!((state.state.as_str(), state.run_at), ("ready", upcoming.run_at));
}

#[tokio::test]
async fn a_handler_completing_in_its_own_transaction_is_not_completed_twice() {
    let t = TestDb::new().await;
    schedule(&t.db, "write", "once", T0, 3).await;
    let db = t.db.clone();
    let handlers = Handlers::new().on("write", move |fired| {
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.map_err(|e| e.to_string())?;
            sqlx::query("INSERT INTO settings (key, value, updated_at, updated_by) VALUES ($1, 'x', $2, 'timer')")
                .bind(format!("fired.{}", fired.key))
                .bind(fired.now)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            if fired.complete(&mut tx).await.map_err(|e| e.to_string())? {
                tx.commit().await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    });
    assert_eq!(timers::run_due_once(&t.db, &handlers, T0).await.expect("run"), 1);
    let state = timers::find(&t.db, "write", "once").await.expect("find").expect("timer");
    assert_eq!((state.state.as_str(), state.attempts), ("done", 1));
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM settings WHERE key = 'fired.once'")
        .fetch_one(t.db.pool())
        .await
        .expect("count");
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_runner_fires_timers_as_its_clock_reaches_them_until_stopped() {
    let t = TestDb::new().await;
    schedule(&t.db, "ping", "soon", T0 + 60 * SEC, 3).await;
    schedule(&t.db, "ping", "much-later", T0 + 86_400 * SEC, 3).await;
    let (handlers, seen) = counting("ping");
    let clock = j1msky_core::ManualClock::new(T0);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = tokio::spawn(timers::run(
        t.db.clone(),
        handlers.poll_every(std::time::Duration::from_millis(5)),
        Arc::new(clock.clone()),
        stopped,
    ));
    clock.advance_secs(61);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.lock().expect("lock").get("soon").is_none() {
        assert!(std::time::Instant::now() < deadline, "the due timer never fired");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.send(true).expect("stop");
    runner.await.expect("the runner ends when stopped");
    assert_eq!(seen.lock().expect("lock").get("much-later"), None, "not due");
    assert_eq!(timers::find(&t.db, "ping", "much-later").await.expect("find").expect("timer").state, "ready");
}

#[tokio::test]
async fn pruning_removes_only_old_done_timers_of_the_kind() {
    let t = TestDb::new().await;
    for key in ["old", "recent"] {
        schedule(&t.db, "tick", key, T0, 3).await;
    }
    schedule(&t.db, "tick", "pending", T0 + 3600 * SEC, 3).await;
    schedule(&t.db, "keep", "old", T0, 3).await;
    let (handlers, _) = counting("tick");
    let handlers = handlers.on("keep", |_| async { Ok(()) });
    timers::run_due_once(&t.db, &handlers, T0).await.expect("run");
    // `recent` is done later than `old` (rescheduled and fired an hour on).
    sqlx::query("UPDATE jobs SET finished_at = $1 WHERE idempotency_key = 'tick@recent'")
        .bind(T0 + 3600 * SEC)
        .execute(t.db.pool())
        .await
        .expect("later");
    assert_eq!(timers::prune_done(&t.db, "tick", T0 + 60 * SEC).await.expect("prune"), 1);
    assert!(timers::find(&t.db, "tick", "old").await.expect("find").is_none());
    for (kind, key) in [("tick", "recent"), ("tick", "pending"), ("keep", "old")] {
        assert!(timers::find(&t.db, kind, key).await.expect("find").is_some(), "{kind}@{key} kept");
    }
}
