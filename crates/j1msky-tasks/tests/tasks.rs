//! Tasks through teams, end to end on the engine the test run selects: the real gateway
//! over loopback to the simulated provider, the real database, a manual clock.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::vocab::Stage;
use j1msky_core::ManualClock;
use j1msky_sim::SimConfig;
use j1msky_tasks::worker::Outcome;
use j1msky_tasks::{NewTask, TaskError, TaskState, Worker, WorkerConfig};

use crate::common;

use common::{env_with, Env};

async fn env() -> Env {
    env_with(SimConfig::default()).await
}

impl Env {
    async fn customer(&self, name: &str, plan: Option<&str>, teams: &[&str]) -> String {
        let id = customers::create(
            &self.t.db,
            &self.catalogue,
            &Actor::cli(),
            NewCustomer {
                name: name.into(),
                stage: Some(Stage::Active),
                plan: plan.map(String::from),
                chosen_teams: teams.iter().map(|s| s.to_string()).collect(),
                ..NewCustomer::default()
            },
            self.clock.now(),
        )
        .await
        .expect("customer")
        .id;
        if plan.is_none() {
            // Pay-per-task: admitted only with a payment method on file, as Stripe reports it.
            let mut tx = self.t.db.begin().await.expect("tx");
            j1msky_accounts::access::set_payment_method(&mut tx, self.t.db.backend(), &id, true, self.clock.now())
                .await
                .expect("payment method");
            tx.commit().await.expect("commit");
        }
        id
    }

    async fn submit(&self, customer: &str, team: &str, prompt: &str) -> Result<j1msky_tasks::Submitted, TaskError> {
        let input = NewTask { team: team.into(), prompt: Some(prompt.into()), ..NewTask::default() };
        j1msky_tasks::submit(&self.t.db, &self.catalogue, customer, &input, None, self.clock.now()).await
    }

    async fn sim_requests(&self) -> u64 {
        let s: j1msky_sim::Stats = reqwest::get(format!("http://{}/_sim/stats", self.sim.addr))
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        s.requests
    }

    async fn script(&self, faults: serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("http://{}/_sim/faults", self.sim.addr))
            .json(&faults)
            .send()
            .await
            .expect("faults");
        assert!(r.status().is_success());
    }
}

trait Now {
    fn now(&self) -> i64;
}
impl Now for ManualClock {
    fn now(&self) -> i64 {
        j1msky_core::Clock::now_micros(self)
    }
}

#[tokio::test]
async fn a_task_runs_through_its_team_and_its_cost_and_events_are_kept() {
    let e = env().await;
    let pro = e.customer("Acme", Some("pro"), &[]).await;
    let sub = e.submit(&pro, "code", "Add a --verbose flag to the CLI").await.expect("submit");
    assert_eq!(sub.task.state, TaskState::Queued);
    assert_eq!(sub.task.category, "code");

    let (id, outcome) = e.worker("w1").run_once().await.expect("run").expect("a task");
    assert_eq!((id.as_str(), outcome), (sub.task.id.as_str(), Outcome::Succeeded));
    let detail = j1msky_tasks::get(&e.t.db, &id, Some(&pro)).await.expect("detail");
    assert_eq!(detail.task.state, TaskState::Succeeded);
    let roles: Vec<(&str, &str)> = detail.steps.iter().map(|s| (s.role.as_str(), s.model.as_str())).collect();
    assert_eq!(roles, vec![("lead", "kimi-k2.5"), ("review", "claude-sonnet")]);
    assert!(detail.steps.iter().all(|s| s.cost_micros > 0 && s.output.starts_with("[simulated]")));
    assert_eq!(detail.task.cost_micros, detail.steps.iter().map(|s| s.cost_micros).sum::<i64>());
    assert_eq!(detail.task.result.as_deref(), Some(detail.steps[0].output.as_str()), "the work, not the review");
    assert_eq!(detail.task.tier.as_deref(), Some("simple"));
    assert_eq!(detail.task.charge_micros, None, "a subscriber is not charged per task");
    assert!(detail.task.started_at.is_some() && detail.task.finished_at.is_some());
    // The reviewer saw the lead's work.
    e.gateway.flush().await;
    let (ledger_rows, ledger_cost): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE task_id = $1",
    )
    .bind(&id)
    .fetch_one(e.t.db.pool())
    .await
    .expect("ledger");
    assert_eq!((ledger_rows, ledger_cost), (2, detail.task.cost_micros), "the ledger knows the task's calls");
    let kinds: Vec<(String,)> = sqlx::query_as("SELECT kind FROM events WHERE kind LIKE 'task.%' ORDER BY seq")
        .fetch_all(e.t.db.pool())
        .await
        .expect("events");
    let kinds: Vec<&str> = kinds.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(kinds, vec!["task.submitted", "task.started", "task.succeeded"]);
    assert!(e.worker("w1").run_once().await.expect("run").is_none(), "the queue is empty");
    assert_eq!(e.count("SELECT COUNT(*) FROM usage_charges").await, 0);
}

#[tokio::test]
async fn a_task_cannot_claim_a_category_kept_for_another_team_s_model() {
    let e = env().await;
    let pro = e.customer("Acme", Some("pro"), &[]).await;
    let with = |team: &str, category: &str| NewTask {
        team: team.into(),
        prompt: Some("Plan the year".into()),
        category: Some(category.into()),
        ..NewTask::default()
    };
    // `strategy` and `architecture` unlock Opus (the catalogue's model_only_for): a content
    // or code task may not claim them.
    for (team, category) in [("content", "strategy"), ("content", "Architecture"), ("code", "strategy")] {
        match j1msky_tasks::submit(&e.t.db, &e.catalogue, &pro, &with(team, category), None, e.clock.now()).await {
            Err(TaskError::Invalid { field, message }) => {
                assert_eq!(field, "category");
                assert!(message.contains(&category.to_ascii_lowercase()) && message.contains(team), "{message}");
            }
            other => panic!("{team} as {category}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(e.count("SELECT COUNT(*) FROM tasks").await, 0, "nothing queued");
    // The business team works in `strategy`; any team may pick a category nothing is kept for.
    let ok = j1msky_tasks::submit(&e.t.db, &e.catalogue, &pro, &with("business", "strategy"), None, e.clock.now())
        .await
        .expect("the business team's own category");
    assert_eq!(ok.task.category, "strategy");
    let ok = j1msky_tasks::submit(&e.t.db, &e.catalogue, &pro, &with("code", "writing"), None, e.clock.now())
        .await
        .expect("a category nothing is kept for");
    assert_eq!(ok.task.category, "writing");
}

#[tokio::test]
async fn pay_per_task_customers_are_charged_once_per_succeeded_task_and_never_for_failures() {
    let e = env().await;
    let payg = e.customer("Walk-in", None, &[]).await;
    let ok = e.submit(&payg, "research", "Compare three CRMs").await.expect("submit").task;
    e.worker("w").run_once().await.expect("run");
    let t = j1msky_tasks::get(&e.t.db, &ok.id, None).await.expect("get").task;
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!((t.tier.as_deref(), t.charge_micros), (Some("simple"), Some(500_000)));
    let (n, amount): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(SUM(amount_micros) AS BIGINT) FROM usage_charges WHERE task_id = $1")
            .bind(&ok.id)
            .fetch_one(e.t.db.pool())
            .await
            .expect("charges");
    assert_eq!((n, amount), (1, 500_000));
    assert!(t.cost_micros > 0 && t.cost_micros < amount, "the margin is known: cost {} µ$", t.cost_micros);

    // A task whose model refuses the request fails for good, uncharged.
    e.script(serde_json::json!({"fault": "400", "model": "claude-sonnet-4-5", "times": 5})).await;
    let bad = e.submit(&payg, "research", "This one will be refused").await.expect("submit").task;
    let (_, outcome) = e.worker("w").run_once().await.expect("run").expect("task");
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let t = j1msky_tasks::get(&e.t.db, &bad.id, None).await.expect("get").task;
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.error.as_deref().unwrap_or("").contains("all models failed"), "{:?}", t.error);
    assert_eq!(e.count("SELECT COUNT(*) FROM usage_charges").await, 1, "failed tasks are never charged");
    assert_eq!(e.count("SELECT COUNT(*) FROM events WHERE kind = 'task.failed'").await, 1);
}

#[tokio::test]
async fn a_retried_submit_with_the_same_idempotency_key_makes_one_task() {
    let e = env().await;
    let c = e.customer("Acme", Some("pro"), &[]).await;
    let input = NewTask { team: "content".into(), prompt: Some("A post".into()), ..NewTask::default() };
    let a = j1msky_tasks::submit(&e.t.db, &e.catalogue, &c, &input, Some("k-1"), e.clock.now()).await.expect("a");
    let b = j1msky_tasks::submit(&e.t.db, &e.catalogue, &c, &input, Some("k-1"), e.clock.now()).await.expect("b");
    assert!(!a.replayed && b.replayed);
    assert_eq!(a.task.id, b.task.id);
    let other = e.customer("Other", Some("pro"), &[]).await;
    let c2 = j1msky_tasks::submit(&e.t.db, &e.catalogue, &other, &input, Some("k-1"), e.clock.now()).await.expect("c");
    assert_ne!(c2.task.id, a.task.id, "keys are per customer");
    assert_eq!(e.count("SELECT COUNT(*) FROM tasks").await, 2);
    assert_eq!(e.count("SELECT COUNT(*) FROM events WHERE kind = 'task.submitted'").await, 2);
}

#[tokio::test]
async fn starter_limits_hold_and_bad_input_stores_nothing() {
    let e = env().await;
    let starter = e.customer("Small Co", Some("starter"), &["code", "research"]).await;
    let err = e.submit(&starter, "business", "Strategy please").await.expect_err("not chosen");
    assert!(matches!(err, TaskError::TeamNotInPlan { .. }), "{err}");
    assert!(err.to_string().contains("code, research"), "{err}");

    for (team, prompt, want) in [
        ("nope", "x".to_string(), "unknown team"),
        ("code", "   ".to_string(), "empty"),
        ("code", "x".repeat(1024 * 1024), "limit"),
    ] {
        let err = e.submit(&starter, team, &prompt).await.expect_err(want);
        assert!(err.to_string().contains(want), "{err}");
    }
    let templated = |fields: &[(&str, &str)]| NewTask {
        team: "code".into(),
        template: Some("bug_fix".into()),
        fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..NewTask::default()
    };
    let now = e.clock.now();
    let bad_field = templated(&[("repository", "r"), ("symptom", "s"), ("colour", "red")]);
    let err = j1msky_tasks::submit(&e.t.db, &e.catalogue, &starter, &bad_field, None, now).await.expect_err("field");
    assert!(err.to_string().contains("no field `colour`"), "{err}");
    let missing = templated(&[("repository", "r")]);
    let err = j1msky_tasks::submit(&e.t.db, &e.catalogue, &starter, &missing, None, now).await.expect_err("missing");
    assert!(err.to_string().contains("needs the field `symptom`"), "{err}");
    assert_eq!(e.count("SELECT COUNT(*) FROM tasks").await, 0, "nothing stored");

    // A template fills in its prompt.
    let ok = templated(&[("repository", "j1msky"), ("symptom", "crash on empty input")]);
    let t = j1msky_tasks::submit(&e.t.db, &e.catalogue, &starter, &ok, None, now).await.expect("template").task;
    assert!(t.prompt.contains("In j1msky, fix this bug: crash on empty input"), "{}", t.prompt);
    assert_eq!(t.title, "Fix a bug");

    // Another customer's task is simply not found.
    let other = e.customer("Other", Some("pro"), &[]).await;
    assert!(matches!(j1msky_tasks::get(&e.t.db, &t.id, Some(&other)).await, Err(TaskError::NotFound(_))));
    assert!(matches!(j1msky_tasks::cancel(&e.t.db, &t.id, Some(&other), "x", now).await, Err(TaskError::NotFound(_))));

    // 100 tasks a month: the 101st is refused with the upgrade path and an event.
    for i in 1..100 {
        e.submit(&starter, "code", &format!("task {i}")).await.expect("within the limit");
    }
    let err = e.submit(&starter, "code", "one too many").await.expect_err("limit");
    assert!(matches!(err, TaskError::LimitReached { limit: "tasks_per_month", .. }), "{err}");
    assert!(err.to_string().contains("upgrade to Pro"), "{err}");
    assert_eq!(e.count("SELECT COUNT(*) FROM tasks").await, 100);
    // (The team refusal above is a limit hit of its own kind.)
    let monthly = "SELECT COUNT(*) FROM events WHERE kind = 'plan.limit_hit' AND payload LIKE '%tasks_per_month%'";
    assert_eq!(e.count(monthly).await, 1);
    // A task cancelled before it started gives its slot back.
    j1msky_tasks::cancel(&e.t.db, &t.id, Some(&starter), "customer", now).await.expect("cancel");
    e.submit(&starter, "code", "now it fits").await.expect("slot freed");
    // Next month the count starts again.
    e.clock.advance_secs(32 * 24 * 3600);
    e.submit(&starter, "code", "a new month").await.expect("new month");
}

#[tokio::test]
async fn over_a_cap_or_an_upstream_rate_limit_a_task_waits_and_then_finishes() {
    let e = env().await;
    let c = e.customer("Acme", Some("pro"), &[]).await;
    let id = e.submit(&c, "code", "Refactor the parser").await.expect("submit").task.id;
    // Kimi (the lead's model, no fallback) answers 429 with Retry-After 30.
    e.script(serde_json::json!({"fault": "429:30", "model": "kimi-k2.5", "times": 10})).await;
    let (_, outcome) = e.worker("w").run_once().await.expect("run").expect("task");
    assert!(matches!(&outcome, Outcome::Waiting { reason } if reason.contains("rate limiting")), "{outcome:?}");
    let t = j1msky_tasks::get(&e.t.db, &id, None).await.expect("get").task;
    assert_eq!(t.state, TaskState::Queued);
    assert!(t.wait_reason.as_deref().unwrap_or("").contains("rate limiting"));
    assert_eq!(t.not_before, e.clock.now() + 30_000_000);
    assert!(e.worker("w").run_once().await.expect("run").is_none(), "it waits its turn");

    reqwest::Client::new().post(format!("http://{}/_sim/reset", e.sim.addr)).send().await.expect("reset");
    e.clock.advance_secs(31);
    let (_, outcome) = e.worker("w").run_once().await.expect("run").expect("task");
    assert_eq!(outcome, Outcome::Succeeded);

    // Over the customer's hourly cap the task waits for the next hour.
    j1msky_gateway::controls::set_cap(
        &e.t.db,
        &e.catalogue,
        &Actor::cli(),
        &format!("customer:{c}"),
        Some(0),
        "test",
        e.clock.now(),
    )
    .await
    .expect("cap");
    e.gateway.controls_changed();
    let id = e.submit(&c, "code", "Another one").await.expect("submit").task.id;
    let (_, outcome) = e.worker("w").run_once().await.expect("run").expect("task");
    assert!(matches!(&outcome, Outcome::Waiting { reason } if reason.contains("hourly cap")), "{outcome:?}");
    let t = j1msky_tasks::get(&e.t.db, &id, None).await.expect("get").task;
    assert_eq!((t.state, t.error), (TaskState::Queued, None), "waiting is not failing");
    assert_eq!(t.not_before, j1msky_core::windows::hour(e.clock.now()).1, "until the next hour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_task_resumes_after_its_last_step_and_is_charged_once() {
    let e = env_with(SimConfig { latency: Duration::from_millis(300), ..SimConfig::default() }).await;
    let payg = e.customer("Walk-in", None, &[]).await;
    let id = e.submit(&payg, "code", "Write the importer").await.expect("submit").task.id;
    let a = e.worker("doomed");
    let running = tokio::spawn(async move { a.run_once().await });
    // Kill the worker while its second step's model call is in flight.
    for _ in 0..500 {
        if e.count("SELECT COUNT(*) FROM task_steps").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    running.abort();
    let _ = running.await;
    assert_eq!(e.count("SELECT COUNT(*) FROM task_steps").await, 1);
    // Until the lease expires nobody else takes it.
    assert!(e.worker("b").run_once().await.expect("run").is_none());
    e.clock.advance_secs(31);
    let (got, outcome) = e.worker("b").run_once().await.expect("run").expect("resumed");
    assert_eq!((got.as_str(), outcome), (id.as_str(), Outcome::Succeeded));
    let d = j1msky_tasks::get(&e.t.db, &id, None).await.expect("get");
    let steps: Vec<(i64, &str)> = d.steps.iter().map(|s| (s.step, s.role.as_str())).collect();
    assert_eq!(steps, vec![(0, "lead"), (1, "review")], "the lead's step was not run again");
    assert_eq!(d.task.attempts, 2);
    assert_eq!(e.count("SELECT COUNT(*) FROM usage_charges").await, 1, "charged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_never_run_the_same_step() {
    let e = env_with(SimConfig { latency: Duration::from_millis(5), ..SimConfig::default() }).await;
    let c = e.customer("Busy", Some("pro"), &[]).await;
    for i in 0..24 {
        e.submit(&c, if i % 2 == 0 { "code" } else { "research" }, &format!("task {i}")).await.expect("submit");
    }
    // Four workers, two of them on a second connection pool (as a second process would be).
    let second = j1msky_db::Db::connect(&e.t.url).await.expect("second pool");
    let mut handles = Vec::new();
    for w in 0..4 {
        let db = if w % 2 == 0 { e.t.db.clone() } else { second.clone() };
        let worker = Worker::new(
            db,
            e.catalogue.clone(),
            e.gateway.clone(),
            Arc::new(e.clock.clone()),
            format!("w{w}"),
            WorkerConfig::default(),
        );
        handles.push(tokio::spawn(async move {
            let mut n = 0;
            while let Some((_, outcome)) = worker.run_once().await.expect("run") {
                assert_eq!(outcome, Outcome::Succeeded);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.expect("join");
    }
    assert_eq!(total, 24, "every task run exactly once");
    assert_eq!(e.count("SELECT COUNT(*) FROM task_steps").await, 48);
    assert_eq!(e.sim_requests().await, 48, "no step's model call was made twice");
    assert_eq!(e.count("SELECT COUNT(*) FROM tasks WHERE state = 'succeeded' AND attempts = 1").await, 24);
    second.close().await;
}

#[tokio::test]
async fn an_enterprise_contract_sets_the_monthly_task_limit_and_the_hourly_call_cap() {
    let e = env().await;
    let starter = e.customer("Small", Some("starter"), &["code", "content"]).await;
    let set = |id: String, contract: customers::Contract| {
        let (db, cat, now) = (e.t.db.clone(), e.catalogue.clone(), e.clock.now());
        async move { customers::set_contract(&db, &cat, &Actor::cli(), &id, contract, now).await }
    };
    let err = set(starter.clone(), customers::Contract { tasks_per_month: Some(500), ..Default::default() })
        .await
        .expect_err("starter has no contract limits");
    assert!(err.to_string().contains("no contract limits"), "{err}");

    let big = e.customer("Big Co", Some("enterprise"), &[]).await;
    let below = customers::Contract { monthly_price: Some("100.00".parse().expect("money")), ..Default::default() };
    let err = set(big.clone(), below).await.expect_err("below the floor");
    assert!(err.to_string().contains("minimum"), "{err}");
    let contract = customers::Contract {
        tasks_per_month: Some(2),
        calls_per_hour: Some(1),
        monthly_price: Some("450.00".parse().expect("money")),
    };
    let c = set(big.clone(), contract.clone()).await.expect("contract");
    assert_eq!(customers::get(&e.t.db, &big).await.expect("get").contract, c.contract);
    assert_eq!(e.count("SELECT COUNT(*) FROM events WHERE kind = 'customer.contract_changed'").await, 1);

    // The contract's 2 tasks a month replace the plan's unlimited allowance.
    e.submit(&big, "code", "one").await.expect("one");
    e.submit(&big, "code", "two").await.expect("two");
    let err = e.submit(&big, "code", "three").await.expect_err("contract limit");
    assert!(matches!(err, TaskError::LimitReached { limit: "tasks_per_month", .. }), "{err}");
    assert!(err.to_string().contains("contract includes 2 tasks"), "{err}");

    // One call an hour: the first step runs, the second waits for the next hour.
    e.gateway.customer_changed(&big);
    let (_, outcome) = e.worker("w").run_once().await.expect("run").expect("task");
    assert!(matches!(&outcome, Outcome::Waiting { reason } if reason.contains("hourly cap")), "{outcome:?}");
    assert_eq!(e.sim_requests().await, 1);

    // Back to the plan's limits: unlimited tasks, 1,000 calls an hour.
    set(big.clone(), customers::Contract::default()).await.expect("cleared");
    e.gateway.customer_changed(&big);
    e.submit(&big, "code", "three").await.expect("unlimited again");
    let (_, outcome) = e.worker("w").run_once().await.expect("run").expect("task");
    assert_eq!(outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn a_customer_who_churned_with_tasks_queued_gets_them_failed_not_run() {
    let e = env().await;
    let pro = e.customer("Leaver", Some("pro"), &[]).await;
    let queued = e.submit(&pro, "research", "Compare three CRMs").await.expect("submit").task;
    customers::set_stage(&e.t.db, &Actor::cli(), &pro, Stage::Churned, e.clock.now()).await.expect("churn");
    e.gateway.customer_changed(&pro);
    let (id, outcome) = e.worker("w").run_once().await.expect("run").expect("a task");
    assert_eq!(id, queued.id);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let t = j1msky_tasks::get(&e.t.db, &id, Some(&pro)).await.expect("detail").task;
    assert_eq!(t.state, TaskState::Failed, "failed for good, not retried");
    assert!(t.error.as_deref().is_some_and(|m| m.contains("closed")), "{:?}", t.error);
    assert_eq!(e.sim_requests().await, 0, "no model was called");
    e.gateway.flush().await;
    assert_eq!(e.count("SELECT COUNT(*) FROM llm_calls").await, 0);
}

/// A plan with an SLA (the catalogue's `sla.priority`: Enterprise) puts its customer's
/// tasks before every task of a customer without one, whatever priority those are marked
/// with: `priority` is the customer's own to give, so a Starter customer marking every task
/// `high` would otherwise be served before the Enterprise customer the SLA is sold to.
/// Within the same SLA, high before normal before low, then first come first served.
#[tokio::test]
async fn an_sla_customer_s_tasks_run_before_tasks_others_mark_high() {
    use j1msky_tasks::Priority;
    let e = env().await;
    let starter = e.customer("Small", Some("starter"), &["code", "content"]).await;
    let pro = e.customer("Mid", Some("pro"), &[]).await;
    let big = e.customer("Big Co", Some("enterprise"), &[]).await;
    let mut order = Vec::new();
    for (customer, priority, prompt) in [
        (&starter, Priority::High, "starter high"),
        (&pro, Priority::Normal, "pro normal"),
        (&starter, Priority::Low, "starter low"),
        (&big, Priority::Low, "enterprise low"),
        (&pro, Priority::High, "pro high"),
        (&big, Priority::Normal, "enterprise normal"),
    ] {
        let input = NewTask { team: "code".into(), prompt: Some(prompt.into()), priority, ..NewTask::default() };
        let t = j1msky_tasks::submit(&e.t.db, &e.catalogue, customer, &input, None, e.clock.now()).await.expect(prompt);
        order.push((t.task.id.clone(), prompt));
        e.clock.advance_secs(1);
    }
    let name = |id: &str| order.iter().find(|(t, _)| t == id).map(|(_, p)| *p).expect("a submitted task");
    let mut ran = Vec::new();
    while let Some((id, outcome)) = e.worker("w").run_once().await.expect("run") {
        assert_eq!(outcome, Outcome::Succeeded, "{}", name(&id));
        ran.push(name(&id));
    }
    assert_eq!(
        ran,
        ["enterprise normal", "enterprise low", "starter high", "pro high", "pro normal", "starter low"],
        "the SLA first, then high, normal, low, each oldest first"
    );
    // The operator's queue view still reads each task's own priority.
    let big_task = order.iter().find(|(_, p)| *p == "enterprise low").expect("task").0.clone();
    let stored = j1msky_tasks::get(&e.t.db, &big_task, None).await.expect("get");
    assert_eq!(stored.task.priority, Priority::Low);
}

/// Migration 0053 re-ranks what was queued under the old ranks (band + SLA priority), so
/// an Enterprise task queued before the upgrade goes before a Starter task marked high;
/// a finished task keeps its old rank and still reads as its band.
#[tokio::test]
async fn the_upgrade_re_ranks_sla_tasks_still_queued() {
    use j1msky_tasks::Priority;
    let e = env().await;
    let starter = e.customer("Small", Some("starter"), &["code", "content"]).await;
    let big = e.customer("Big Co", Some("enterprise"), &[]).await;
    let submit = |customer: String, priority: Priority, prompt: &'static str| {
        let (db, cat, now) = (e.t.db.clone(), e.catalogue.clone(), e.clock.now());
        async move {
            let input = NewTask { team: "code".into(), prompt: Some(prompt.into()), priority, ..NewTask::default() };
            j1msky_tasks::submit(&db, &cat, &customer, &input, None, now).await.expect(prompt).task.id
        }
    };
    let old_big = submit(big.clone(), Priority::Normal, "enterprise, queued before").await;
    e.clock.advance_secs(1);
    let done_big = submit(big.clone(), Priority::High, "enterprise, finished before").await;
    e.clock.advance_secs(1);
    let small = submit(starter.clone(), Priority::High, "starter high").await;
    // As 0052 stored them: band + the SLA priority (10 for the shipped Enterprise plan).
    for (id, rank, state) in [(&old_big, 1010, "queued"), (&done_big, 2010, "succeeded")] {
        sqlx::query("UPDATE tasks SET priority = $1, state = $2 WHERE id = $3")
            .bind(rank)
            .bind(state)
            .bind(id)
            .execute(e.t.db.pool())
            .await
            .expect("old rank");
    }
    let migration = match e.t.db.backend() {
        j1msky_db::Backend::Sqlite => include_str!("../../j1msky-db/migrations/sqlite/0053_sla_before_priority.sql"),
        j1msky_db::Backend::Postgres => {
            include_str!("../../j1msky-db/migrations/postgres/0053_sla_before_priority.sql")
        }
    };
    sqlx::raw_sql(migration).execute(e.t.db.pool()).await.expect("migration 0053");
    let rank = |id: String| {
        let pool = e.t.db.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT priority FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("rank")
        }
    };
    assert_eq!(rank(old_big.clone()).await, 10 * 10_000 + 1000, "queued under the SLA: re-ranked");
    assert_eq!(rank(done_big.clone()).await, 2010, "finished: left as it was");
    assert_eq!(rank(small.clone()).await, 2000, "no SLA: the same rank either way");
    let read = |id: String| {
        let db = e.t.db.clone();
        async move { j1msky_tasks::get(&db, &id, None).await.expect("get").task.priority }
    };
    assert_eq!(read(old_big.clone()).await, Priority::Normal);
    assert_eq!(read(done_big).await, Priority::High);
    let (first, _) = e.worker("w").run_once().await.expect("run").expect("a task");
    assert_eq!(first, old_big, "the Enterprise task queued before the upgrade runs first");
}

/// A customer whose plan changes (Stripe's subscription state, applied by accounts) takes
/// the new plan's SLA for the tasks it already queued (`tasks.sla_rank`): moved onto
/// Enterprise, its queued task goes before a Starter task marked high; moved off it, its
/// queued task no longer does.
#[tokio::test]
async fn a_plan_change_moves_the_customer_s_queued_tasks_to_its_new_sla() {
    use j1msky_core::events::CustomerSubscriptionState;
    use j1msky_db::consumers::{self, Runner};
    use j1msky_tasks::Priority;
    let e = env().await;
    let starter = e.customer("Small", Some("starter"), &["code", "content"]).await;
    let grower = e.customer("Grower", Some("pro"), &[]).await;
    let submit = |customer: String, priority: Priority, prompt: &'static str| {
        let (db, cat, now) = (e.t.db.clone(), e.catalogue.clone(), e.clock.now());
        async move {
            let input = NewTask { team: "code".into(), prompt: Some(prompt.into()), priority, ..NewTask::default() };
            j1msky_tasks::submit(&db, &cat, &customer, &input, None, now).await.expect(prompt).task.id
        }
    };
    let live: j1msky_core::catalogue::LiveCatalogue = e.catalogue.clone().into();
    let mut all = j1msky_accounts::reactions::consumers();
    all.extend(j1msky_tasks::reactions::consumers(&live));
    let move_to = |plan: &'static str| {
        let (db, clock, all, grower) = (e.t.db.clone(), e.clock.clone(), &all, grower.clone());
        async move {
            let state = CustomerSubscriptionState {
                plan: Some(plan.into()),
                stage: None,
                billing_status: None,
                at: clock.now(),
                subscription_status: Some("active".into()),
                trial: None,
                period: None,
                period_budget_micros: None,
            };
            let mut tx = db.begin().await.expect("tx");
            j1msky_db::outbox::emit_typed(&mut tx, db.backend(), state, Some(&grower), clock.now())
                .await
                .expect("emit");
            tx.commit().await.expect("commit");
            let runner = Runner::new("test");
            while consumers::run_once(&db, &runner, all, &clock).await.expect("consumers").handled > 0 {}
        }
    };
    let before = submit(grower.clone(), Priority::Normal, "queued on pro").await;
    e.clock.advance_secs(1);
    let high = submit(starter.clone(), Priority::High, "starter high").await;
    move_to("enterprise").await;
    e.gateway.customer_changed(&grower);
    let (first, _) = e.worker("w").run_once().await.expect("run").expect("a task");
    assert_eq!(first, before, "queued before the upgrade, served under the SLA");
    // Queued on Enterprise, then moved off it: behind the Starter task marked high.
    let after = submit(grower.clone(), Priority::Normal, "queued on enterprise").await;
    // One more is being run when the plan changes: if it goes back to the queue (a cap, a
    // failure to retry), it waits with the plan's new rank too.
    let running = submit(grower.clone(), Priority::Normal, "running on enterprise").await;
    sqlx::query("UPDATE tasks SET state = 'running' WHERE id = $1")
        .bind(&running)
        .execute(e.t.db.pool())
        .await
        .expect("run");
    let rank = |id: String| {
        let db = e.t.db.clone();
        async move {
            let (p,): (i64,) = sqlx::query_as("SELECT priority FROM tasks WHERE id = $1")
                .bind(&id)
                .fetch_one(db.pool())
                .await
                .expect("rank");
            p
        }
    };
    assert!(rank(running.clone()).await >= 10_000, "ranked under the SLA while on Enterprise");
    move_to("pro").await;
    assert!(rank(running.clone()).await < 10_000, "the running task moved off the SLA with the plan");
    e.gateway.customer_changed(&grower);
    let (next, _) = e.worker("w").run_once().await.expect("run").expect("a task");
    assert_eq!(next, high);
    let (last, _) = e.worker("w").run_once().await.expect("run").expect("a task");
    assert_eq!(last, after);
    assert_eq!(j1msky_tasks::get(&e.t.db, &after, None).await.expect("get").task.priority, Priority::Normal);
}

/// A task an operator queues again (`retry`) waits from then: an Enterprise task retried
/// long after it failed is not past its SLA, nor the queue's oldest wait, until it has
/// waited that long again.
#[tokio::test]
async fn a_retried_task_waits_from_its_retry() {
    let e = env().await;
    let big = e.customer("Big Co", Some("enterprise"), &[]).await;
    let id = e.submit(&big, "code", "fails first").await.expect("submit").task.id;
    sqlx::query("UPDATE tasks SET state = 'failed', finished_at = $1 WHERE id = $2")
        .bind(e.clock.now())
        .bind(&id)
        .execute(e.t.db.pool())
        .await
        .expect("failed");
    e.clock.advance_secs(3600);
    j1msky_tasks::retry(&e.t.db, &id, "user:op", e.clock.now()).await.expect("retry");
    let lanes = j1msky_tasks::sla_lanes(&e.t.db, &e.catalogue, e.clock.now()).await.expect("lanes");
    assert_eq!((lanes[0].queued, lanes[0].past_max, lanes[0].oldest_wait_micros), (1, 0, 0), "{lanes:?}");
    let queue = j1msky_tasks::queue_view(&e.t.db, e.clock.now()).await.expect("queue");
    assert_eq!(queue.depth[0].oldest_wait_micros, 0);
    e.clock.advance_secs(6 * 60);
    let lanes = j1msky_tasks::sla_lanes(&e.t.db, &e.catalogue, e.clock.now()).await.expect("lanes");
    assert_eq!(lanes[0].past_max, 1, "six minutes after the retry: past the SLA's five");
}

/// One customer's queue is bounded whatever its plan includes: a flood of free-to-cancel
/// tasks would otherwise sit in front of every other customer's in each claim.
#[tokio::test]
async fn a_customer_may_have_only_so_many_tasks_waiting_at_once() {
    let e = env().await;
    let c = e.customer("Flooder", Some("pro"), &[]).await;
    let other = e.customer("Neighbour", Some("pro"), &[]).await;
    let max = i64::from(e.catalogue.max_waiting_tasks_per_customer);
    assert_eq!(max, 500, "the shipped bound");
    // All but one of its slots taken (written directly: the submits are not the story).
    for i in 0..max - 1 {
        sqlx::query(
            "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, attempts, failures,
                 not_before, queued_at, pay_per_task)
             VALUES ($1, $2, 'content', 'writing', 't', 'p', 0, $3, 0, 0, 0, 0, 0)",
        )
        .bind(format!("tsk_flood_{i:04}"))
        .bind(&c)
        .bind(if i % 10 == 0 { "running" } else { "queued" })
        .execute(e.t.db.pool())
        .await
        .expect("task");
    }
    e.submit(&c, "content", "the last one that fits").await.expect("within the bound");
    match e.submit(&c, "content", "one too many").await {
        Err(TaskError::TooManyWaiting { waiting }) => assert_eq!(waiting, max),
        other => panic!("expected too many waiting, got {:?}", other.map(|s| s.task.id)),
    }
    e.submit(&other, "content", "another customer's").await.expect("others are not held back");
    // One finishes: room for one more.
    sqlx::query("UPDATE tasks SET state = 'succeeded' WHERE id = 'tsk_flood_0001'")
        .execute(e.t.db.pool())
        .await
        .expect("finish");
    e.submit(&c, "content", "after one finished").await.expect("a slot freed");
    assert_eq!(e.count("SELECT COUNT(*) FROM events WHERE kind = 'plan.limit_hit'").await, 1);
}
