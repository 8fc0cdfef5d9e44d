//! A worker's model call survives a failing heartbeat, on the engine the test run
//! selects: the real gateway (its default limits) over loopback to the simulated
//! provider, the real database.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::Stage;
use j1msky_core::{Clock, ManualClock, Money};
use j1msky_db::testing::TestDb;
use j1msky_db::Backend;
use j1msky_gateway::{ledger, Gateway, RetryPolicy};
use j1msky_sim::SimConfig;
use j1msky_tasks::{NewTask, Worker, WorkerConfig};

const T0: i64 = 1_795_000_000_000_000;

/// Every heartbeat (an update of a running task's lease) fails, as when the database
/// is briefly unreachable.
async fn break_heartbeats(t: &TestDb) {
    let statements: &[&str] = match t.db.backend() {
        Backend::Sqlite => &["CREATE TRIGGER no_heartbeat BEFORE UPDATE OF lease_until ON tasks
             WHEN OLD.state = 'running' AND NEW.state = 'running'
             BEGIN SELECT RAISE(ABORT, 'injected heartbeat failure'); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION no_heartbeat() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'injected heartbeat failure'; END $$",
            "CREATE TRIGGER no_heartbeat BEFORE UPDATE OF lease_until ON tasks FOR EACH ROW
             WHEN (OLD.state = 'running' AND NEW.state = 'running') EXECUTE FUNCTION no_heartbeat()",
        ],
    };
    for s in statements {
        sqlx::query(s).execute(t.db.pool()).await.expect(s);
    }
}

#[tokio::test]
async fn a_failing_heartbeat_never_drops_the_model_call_in_flight() {
    let t = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    let clock = ManualClock::new(T0);
    // The call lasts long enough for several heartbeats to fire (and fail) during it.
    let sim = j1msky_sim::spawn(SimConfig { latency: Duration::from_millis(300), ..SimConfig::default() })
        .await
        .expect("sim");
    let gateway = Arc::new(
        Gateway::builder(t.db.clone(), catalogue.clone())
            .clock(Arc::new(clock.clone()))
            .all_providers_at(&sim.openai_base(), &sim.anthropic_base(), "k")
            .timeouts(j1msky_gateway::providers::Timeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(5),
            })
            .retry(RetryPolicy { retries_per_model: 0, ..RetryPolicy::default() })
            .build()
            .expect("limits"),
    );
    let customer = customers::create(
        &t.db,
        &catalogue,
        &Actor::cli(),
        NewCustomer {
            name: "Acme".into(),
            stage: Some(Stage::Active),
            plan: Some("pro".into()),
            ..NewCustomer::default()
        },
        clock.now_micros(),
    )
    .await
    .expect("customer")
    .id;
    let input = NewTask { team: "code".into(), prompt: Some("Fix the flaky test".into()), ..NewTask::default() };
    let task = j1msky_tasks::submit(&t.db, &catalogue, &customer, &input, None, clock.now_micros())
        .await
        .expect("submit")
        .task
        .id;
    break_heartbeats(&t).await;
    let worker = Worker::new(
        t.db.clone(),
        catalogue.clone(),
        gateway.clone(),
        Arc::new(clock.clone()),
        "w1",
        WorkerConfig { lease: Duration::from_millis(30), ..WorkerConfig::default() },
    );
    // The step cannot be stored either (its fenced write extends the lease too), but the
    // call that was made is settled and in the ledger, and nothing stays reserved.
    let _ = worker.run_once().await;
    gateway.flush().await;
    let attempts = ledger::for_request(&t.db, &format!("{task}.s0.a1")).await.expect("ledger");
    assert_eq!(attempts.len(), 1, "the call in flight was ledgered");
    assert_eq!(attempts[0].outcome, "ok");
    assert!(attempts[0].cost > Money::ZERO);
    assert_eq!(gateway.reserved_now().await.expect("reserved"), Money::ZERO, "its reservation was settled");
}
