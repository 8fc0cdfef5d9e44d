//! What a worker's claim and finish write besides the task (on PostgreSQL each is one
//! statement with its event embedded): the events carry what the change decided, a
//! finished task's event is written exactly once, and a worker whose lease was taken over
//! writes nothing at its end.

// A test stops at the first surprise: panicking shortcuts, the wall clock and untracked
// tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::events::Typed;
use j1msky_core::vocab::Stage;
use j1msky_db::outbox;
use j1msky_sim::SimConfig;
use j1msky_tasks::worker::Outcome;
use j1msky_tasks::{NewTask, Worker, WorkerConfig};

use crate::common;

use common::{env_with, Env};

fn worker(e: &Env, name: &str) -> Worker {
    let config = WorkerConfig { lease: Duration::from_secs(30), ..WorkerConfig::default() };
    Worker::new(e.t.db.clone(), e.catalogue.clone(), e.gateway.clone(), Arc::new(e.clock.clone()), name, config)
}

/// A pay-per-task customer (no plan, a payment method on file) and one task of theirs.
async fn walk_in_with_a_task(e: &Env) -> (String, String) {
    let now = j1msky_core::Clock::now_micros(&e.clock);
    let new = NewCustomer { name: "Walk-in".into(), stage: Some(Stage::Active), ..NewCustomer::default() };
    let customer = customers::create(&e.t.db, &e.catalogue, &Actor::cli(), new, now).await.expect("customer").id;
    let mut tx = e.t.db.begin().await.expect("tx");
    j1msky_accounts::access::set_payment_method(&mut tx, e.t.db.backend(), &customer, true, now)
        .await
        .expect("payment method");
    tx.commit().await.expect("commit");
    let input = NewTask { team: "code".into(), prompt: Some("Write the importer".into()), ..NewTask::default() };
    let task = j1msky_tasks::submit(&e.t.db, &e.catalogue, &customer, &input, None, now).await.expect("submit");
    (customer, task.task.id)
}

/// The task's events after submission, typed, in number order.
async fn task_events(e: &Env, task_id: &str) -> Vec<(Option<String>, Typed)> {
    let all = outbox::after(&e.t.db, 0, 1000).await.expect("events");
    all.iter()
        .filter(|ev| ev.payload.get("task_id").and_then(|v| v.as_str()) == Some(task_id))
        .filter(|ev| ev.kind != "task.submitted")
        .map(|ev| (ev.customer_id.clone(), ev.typed().expect("readable")))
        .collect()
}

async fn count(e: &Env, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(e.t.db.pool()).await.expect(sql);
    n
}

#[tokio::test]
async fn the_claim_and_the_success_write_one_event_each_with_what_they_decided() {
    let e = env_with(SimConfig::default()).await;
    let (customer, id) = walk_in_with_a_task(&e).await;
    let (got, outcome) = worker(&e, "w1").run_once().await.expect("run").expect("a task");
    assert_eq!((got.as_str(), outcome), (id.as_str(), Outcome::Succeeded));
    let task = j1msky_tasks::get(&e.t.db, &id, None).await.expect("get").task;
    assert_eq!(task.charge_micros, Some(500_000), "no plan: charged the tier's price");

    let events = task_events(&e, &id).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let Typed::TaskStarted(started) = &events[0].1 else { panic!("first: {:?}", events[0]) };
    assert_eq!((started.attempt, started.worker.as_str()), (1, "w1"));
    let Typed::TaskSucceeded(done) = &events[1].1 else { panic!("second: {:?}", events[1]) };
    assert_eq!(done.charge_micros, task.charge_micros, "the event says what was charged");
    assert_eq!((done.cost_micros, done.steps, done.tier.as_deref()), (task.cost_micros, 2, Some("simple")));
    assert!(events.iter().all(|(c, _)| c.as_deref() == Some(customer.as_str())), "both name the customer");
    let charges = format!("SELECT COUNT(*) FROM usage_charges WHERE task_id = '{id}' AND amount_micros = 500000");
    assert_eq!(count(&e, &charges).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_was_taken_over_ends_without_a_trace() {
    let e = env_with(SimConfig { latency: Duration::from_millis(300), ..SimConfig::default() }).await;
    let (_, id) = walk_in_with_a_task(&e).await;
    let slow = worker(&e, "slow");
    let first = tokio::spawn(async move { slow.run_once().await });
    // While the slow worker's second model call is in flight, its lease runs out (the
    // manual clock moves; no heartbeat fires within the call) and another takes the task.
    for _ in 0..500 {
        if count(&e, "SELECT COUNT(*) FROM task_steps").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    e.clock.advance_secs(31);
    let (got, outcome) = worker(&e, "fast").run_once().await.expect("run").expect("taken over");
    assert_eq!((got.as_str(), outcome), (id.as_str(), Outcome::Succeeded));
    let (_, late) = first.await.expect("join").expect("run").expect("a task");
    assert_eq!(late, Outcome::Lost, "its step and its end are fenced off");

    let events = task_events(&e, &id).await;
    let started: Vec<(i64, String)> = events
        .iter()
        .filter_map(|(_, t)| match t {
            Typed::TaskStarted(s) => Some((s.attempt, s.worker.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![(1, "slow".to_string()), (2, "fast".to_string())]);
    let ends = events.iter().filter(|(_, t)| matches!(t, Typed::TaskSucceeded(_) | Typed::TaskFailed(_))).count();
    assert_eq!(ends, 1, "the task's end is written once: {events:?}");
    assert_eq!(count(&e, &format!("SELECT COUNT(*) FROM usage_charges WHERE task_id = '{id}'")).await, 1);
    let steps = format!("SELECT COUNT(*) FROM task_steps WHERE task_id = '{id}'");
    assert_eq!(count(&e, &steps).await, 2, "the slow worker's late step was not stored");
}
