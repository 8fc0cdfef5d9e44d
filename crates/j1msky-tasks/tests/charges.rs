//! What a finished task is charged and what it hands back: the pay-per-task tier comes
//! from the task's own work (its steps), never from how long it waited for a cap, a
//! provider's rate limit or an expired lease; a reviewer's second rejection fails the
//! task, uncharged; the result is the work, not the review. End to end on the engine
//! the test run selects, over loopback to the simulated provider, with a manual clock.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::time::Duration;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::vocab::Stage;
use j1msky_core::Clock;
use j1msky_sim::SimConfig;
use j1msky_tasks::worker::Outcome;
use j1msky_tasks::{NewTask, TaskDetail, TaskState};

use crate::common;

use common::{env_with as env, Env};

const HOUR: i64 = 3600;
/// The reviewer's upstream model in the shipped catalogue.
const REVIEWER: &str = "claude-sonnet-4-5";

impl Env {
    /// A customer without a subscription: pays per task.
    async fn walk_in(&self) -> String {
        let input = NewCustomer { name: "Walk-in".into(), stage: Some(Stage::Active), ..NewCustomer::default() };
        let id = customers::create(&self.t.db, &self.catalogue, &Actor::cli(), input, self.clock.now_micros())
            .await
            .expect("customer")
            .id;
        // Pay-per-task: admitted only with a payment method on file.
        let mut tx = self.t.db.begin().await.expect("tx");
        j1msky_accounts::access::set_payment_method(&mut tx, self.t.db.backend(), &id, true, self.clock.now_micros())
            .await
            .expect("payment method");
        tx.commit().await.expect("commit");
        id
    }

    async fn submitted(&self, customer: &str, team: &str, prompt: &str) -> String {
        let input = NewTask { team: team.into(), prompt: Some(prompt.into()), ..NewTask::default() };
        j1msky_tasks::submit(&self.t.db, &self.catalogue, customer, &input, None, self.clock.now_micros())
            .await
            .expect("submit")
            .task
            .id
    }

    async fn run(&self) -> Outcome {
        self.worker("w").run_once().await.expect("run").expect("a task").1
    }

    async fn detail(&self, id: &str) -> TaskDetail {
        j1msky_tasks::get(&self.t.db, id, None).await.expect("task")
    }

    async fn sim_post(&self, path: &str, body: serde_json::Value) {
        let url = format!("http://{}{path}", self.sim.addr);
        let r = reqwest::Client::new().post(url).json(&body).send().await.expect(path);
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    async fn cap_customer(&self, customer: &str, cap: Option<i64>) {
        let scope = format!("customer:{customer}");
        j1msky_gateway::controls::set_cap(
            &self.t.db,
            &self.catalogue,
            &Actor::cli(),
            &scope,
            cap,
            "test",
            self.clock.now_micros(),
        )
        .await
        .expect("cap");
        self.gateway.controls_changed();
    }
}

#[tokio::test]
async fn a_task_held_by_a_cap_and_a_provider_rate_limit_is_charged_the_tier_its_steps_earn() {
    let e = env(SimConfig::default()).await;
    let payg = e.walk_in().await;
    let id = e.submitted(&payg, "code", "Add a --verbose flag").await;

    // An hour held by the customer's cap...
    e.cap_customer(&payg, Some(0)).await;
    assert!(matches!(e.run().await, Outcome::Waiting { .. }));
    e.clock.advance_secs(HOUR);
    e.cap_customer(&payg, None).await;
    // ...then ten minutes of the provider answering 429 (the lead's model has no fallback).
    e.sim_post("/_sim/faults", serde_json::json!({"fault": "429:600", "model": "kimi-k2.5", "times": 5})).await;
    assert!(matches!(e.run().await, Outcome::Waiting { .. }));
    e.sim_post("/_sim/reset", serde_json::json!({})).await;
    e.clock.advance_secs(601);
    assert_eq!(e.run().await, Outcome::Succeeded);

    let d = e.detail(&id).await;
    assert_eq!(d.steps.len(), 2);
    let tokens: i64 = d.steps.iter().map(|s| s.input_tokens + s.output_tokens).sum();
    assert!(tokens <= 1_500, "the steps are simple work: {tokens} tokens");
    assert!(d.task.finished_at.unwrap_or(0) - d.task.started_at.unwrap_or(0) > HOUR * 1_000_000, "it did wait");
    let simple = j1msky_tasks::tier::price(&e.catalogue, "simple").micros();
    assert_eq!((d.task.tier.as_deref(), d.task.charge_micros), (Some("simple"), Some(simple)));
    let charged = e.count("SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) FROM usage_charges").await;
    assert_eq!(charged, simple, "the usage charge is the tier's price");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_re_claimed_after_an_expired_lease_is_charged_the_tier_its_steps_earn() {
    let e = env(SimConfig { latency: Duration::from_millis(300), ..SimConfig::default() }).await;
    let payg = e.walk_in().await;
    let id = e.submitted(&payg, "code", "Write the importer").await;
    let doomed = e.worker("doomed");
    let running = tokio::spawn(async move { doomed.run_once().await });
    // The worker dies while its second step's model call is in flight.
    for _ in 0..500 {
        if e.count("SELECT COUNT(*) FROM task_steps").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.abort();
    let _ = running.await;
    // Nobody notices for two hours.
    e.clock.advance_secs(2 * HOUR);
    assert_eq!(e.run().await, Outcome::Succeeded);
    let d = e.detail(&id).await;
    assert_eq!((d.task.attempts, d.steps.len()), (2, 2));
    let simple = j1msky_tasks::tier::price(&e.catalogue, "simple").micros();
    assert_eq!((d.task.tier.as_deref(), d.task.charge_micros), (Some("simple"), Some(simple)));
}

#[tokio::test]
async fn a_second_reviewer_rejection_fails_the_task_uncharged() {
    let e = env(SimConfig::default()).await;
    let payg = e.walk_in().await;
    let id = e.submitted(&payg, "code", "Fix the date parser").await;
    e.sim_post("/_sim/answers", serde_json::json!({"prefix": "REVISE:", "model": REVIEWER, "times": 2})).await;

    let outcome = e.run().await;
    assert!(matches!(&outcome, Outcome::Failed { error } if error.contains("review")), "{outcome:?}");
    let d = e.detail(&id).await;
    let roles: Vec<&str> = d.steps.iter().map(|s| s.role.as_str()).collect();
    assert_eq!(roles, vec!["lead", "review", "lead", "review"], "one send-back, then the second rejection");
    assert_eq!(d.task.state, TaskState::Failed);
    let error = d.task.error.as_deref().unwrap_or("");
    assert!(error.contains("rejected") && error.contains("review"), "the error says what happened: {error}");
    assert_eq!(d.task.result, None, "a rejected review is not a result");
    assert_eq!(d.task.charge_micros, None);
    assert_eq!(e.count("SELECT COUNT(*) FROM usage_charges").await, 0, "a failed task is never charged");
    assert_eq!(e.count("SELECT COUNT(*) FROM events WHERE kind = 'task.failed'").await, 1);
    assert_eq!(e.count("SELECT COUNT(*) FROM events WHERE kind = 'task.succeeded'").await, 0);
    assert!(e.worker("w").run_once().await.expect("run").is_none(), "it is not retried");

    // Uncharged work is not delivered: the pay-per-task customer does not get the lead's
    // output from the steps of a task that failed (the operator still sees everything).
    let theirs = j1msky_tasks::get(&e.t.db, &id, Some(&payg)).await.expect("customer view");
    assert_eq!(theirs.steps.len(), 4, "the steps themselves are shown");
    assert!(theirs.steps.iter().all(|s| s.output.is_empty() && s.output_withheld), "{:?}", theirs.steps);
    assert!(d.steps.iter().all(|s| !s.output.is_empty() && !s.output_withheld), "operator view: {:?}", d.steps);
    // Nor a piece of it through the error: the review is a step's output, withheld too.
    let review = d.steps[3].output.trim();
    assert!(review.starts_with("REVISE:"), "{review}");
    let their_error = theirs.task.error.as_deref().unwrap_or("");
    assert!(their_error.contains("rejected"), "the error still says what happened: {their_error}");
    assert!(!their_error.contains("REVISE:"), "no model text in the error: {their_error}");

    // The customer subscribes afterwards (a trial is enough): work done under pay-per-task
    // and never paid for stays withheld; it was the plan *now* that decided, so starting
    // one delivered every failed or cancelled task's outputs free.
    sqlx::query("UPDATE customers SET plan = 'pro', stage = 'trial' WHERE id = $1")
        .bind(&payg)
        .execute(e.t.db.pool())
        .await
        .expect("plan");
    let theirs = j1msky_tasks::get(&e.t.db, &id, Some(&payg)).await.expect("customer view");
    assert!(theirs.steps.iter().all(|s| s.output.is_empty() && s.output_withheld), "{:?}", theirs.steps);
    // A task submitted under the plan is the plan's: shown whatever becomes of it.
    let planned = e.submitted(&payg, "code", "Fix the time parser").await;
    e.sim_post("/_sim/answers", serde_json::json!({"prefix": "REVISE:", "model": REVIEWER, "times": 2})).await;
    assert!(matches!(e.run().await, Outcome::Failed { .. }));
    let theirs = j1msky_tasks::get(&e.t.db, &planned, Some(&payg)).await.expect("customer view");
    assert!(theirs.steps.iter().all(|s| !s.output.is_empty() && !s.output_withheld), "{:?}", theirs.steps);
}

#[tokio::test]
async fn a_task_s_result_is_the_last_producing_role_s_output_not_the_review() {
    let e = env(SimConfig::default()).await;
    let payg = e.walk_in().await;
    let id = e.submitted(&payg, "code", "Fix the date parser").await;
    e.sim_post("/_sim/answers", serde_json::json!({"prefix": "REVISE:", "model": REVIEWER, "times": 1})).await;
    e.sim_post("/_sim/answers", serde_json::json!({"prefix": "Approved:", "model": REVIEWER, "times": 1})).await;

    assert_eq!(e.run().await, Outcome::Succeeded);
    let d = e.detail(&id).await;
    let roles: Vec<&str> = d.steps.iter().map(|s| s.role.as_str()).collect();
    assert_eq!(roles, vec!["lead", "review", "lead", "review"]);
    assert!(d.steps[3].output.starts_with("Approved:"), "{}", d.steps[3].output);
    assert_eq!(d.task.result.as_deref(), Some(d.steps[2].output.as_str()), "the lead's revised work");
    // Sent back once: complex work, charged as such.
    let complex = j1msky_tasks::tier::price(&e.catalogue, "complex").micros();
    assert_eq!((d.task.tier.as_deref(), d.task.charge_micros), (Some("complex"), Some(complex)));
}

/// A task is charged on the terms it was admitted on: submitted pay-per-task, it is
/// charged when it succeeds though its customer started a plan meanwhile (it was delivered
/// only with its charge); submitted under a plan, never.
#[tokio::test]
async fn a_task_is_charged_on_the_terms_it_was_admitted_on() {
    let e = env(SimConfig::default()).await;
    let payg = e.walk_in().await;
    let before = e.submitted(&payg, "code", "Fix the date parser").await;
    sqlx::query("UPDATE customers SET plan = 'pro', stage = 'trial' WHERE id = $1")
        .bind(&payg)
        .execute(e.t.db.pool())
        .await
        .expect("plan");
    let after = e.submitted(&payg, "code", "Fix the time parser").await;
    for _ in 0..2 {
        assert_eq!(e.run().await, Outcome::Succeeded);
    }
    let (b, a) = (e.detail(&before).await, e.detail(&after).await);
    let price = j1msky_tasks::tier::price(&e.catalogue, b.task.tier.as_deref().expect("tier")).micros();
    assert_eq!(b.task.charge_micros, Some(price), "admitted pay-per-task: charged");
    assert_eq!(a.task.charge_micros, None, "admitted under the plan");
    assert_eq!(e.count("SELECT COUNT(*) FROM usage_charges").await, 1);
}

/// Tasks queued under a plan do not run once the plan in force no longer includes their
/// team (the customer paused, or moved down to a plan without it): the team was checked
/// only at submission, so a Pro customer could queue thousands of tasks and pause at
/// $5 a month while the queue ran on. Each fails, uncharged, before any model call, saying
/// why; a team the plan still includes runs.
#[tokio::test]
async fn queued_tasks_of_a_team_the_plan_no_longer_includes_do_not_run() {
    let e = env(SimConfig::default()).await;
    let input = NewCustomer {
        name: "Pauser".into(),
        stage: Some(Stage::Active),
        plan: Some("pro".into()),
        ..NewCustomer::default()
    };
    let pro = customers::create(&e.t.db, &e.catalogue, &Actor::cli(), input, e.clock.now_micros())
        .await
        .expect("customer")
        .id;
    let queued: Vec<String> = two_code_tasks(&e, &pro).await;
    // The customer pauses (as billing tells accounts: the pause plan, stage paused).
    sqlx::query("UPDATE customers SET plan = 'paused', stage = 'paused' WHERE id = $1")
        .bind(&pro)
        .execute(e.t.db.pool())
        .await
        .expect("paused");
    for _ in &queued {
        let outcome = e.run().await;
        assert!(
            matches!(&outcome, Outcome::Failed { error } if error.contains("Paused") && error.contains("team")),
            "{outcome:?}"
        );
    }
    assert_eq!(e.count("SELECT COUNT(*) FROM llm_calls").await, 0, "no model call was made");
    assert_eq!(e.count("SELECT COUNT(*) FROM usage_charges").await, 0);
    for id in &queued {
        assert_eq!(e.detail(id).await.task.state, TaskState::Failed);
    }
}

async fn two_code_tasks(e: &Env, customer: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for prompt in ["Fix the date parser", "Fix the time parser"] {
        ids.push(e.submitted(customer, "code", prompt).await);
    }
    ids
}
