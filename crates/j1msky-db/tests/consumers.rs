//! Event consumers on a real database (SQLite, or PostgreSQL when the run asks for it):
//! cursor and effects commit together, retries with back-off then parking, the two
//! failure policies, leases between runners with separate pools, replay and lag.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use j1msky_core::events::Kind;
use j1msky_core::{Clock, ManualClock};
use j1msky_db::consumers::{self, Consumer, Handled, Handler, OnFailure, Runner};
use j1msky_db::outbox::{self, Event};
use j1msky_db::testing::TestDb;
use j1msky_db::{AnyConnection, Backend, Db};
use serde_json::json;

const SEC: i64 = 1_000_000;

/// Records each handled event as a row; fails on the sequences in `failing`.
#[derive(Clone, Default)]
struct Recorder {
    failing: Arc<Mutex<HashSet<i64>>>,
    /// Moved past the runner's lease while handling the first event (a stalled process).
    stall: Option<ManualClock>,
}

impl Handler for Recorder {
    fn handle<'a>(&'a self, conn: &'a mut AnyConnection, _: Backend, event: &'a Event, _now: i64) -> Handled<'a> {
        Box::pin(async move {
            if self.failing.lock().expect("lock").contains(&event.seq) {
                return Err(format!("cannot handle {}", event.seq).into());
            }
            sqlx::query("INSERT INTO test_effects (seq) VALUES ($1)").bind(event.seq).execute(&mut *conn).await?;
            if let Some(clock) = &self.stall {
                clock.advance_secs(120);
            }
            Ok(())
        })
    }
}

async fn setup() -> TestDb {
    let t = TestDb::new().await;
    sqlx::query("CREATE TABLE test_effects (seq BIGINT NOT NULL)").execute(t.db.pool()).await.expect("table");
    t
}

async fn emit(db: &Db, kind: Kind, n: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        let mut tx = db.begin().await.expect("begin");
        j1msky_db::testing::emit_raw(&mut tx, db.backend(), kind, None, &json!({"i": i}), 1).await.expect("emit");
        tx.commit().await.expect("commit");
    }
    for e in outbox::recent(db, n as i64).await.expect("recent") {
        seqs.push(e.seq);
    }
    seqs.sort();
    seqs
}

/// Every handled sequence, with how many times it was handled.
async fn effects(db: &Db) -> Vec<(i64, i64)> {
    sqlx::query_as("SELECT seq, COUNT(*) FROM test_effects GROUP BY seq ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .expect("effects")
}

fn consumer(name: &str, on_failure: OnFailure, handler: Recorder) -> Consumer {
    let mut c = Consumer::new(name, &[Kind::TaskSubmitted], on_failure, handler);
    c.max_attempts = 3;
    c
}

async fn cursor_of(db: &Db, name: &str) -> i64 {
    let all = consumers::status(db).await.expect("status");
    all.iter().find(|s| s.consumer == name).map(|s| s.cursor).expect("consumer listed")
}

#[tokio::test]
async fn unwanted_kinds_only_move_the_cursor_and_a_rolled_back_handler_leaves_no_effect() {
    let t = setup().await;
    let wanted = emit(&t.db, Kind::TaskSubmitted, 2).await;
    emit(&t.db, Kind::TaskStarted, 3).await;
    let handler = Recorder::default();
    handler.failing.lock().expect("lock").insert(wanted[1]);
    let c = consumer("c", OnFailure::SkipAndPark, handler.clone());
    let runner = Runner::new("a");
    let clock = ManualClock::new(10 * SEC);
    let p = consumers::run_once(&t.db, &runner, std::slice::from_ref(&c), &clock).await.expect("run");
    assert_eq!((p.handled, p.failed, p.passed), (1, 1, 3));
    assert_eq!(effects(&t.db).await, vec![(wanted[0], 1)], "the failed handler's write was rolled back");
    let all = consumers::status(&t.db).await.expect("status");
    assert_eq!((all[0].cursor, all[0].lag, all[0].failing, all[0].parked), (wanted[0] + 4, 0, 1, 0));
    assert_eq!(all[0].lease_owner, None, "the lease is given back after a round");
    // Nothing new: another round does nothing at all.
    assert!(!consumers::run_once(&t.db, &runner, &[c], &clock).await.expect("run").moved());
}

#[tokio::test]
async fn a_failing_event_backs_off_then_parks_skip_keeps_flowing_block_waits_and_retry_resumes() {
    let t = setup().await;
    let first = emit(&t.db, Kind::TaskSubmitted, 1).await;
    let handler = Recorder::default();
    handler.failing.lock().expect("lock").insert(first[0]);
    let skip = consumer("skip", OnFailure::SkipAndPark, handler.clone());
    let block = consumer("block", OnFailure::Block, handler.clone());
    let both = [skip.clone(), block.clone()];
    let runner = Runner::new("a");
    let clock = ManualClock::new(10 * SEC);
    let mut now = clock.now_micros();
    consumers::run_once(&t.db, &runner, &both, &clock).await.expect("run");
    let later = emit(&t.db, Kind::TaskSubmitted, 2).await;

    // Before the back-off has passed the event is not tried again.
    let p = consumers::run_once(&t.db, &runner, &both, &clock).await.expect("run");
    assert_eq!((p.handled, p.failed), (2, 0), "skip handles the later events, block waits");
    let fails = consumers::failures(&t.db, false, 10).await.expect("failures");
    assert_eq!(fails.len(), 2);
    assert!(fails
        .iter()
        .all(|f| f.attempts == 1 && !f.parked && f.next_try_at > now && f.last_error.contains("cannot")));
    assert_eq!(cursor_of(&t.db, "block").await, first[0] - 1);

    // Back-off grows; the third attempt parks it (max_attempts = 3).
    let mut waits = Vec::new();
    for _ in 0..2 {
        let due = consumers::failures(&t.db, false, 10).await.expect("failures")[0].next_try_at;
        waits.push(due - now);
        clock.advance_micros(due - now);
        now = due;
        let p = consumers::run_once(&t.db, &runner, &both, &clock).await.expect("run");
        assert_eq!(p.failed, 2);
    }
    assert!(waits[1] > waits[0], "back-off grows: {waits:?}");
    let parked = consumers::failures(&t.db, true, 10).await.expect("parked");
    assert_eq!(
        parked.iter().map(|f| (f.consumer.as_str(), f.seq, f.attempts)).collect::<Vec<_>>(),
        vec![("block", first[0], 3), ("skip", first[0], 3)]
    );
    clock.advance_secs(3_600);
    now = clock.now_micros();
    assert!(!consumers::run_once(&t.db, &runner, &both, &clock).await.expect("run").moved(), "parked stays parked");
    assert_eq!(effects(&t.db).await, vec![(later[0], 1), (later[1], 1)], "only skip moved on");

    // The operator fixed the cause and retries: both handle it, block then catches up.
    handler.failing.lock().expect("lock").clear();
    assert!(consumers::retry(&t.db, "block", first[0], now).await.expect("retry"));
    assert!(consumers::retry(&t.db, "skip", first[0], now).await.expect("retry"));
    assert!(!consumers::retry(&t.db, "skip", first[0], now).await.expect("retry"), "no longer parked");
    consumers::run_once(&t.db, &runner, &both, &clock).await.expect("run");
    assert_eq!(effects(&t.db).await, vec![(first[0], 2), (later[0], 2), (later[1], 2)]);
    assert!(consumers::failures(&t.db, false, 10).await.expect("failures").is_empty());
    assert_eq!(cursor_of(&t.db, "block").await, later[1]);
}

#[tokio::test]
async fn two_runners_with_separate_pools_handle_every_event_once_and_an_expired_lease_is_taken_over() {
    let t = setup().await;
    let clock = ManualClock::new(100 * SEC);
    let pools = [Db::open(&t.url).await.expect("pool a"), Db::open(&t.url).await.expect("pool b")];
    let c = consumer("c", OnFailure::Block, Recorder::default());
    let mut total = 0;
    // Events keep arriving while both runners work.
    for round in 0..4 {
        total += emit(&t.db, Kind::TaskSubmitted, 40).await.len();
        emit(&t.db, Kind::TaskStarted, 5).await;
        let work = |i: usize| {
            let (db, c, clock) = (pools[i].clone(), c.clone(), clock.clone());
            let runner = Runner { batch: 7, ..Runner::new(format!("runner-{i}")) };
            async move {
                for _ in 0..200 {
                    consumers::run_once(&db, &runner, std::slice::from_ref(&c), &clock).await.expect("run");
                    if effects(&db).await.len() == total {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            }
        };
        tokio::join!(work(0), work(1));
        let seen = effects(&t.db).await;
        assert_eq!(seen.len(), total, "round {round}: every event handled");
        assert!(seen.iter().all(|(_, n)| *n == 1), "round {round}: none handled twice: {seen:?}");
    }

    // Runner a takes the lease and dies holding it: b waits, then takes over once it ran out.
    let more = emit(&t.db, Kind::TaskSubmitted, 3).await;
    assert!(consumers::acquire_lease(&pools[0], "c", "runner-0", clock.now_micros(), 30 * SEC)
        .await
        .expect("lease")
        .is_some());
    let b = Runner::new("runner-1");
    let p = consumers::run_once(&pools[1], &b, std::slice::from_ref(&c), &clock).await.expect("run");
    assert!(!p.moved(), "a live lease of another runner is respected");
    assert_eq!(consumers::status(&t.db).await.expect("status")[0].lease_owner.as_deref(), Some("runner-0"));
    clock.advance_secs(31);
    let p = consumers::run_once(&pools[1], &b, std::slice::from_ref(&c), &clock).await.expect("run");
    assert_eq!(p.handled, more.len());
    assert_eq!(effects(&t.db).await.len(), total + more.len());
}

#[tokio::test]
async fn a_runner_whose_lease_ran_out_mid_batch_cannot_advance_and_another_finishes() {
    let t = setup().await;
    let seqs = emit(&t.db, Kind::TaskSubmitted, 3).await;
    let clock = ManualClock::new(100 * SEC);
    // The handler stalls past the lease while handling the first event.
    let stalling = consumer("c", OnFailure::Block, Recorder { stall: Some(clock.clone()), ..Recorder::default() });
    let a = Runner::new("a");
    let p = consumers::run_once(&t.db, &a, &[stalling], &clock).await.expect("run");
    assert_eq!((p.handled, p.failed), (1, 0), "the first event commits; the stalled runner cannot go on");
    assert_eq!(effects(&t.db).await, vec![(seqs[0], 1)]);
    assert_eq!(cursor_of(&t.db, "c").await, seqs[0]);
    // The lease it lost is free to take: another runner finishes the rest, once each.
    let b = Runner::new("b");
    let c = consumer("c", OnFailure::Block, Recorder::default());
    let p = consumers::run_once(&t.db, &b, &[c], &clock).await.expect("run");
    assert_eq!(p.handled, 2);
    assert_eq!(effects(&t.db).await, vec![(seqs[0], 1), (seqs[1], 1), (seqs[2], 1)]);
}

#[tokio::test]
async fn replay_moves_the_cursor_back_and_lag_counts_what_is_left() {
    let t = setup().await;
    let seqs = emit(&t.db, Kind::TaskSubmitted, 4).await;
    let clock = ManualClock::new(10 * SEC);
    let c = consumer("c", OnFailure::Block, Recorder::default());
    let runner = Runner::new("a");
    consumers::run_once(&t.db, &runner, std::slice::from_ref(&c), &clock).await.expect("run");
    assert_eq!(consumers::replay(&t.db, "c", seqs[2], 11 * SEC).await.expect("replay"), Some(seqs[3]));
    assert_eq!(consumers::replay(&t.db, "nobody", 1, 11 * SEC).await.expect("replay"), None);
    let s = consumers::status(&t.db).await.expect("status");
    assert_eq!((s[0].cursor, s[0].lag), (seqs[1], 2));
    consumers::run_once(&t.db, &runner, &[c], &clock).await.expect("run");
    assert_eq!(effects(&t.db).await, vec![(seqs[0], 1), (seqs[1], 1), (seqs[2], 2), (seqs[3], 2)]);
    assert_eq!(consumers::status(&t.db).await.expect("status")[0].lag, 0);
}

/// Counts the writes to `consumer_cursors` (a trigger on each updated row).
async fn count_cursor_writes(db: &Db) {
    sqlx::query("CREATE TABLE cursor_writes (n BIGINT NOT NULL)").execute(db.pool()).await.expect("table");
    let ddl: &[&str] = match db.backend() {
        Backend::Sqlite => &["CREATE TRIGGER cursor_written AFTER UPDATE ON consumer_cursors
              BEGIN INSERT INTO cursor_writes (n) VALUES (1); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION count_cursor_write() RETURNS trigger LANGUAGE plpgsql AS
              'BEGIN INSERT INTO cursor_writes (n) VALUES (1); RETURN NULL; END'",
            "CREATE TRIGGER cursor_written AFTER UPDATE ON consumer_cursors
              FOR EACH ROW EXECUTE FUNCTION count_cursor_write()",
        ],
    };
    for sql in ddl {
        sqlx::query(sql).execute(db.pool()).await.expect("trigger");
    }
}

async fn cursor_writes(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM cursor_writes").fetch_one(db.pool()).await.expect("writes")
}

#[tokio::test]
async fn an_idle_runner_polls_without_writing_and_wakes_for_new_events() {
    let t = setup().await;
    count_cursor_writes(&t.db).await;
    let c = consumer("idle", OnFailure::Block, Recorder::default());
    let runner = Runner::new("a");
    let clock = ManualClock::new(10 * SEC);
    let first = emit(&t.db, Kind::TaskSubmitted, 1).await;
    let p = consumers::run_once(&t.db, &runner, std::slice::from_ref(&c), &clock).await.expect("run");
    assert_eq!(p.handled, 1);
    let after_work = cursor_writes(&t.db).await;
    assert!(after_work > 0, "handling an event moves the cursor");

    // A minute of polls with nothing to do: the cursor row is not written once.
    for _ in 0..60 {
        clock.advance_secs(1);
        let p = consumers::run_once(&t.db, &runner, std::slice::from_ref(&c), &clock).await.expect("idle run");
        assert!(!p.moved());
    }
    assert_eq!(cursor_writes(&t.db).await, after_work, "idle polls write nothing");

    // An event of a kind it does not handle still moves its cursor; a wanted one is handled.
    emit(&t.db, Kind::TaskStarted, 1).await;
    let next = emit(&t.db, Kind::TaskSubmitted, 1).await;
    let p = consumers::run_once(&t.db, &runner, std::slice::from_ref(&c), &clock).await.expect("run");
    assert_eq!((p.handled, p.passed), (1, 1));
    assert!(cursor_writes(&t.db).await > after_work);
    assert_eq!(effects(&t.db).await, vec![(first[0], 1), (next[0], 1)]);
    assert_eq!(cursor_of(&t.db, "idle").await, next[0]);
}

#[tokio::test]
async fn a_batched_consumer_handles_a_round_in_one_transaction_and_a_failure_falls_back_to_one_by_one() {
    let t = setup().await;
    let wanted = emit(&t.db, Kind::TaskSubmitted, 4).await;
    emit(&t.db, Kind::TaskStarted, 2).await;
    let handler = Recorder::default();
    let c = consumer("batched", OnFailure::SkipAndPark, handler.clone()).batched();
    assert!(c.batched);
    assert!(!consumer("b2", OnFailure::Block, handler.clone()).batched().batched, "only skip-and-park batches");
    let runner = Runner::new("a");
    let clock = ManualClock::new(10 * SEC);
    let p = consumers::run_once(&t.db, &runner, std::slice::from_ref(&c), &clock).await.expect("run");
    assert_eq!((p.handled, p.failed, p.passed), (4, 0, 2));
    assert_eq!(effects(&t.db).await, wanted.iter().map(|s| (*s, 1)).collect::<Vec<_>>());
    assert_eq!(cursor_of(&t.db, "batched").await, wanted[3] + 2);

    // A failing event in the next round: the round is rolled back and redone one by one,
    // so the others are handled once and the failure is recorded against its own event.
    let more = emit(&t.db, Kind::TaskSubmitted, 3).await;
    handler.failing.lock().expect("lock").insert(more[1]);
    let p = consumers::run_once(&t.db, &runner, std::slice::from_ref(&c), &clock).await.expect("run");
    assert_eq!((p.handled, p.failed), (2, 1));
    let fails = consumers::failures(&t.db, false, 10).await.expect("failures");
    assert_eq!(fails.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![more[1]]);
    let seen: Vec<i64> = effects(&t.db).await.into_iter().map(|(s, n)| if n == 1 { s } else { -s }).collect();
    assert_eq!(seen, [&wanted[..], &[more[0], more[2]]].concat(), "each handled exactly once");
    assert_eq!(cursor_of(&t.db, "batched").await, more[2]);

    // Its retry succeeds once the handler does.
    handler.failing.lock().expect("lock").clear();
    clock.advance_secs(60);
    let p = consumers::run_once(&t.db, &runner, std::slice::from_ref(&c), &clock).await.expect("run");
    assert_eq!(p.handled, 1);
    assert!(consumers::failures(&t.db, false, 10).await.expect("failures").is_empty());
}
