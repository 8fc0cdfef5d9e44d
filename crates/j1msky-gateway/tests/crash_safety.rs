//! Budgets and the ledger across crashes, on the engine the test run selects: what a
//! dead process held is never forgotten (limits in memory) or never held forever
//! (limits in the database), and failing ledger commits stop admission at a bound.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::{Clock, ManualClock, Money, SystemClock};
use j1msky_db::testing::TestDb;
use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
use j1msky_gateway::limits::{self, LimitError, RESERVATION_TTL};
use j1msky_gateway::{controls, ledger, CallContext, Gateway, GatewayError, Limits, RetryPolicy};
use j1msky_sim::SimConfig;

fn request() -> ChatRequest {
    ChatRequest {
        system: None,
        turns: vec![Turn { speaker: Speaker::User, text: "Summarise the quarter".into() }],
        max_tokens: 500,
        temperature: None,
        stop: vec![],
    }
}

fn ctx(id: &str) -> CallContext {
    CallContext { request_id: id.into(), category: "general".into(), ..CallContext::default() }
}

/// A gateway whose limits live in the database unless `limits` says otherwise.
fn gateway_with(
    t: &TestDb,
    catalogue: &Arc<Catalogue>,
    sim: &j1msky_sim::Running,
    clock: Arc<dyn Clock>,
    limits: Limits,
) -> Gateway {
    Gateway::builder(t.db.clone(), catalogue.clone())
        .clock(clock)
        .all_providers_at(&sim.openai_base(), &sim.anthropic_base(), "k")
        .retry(RetryPolicy { retries_per_model: 0, ..RetryPolicy::default() })
        .limits(limits)
        .build()
        .expect("gateway")
}

/// Shared limits admitted per call (reservation rows), the path these tests exercise; the
/// crash rules of slices (`leases`) are tested in `processes.rs` and `multi_process.rs`.
fn gateway(t: &TestDb, catalogue: &Arc<Catalogue>, sim: &j1msky_sim::Running, clock: Arc<dyn Clock>) -> Gateway {
    gateway_with(t, catalogue, sim, clock, Limits::Shared).without_leases()
}

async fn setup() -> (TestDb, Arc<Catalogue>, j1msky_sim::Running) {
    let t = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    let sim =
        j1msky_sim::spawn(SimConfig { latency: Duration::from_millis(5), ..SimConfig::default() }).await.expect("sim");
    (t, catalogue, sim)
}

async fn set_budget(t: &TestDb, micros: i64) {
    controls::set_daily_budget(
        &t.db,
        &Actor::cli(),
        Some(Money::from_micros(micros)),
        "test",
        SystemClock.now_micros(),
    )
    .await
    .expect("budget");
}

#[tokio::test]
async fn what_a_crashed_process_held_counts_as_spent_after_the_restart() {
    let (t, catalogue, sim) = setup().await;
    set_budget(&t, 1_000_000_000).await;
    let gw = gateway_with(&t, &catalogue, &sim, Arc::new(SystemClock), Limits::InProcess);
    // A call admitted and in flight when the process dies: never settled.
    let (_route, held) = gw.admit(&ctx("req_in_flight"), None, &request()).await.expect("admit");
    let amount = held.amount.micros();
    assert!(amount > 0);
    gw.flush().await;
    let total_held: (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(reserved_micros), 0) AS BIGINT) FROM budget_windows")
            .fetch_one(t.db.pool())
            .await
            .expect("held");
    assert_eq!(total_held.0, amount, "the group commit persists what is held");
    drop(gw);

    // The budget now fits one call and a half: with the dead process's call counted, a
    // second one does not fit.
    set_budget(&t, amount * 3 / 2).await;
    let gw = gateway_with(&t, &catalogue, &sim, Arc::new(SystemClock), Limits::InProcess);
    match gw.complete(&ctx("req_after_restart"), None, &request()).await {
        Err(GatewayError::Limit(LimitError::Budget { committed, .. })) => {
            assert_eq!(committed.micros(), amount, "the held amount counts as spent")
        }
        other => panic!("expected the budget to refuse, got {:?}", other.map(|c| c.cost)),
    }
}

#[tokio::test]
async fn ledger_rows_that_cannot_be_written_stop_admission_at_a_bound_with_an_alert() {
    let (t, catalogue, sim) = setup().await;
    let gw = gateway_with(&t, &catalogue, &sim, Arc::new(SystemClock), Limits::InProcessBounded(2));
    gw.complete(&ctx("req_before"), None, &request()).await.expect("call");
    gw.flush().await;
    // The ledger's table is out of reach: every group commit fails from now on.
    sqlx::query("ALTER TABLE llm_calls RENAME TO llm_calls_away").execute(t.db.pool()).await.expect("rename");
    gw.complete(&ctx("req_1"), None, &request()).await.expect("call 1");
    gw.complete(&ctx("req_2"), None, &request()).await.expect("call 2");
    match gw.complete(&ctx("req_3"), None, &request()).await {
        Err(GatewayError::Limit(LimitError::Backlog { unflushed })) => assert_eq!(unflushed, 2),
        other => panic!("expected the backlog to refuse, got {:?}", other.map(|c| c.cost)),
    }
    let (alerts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'ledger_backlog'")
        .fetch_one(t.db.pool())
        .await
        .expect("alerts");
    assert_eq!(alerts, 1, "the operator is alerted");

    // The database is back: the waiting rows are written, nothing lost, calls admitted again.
    sqlx::query("ALTER TABLE llm_calls_away RENAME TO llm_calls").execute(t.db.pool()).await.expect("rename back");
    gw.flush().await;
    for id in ["req_before", "req_1", "req_2"] {
        assert_eq!(ledger::for_request(&t.db, id).await.expect("ledger").len(), 1, "{id} is in the ledger");
    }
    assert!(ledger::for_request(&t.db, "req_3").await.expect("ledger").is_empty(), "the refused call cost nothing");
    gw.complete(&ctx("req_4"), None, &request()).await.expect("admitted again");
}

#[tokio::test]
async fn a_ledger_only_behind_makes_calls_wait_for_its_next_commit_not_fail() {
    let (t, catalogue, sim) = setup().await;
    let gw = Arc::new(gateway_with(&t, &catalogue, &sim, Arc::new(SystemClock), Limits::InProcessBounded(2)));
    gw.complete(&ctx("req_before"), None, &request()).await.expect("call");
    gw.flush().await;
    // Another connection holds the ledger's table: the writer's next commit waits for it,
    // as it would behind a burst or a slow checkpoint, and two rows pile up.
    let mut other = t.db.pool().acquire().await.expect("connection");
    let hold = match t.db.backend() {
        j1msky_db::Backend::Sqlite => "BEGIN IMMEDIATE",
        j1msky_db::Backend::Postgres => "BEGIN; LOCK TABLE llm_calls IN EXCLUSIVE MODE",
    };
    sqlx::raw_sql(hold).execute(&mut *other).await.expect("hold the table");
    gw.complete(&ctx("req_1"), None, &request()).await.expect("call 1");
    gw.complete(&ctx("req_2"), None, &request()).await.expect("call 2");
    let mut third = {
        let gw = gw.clone();
        tokio::spawn(async move { gw.complete(&ctx("req_3"), None, &request()).await })
    };
    // The third call waits at the bound instead of being refused…
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut third).await.is_err(),
        "the call was answered while the ledger was behind"
    );
    // …and goes on once the commit it waits for is written.
    sqlx::raw_sql("COMMIT").execute(&mut *other).await.expect("let go");
    drop(other);
    let done = third.await.expect("task").expect("admitted once the rows were written");
    assert!(done.cost.micros() > 0);
    gw.flush().await;
    for id in ["req_before", "req_1", "req_2", "req_3"] {
        assert_eq!(ledger::for_request(&t.db, id).await.expect("ledger").len(), 1, "{id} is in the ledger");
    }
    let (alerts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'ledger_backlog'")
        .fetch_one(t.db.pool())
        .await
        .expect("alerts");
    assert_eq!(alerts, 0, "a ledger that is only behind is not an alert");
}

#[tokio::test]
async fn database_reservations_of_a_dead_process_are_released_when_they_expire() {
    let (t, catalogue, sim) = setup().await;
    let clock = ManualClock::new(SystemClock.now_micros());
    set_budget(&t, 1_000_000_000).await;
    let dead = gateway(&t, &catalogue, &sim, Arc::new(clock.clone()));
    let (_route, held) = dead.admit(&ctx("req_dead"), None, &request()).await.expect("admit");
    drop(dead);
    let sweeper = gateway(&t, &catalogue, &sim, Arc::new(clock.clone()));
    assert_eq!(sweeper.reserved_now().await.expect("reserved"), held.amount);
    // Not expired yet: it may belong to a call still running.
    assert_eq!(sweeper.release_expired_reservations().await.expect("sweep"), 0);
    assert_eq!(sweeper.reserved_now().await.expect("reserved"), held.amount);
    clock.advance_micros(RESERVATION_TTL + 1);
    assert_eq!(sweeper.release_expired_reservations().await.expect("sweep"), held.budgets.len() as u64);
    assert_eq!(sweeper.reserved_now().await.expect("reserved"), Money::ZERO, "released");

    // A live process keeps renewing its lease, so its long call keeps its reservation
    // while a dead one's lease runs out.
    let live = gateway(&t, &catalogue, &sim, Arc::new(clock.clone()));
    let (_route, kept) = live.admit(&ctx("req_live"), None, &request()).await.expect("admit");
    let gone = gateway(&t, &catalogue, &sim, Arc::new(clock.clone()));
    let (_route, lost) = gone.admit(&ctx("req_gone"), None, &request()).await.expect("admit");
    drop(gone);
    clock.advance_micros(RESERVATION_TTL / 2);
    assert_eq!(live.release_expired_reservations().await.expect("live sweep"), 0, "nothing expired yet");
    clock.advance_micros(RESERVATION_TTL / 2 + 1);
    assert_eq!(sweeper.release_expired_reservations().await.expect("sweep"), lost.budgets.len() as u64);
    assert_eq!(sweeper.reserved_now().await.expect("reserved"), kept.amount, "the live call keeps its reservation");
    let mut tx = t.db.begin().await.expect("tx");
    limits::settle(&mut tx, &kept, Money::ZERO).await.expect("settle the live call");
    tx.commit().await.expect("commit");
    assert_eq!(sweeper.reserved_now().await.expect("reserved"), Money::ZERO);

    // A settlement arriving after the release adds its spend and releases nothing twice.
    let mut tx = t.db.begin().await.expect("tx");
    limits::settle(&mut tx, &held, Money::from_micros(7)).await.expect("settle");
    tx.commit().await.expect("commit");
    assert_eq!(sweeper.reserved_now().await.expect("reserved"), Money::ZERO);
    let (spent,): (i64,) = sqlx::query_as("SELECT CAST(COALESCE(SUM(spent_micros), 0) AS BIGINT) FROM budget_windows")
        .fetch_one(t.db.pool())
        .await
        .expect("spent");
    assert_eq!(spent, 7);
}
