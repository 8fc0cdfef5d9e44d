// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! `kpi rebuild` against the consumer at more than a handful of rows: a few hundred
//! customers over two months, with more than 1,000 rows of tasks, model costs, pieces and
//! margins (more than one batch for a rebuild that writes in batches), unfinished tasks
//! whose ledger must not count yet, tasks whose ledger spans two models, zero-cost ledger
//! rows and a metered API day: every row the consumer keeps must be the rebuild's, on
//! whichever engine `J1MSKY_TEST_BACKEND` names.

use std::sync::Arc;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::events::{TaskCancelled, TaskFailed, TaskSucceeded, Typed};
use j1msky_core::vocab::Stage;
use j1msky_db::consumers::{self, Runner};
use j1msky_db::outbox;
use j1msky_db::testing::TestDb;
use j1msky_insights::{usage, Ctx};
use sqlx::Row;

const SEC: i64 = 1_000_000;
const CUSTOMERS: usize = 340;
const TASKS: usize = 1_400;
const MODELS: [&str; 3] = ["kimi-k2.5", "claude-sonnet", "claude-opus"];
const TEAMS: [&str; 3] = ["code", "content", "research"];

fn at(month: u32, day: u32, hour: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, month, day)
        .unwrap()
        .and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

/// Every row of the rollups the usage rebuild writes, sorted.
async fn rows(ctx: &Ctx) -> Vec<String> {
    let queries = [
        "SELECT task_id, month, customer_id, team, outcome, duration_ms, cost_micros, charge_micros, ledger_until,
                plan FROM insights_tasks",
        "SELECT month, customer_id, team, tasks_completed, tasks_failed, cost_micros, charge_micros FROM insights_usage",
        "SELECT month, customer_id, team, model, calls, input_tokens, output_tokens, cost_micros
         FROM insights_model_cost",
        "SELECT month, customer_id, team, model, plan, subscription_micros, refunds_micros, charge_micros,
                cost_micros, calls, completed, failed FROM insights_pieces",
        "SELECT month, team, model, plan, pieces, subscription_micros, refunds_micros, charge_micros, cost_micros,
                calls, completed, failed FROM insights_split",
        "SELECT month, customer_id, team, plan, revenue_micros, cost_micros, margin_micros, completed
         FROM insights_margins",
    ];
    let mut out = Vec::new();
    for q in queries {
        let table = q.split("FROM").nth(1).unwrap().trim().to_string();
        for row in sqlx::query(q).fetch_all(ctx.db.pool()).await.unwrap() {
            let cells: Vec<String> = (0..row.len())
                .map(|i| {
                    row.try_get::<String, _>(i).or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string())).unwrap()
                })
                .collect();
            out.push(format!("{table}|{}", cells.join("|")));
        }
    }
    out.sort();
    out
}

fn count(rows: &[String], table: &str) -> usize {
    rows.iter().filter(|r| r.starts_with(&format!("{table}|"))).count()
}

#[tokio::test]
async fn a_rebuild_of_several_batches_writes_every_row_the_consumer_keeps() {
    let t = TestDb::new().await;
    let db = t.db.clone();
    let clock = Arc::new(ManualClock::new(at(11, 28, 12)));
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: clock.clone() };
    let mut ids = Vec::new();
    for i in 0..CUSTOMERS {
        // Plans in turn, and every third customer without one (pays per task).
        let plan = [Some("pro"), Some("starter"), None][i % 3];
        let input = NewCustomer {
            name: format!("Customer {i}"),
            stage: Some(Stage::Active),
            plan: plan.map(String::from),
            chosen_teams: if plan == Some("starter") { vec!["code".into(), "content".into()] } else { vec![] },
            ..Default::default()
        };
        let actor = j1msky_audit::Actor::cli();
        ids.push(customers::create(&db, &catalogue, &actor, input, at(10, 1, 0)).await.unwrap().id);
    }
    let mut tx = db.begin().await.unwrap();
    for i in 0..TASKS {
        let customer = &ids[i % CUSTOMERS];
        let team = TEAMS[(i / CUSTOMERS) % 3];
        // October and November; ids out of time order, so the rebuild's sort matters.
        let queued = at(10 + (i % 2) as u32, 1 + (i % 27) as u32, (i % 20) as u32);
        let task = format!("task_{:05}", (i * 7919) % 100_000);
        // Every 13th is still running: its ledger rows are not counted until it ends.
        let state = match i % 13 {
            0 => "running",
            1 | 5 => "failed",
            2 => "cancelled",
            _ => "succeeded",
        };
        let finished = (state != "running").then_some(queued + (30 + (i % 50) as i64) * SEC);
        let charge = (state == "succeeded" && i % 3 == 2).then_some(250_000 + (i % 7) as i64 * 10_001);
        sqlx::query(
            "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, not_before,
                 queued_at, finished_at, charge_micros)
             VALUES ($1, $2, $3, $3, 't', 'p', 0, $4, $5, $5, $6, $7)",
        )
        .bind(&task)
        .bind(customer)
        .bind(team)
        .bind(state)
        .bind(queued)
        .bind(finished)
        .bind(charge)
        .execute(&mut *tx)
        .await
        .unwrap();
        // One to three ledger rows, on one or two models; an odd one costs nothing.
        for step in 0..=(i % 3) {
            let model = MODELS[(i + step) % 2 + usize::from(i % 5 == 0)];
            let cost = if i % 17 == 3 { 0 } else { 1_000 + ((i * 37 + step * 11) % 900) as i64 * 100 };
            sqlx::query(
                "INSERT INTO llm_calls (id, request_id, attempt, customer_id, task_id, team, provider,
                     model_requested, model_used, input_tokens, output_tokens, cost_micros, outcome, created_at)
                 VALUES ($1, $2, 1, $3, $4, $5, 'sim', $6, $6, $7, $8, $9, 'ok', $10)",
            )
            .bind(format!("llm_{i}_{step}"))
            .bind(format!("req_{i}_{step}"))
            .bind(customer)
            .bind(&task)
            .bind(team)
            .bind(model)
            .bind(100 + i as i64)
            .bind(200 + step as i64)
            .bind(cost)
            .bind(queued + (step as i64 + 1) * SEC)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        let event: Option<Typed> = match state {
            "succeeded" => Some(
                TaskSucceeded {
                    task_id: task.clone(),
                    team: team.into(),
                    steps: 1,
                    cost_micros: 0,
                    tier: charge.map(|_| "simple".into()),
                    charge_micros: charge,
                }
                .into(),
            ),
            "failed" => {
                Some(TaskFailed { task_id: task.clone(), team: team.into(), error: "boom".into(), failures: 3 }.into())
            }
            "cancelled" => Some(TaskCancelled { task_id: task.clone(), by: "ops".into() }.into()),
            _ => None,
        };
        if let (Some(e), Some(f)) = (event, finished) {
            outbox::emit_typed(&mut tx, db.backend(), e, Some(customer), f).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    // A customer's direct API calls on the 11th of November, metered into one charge.
    for (i, (model, cost)) in [("kimi-k2.5", 3_000), ("claude-sonnet", 9_000)].into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO llm_calls (id, request_id, attempt, customer_id, provider, model_requested, model_used,
                 input_tokens, output_tokens, cost_micros, outcome, created_at)
             VALUES ($1, $2, 1, $3, 'sim', $4, $4, 10, 10, $5, 'ok', $6)",
        )
        .bind(format!("llm_api{i}"))
        .bind(format!("req_api{i}"))
        .bind(&ids[2])
        .bind(model)
        .bind(cost)
        .bind(at(11, 11, 8 + i as u32))
        .execute(db.pool())
        .await
        .unwrap();
    }
    assert_eq!(j1msky_tasks::api_usage::meter_api_calls(&db, &catalogue, at(11, 13, 12)).await.unwrap(), 1);

    let all = usage::consumers(&ctx);
    let runner = Runner::new("test");
    loop {
        let p = consumers::run_once(&db, &runner, &all, clock.as_ref()).await.unwrap();
        assert_eq!(p.failed, 0, "the usage consumer failed an event");
        if p.handled + p.passed == 0 {
            break;
        }
    }
    let by_consumer = rows(&ctx).await;
    // More than one INSERT batch of tasks, model costs, pieces and margins.
    for table in ["insights_tasks", "insights_model_cost", "insights_pieces", "insights_margins"] {
        assert!(count(&by_consumer, table) > 1_000, "{table}: {}", count(&by_consumer, table));
    }
    let api = by_consumer.iter().filter(|r| r.starts_with("insights_tasks|api:")).count();
    assert_eq!(api, 1, "the metered day is one row of insights_tasks");
    usage::rebuild(&ctx).await.unwrap();
    let rebuilt = rows(&ctx).await;
    for table in ["insights_tasks", "insights_usage", "insights_model_cost", "insights_pieces", "insights_split"] {
        assert_eq!(count(&rebuilt, table), count(&by_consumer, table), "{table}");
    }
    assert!(rebuilt == by_consumer, "the rebuild and the consumer disagree");
    // Running tasks' ledger rows were left out; their tasks are no rows.
    let running: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM insights_tasks i JOIN tasks t ON t.id = i.task_id WHERE t.state = 'running'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(running, 0);
}
