// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Rollup consumer benchmark (issue 14 §4): how many task completions per second the
//! consumer `insights.usage` folds into the rollups on a SQLite file. The harness writes
//! with SQL, as the worker would have: CUSTOMERS customers, HISTORY tasks already rolled
//! up (by `rebuild`), then TASKS succeeded tasks of the same month, each with two ledger
//! rows (two models) and its `task.succeeded` event. Timed: the real consumer runner
//! (`consumers::run_once`, batches of 100, one transaction per event) from the first of
//! those events to the last.
//!
//! MODE `usage` (the default) times the consumer as shipped (a round of up to 100 events
//! per transaction); `unbatched` the same handler with one transaction per event (the
//! runner's default); `noop` a batched consumer of the same events that does nothing (the
//! runner's own floor).
//!
//! rollup_bench DB_FILE TASKS CUSTOMERS HISTORY [MODE]

use std::sync::Arc;
use std::time::Instant;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::events::Kind;
use j1msky_db::consumers::{self, Runner};
use j1msky_db::Db;
use j1msky_insights::{usage, Ctx};

const NOW: i64 = 1_795_000_000_000_000; // 2026-11-18, UTC
const SEC: i64 = 1_000_000;

/// Tasks `from..from + n` (succeeded, finished before NOW), their ledger and, when
/// `events`, their `task.succeeded` events.
async fn tasks(db: &Db, from: i64, n: i64, customers: i64, events: bool) {
    let chunk = 100_000;
    let mut at = from;
    while at < from + n {
        let to = (at + chunk).min(from + n);
        let mut tx = db.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, not_before,
                 queued_at, started_at, finished_at, cost_micros)
             WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i < $2 - 1)
             SELECT printf('tsk_%09d', i), printf('cus_%08d', i % $3),
                    CASE i % 4 WHEN 0 THEN 'code' WHEN 1 THEN 'content' WHEN 2 THEN 'research' ELSE 'business' END,
                    'code', 't', 'p', 0, 'succeeded', $4 - 600 * $5, $4 - 600 * $5, $4 - 590 * $5,
                    $4 - (i * 7919 % 500) * $5, 25000
             FROM n",
        )
        .bind(at)
        .bind(to)
        .bind(customers)
        .bind(NOW)
        .bind(SEC)
        .execute(&mut *tx)
        .await
        .unwrap();
        for (step, model, cost) in [(0, "kimi-k2.5", 5_000), (1, "claude-sonnet", 20_000)] {
            sqlx::query(
                "INSERT INTO llm_calls (id, request_id, attempt, customer_id, task_id, team, provider, model_requested,
                     model_used, input_tokens, output_tokens, cost_micros, outcome, created_at)
                 SELECT 'llm_' || id || '_' || $1, id || '.s' || $1, 1, customer_id, id, team, 'sim', $2, $2,
                        1000, 1500, $3, 'ok', finished_at - 10 * $4
                 FROM tasks WHERE id >= printf('tsk_%09d', $5) AND id < printf('tsk_%09d', $6)",
            )
            .bind(step)
            .bind(model)
            .bind(cost)
            .bind(SEC)
            .bind(at)
            .bind(to)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        if events {
            sqlx::query(
                "INSERT INTO events (id, kind, customer_id, payload, created_at)
                 SELECT 'evt_' || id, 'task.succeeded', customer_id,
                        '{\"v\":' || $1 || ',\"task_id\":\"' || id || '\",\"team\":\"' || team ||
                        '\",\"steps\":2,\"cost_micros\":25000,\"tier\":null,\"charge_micros\":null}', finished_at
                 FROM tasks WHERE id >= printf('tsk_%09d', $2) AND id < printf('tsk_%09d', $3) ORDER BY id",
            )
            .bind(i64::from(Kind::TaskSucceeded.version()))
            .bind(at)
            .bind(to)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        at = to;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = &args[1];
    let n: i64 = args.get(2).map_or(20_000, |s| s.parse().unwrap());
    let customers: i64 = args.get(3).map_or(10_000, |s| s.parse().unwrap());
    let history: i64 = args.get(4).map_or(0, |s| s.parse().unwrap());
    let db = Db::connect(&format!("sqlite://{file}")).await.unwrap();
    db.migrate().await.unwrap();
    sqlx::query(
        "INSERT INTO customers (id, name, stage, plan, created_at, updated_at, stage_changed_at)
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
         SELECT printf('cus_%08d', i), 'Customer ' || i, 'active', 'pro', $2, $2, $2 FROM n",
    )
    .bind(customers)
    .bind(NOW - 100 * 86_400 * SEC)
    .execute(db.pool())
    .await
    .unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let ctx = Ctx {
        db: db.clone(),
        catalogue: Arc::new(Catalogue::from_json_str(SHIPPED).unwrap()).into(),
        clock: clock.clone(),
    };
    let setup = Instant::now();
    let mut rebuild = 0.0;
    if history > 0 {
        tasks(&db, 0, history, customers, false).await;
        let started = Instant::now();
        usage::rebuild(&ctx).await.unwrap();
        rebuild = started.elapsed().as_secs_f64();
    }
    tasks(&db, history, n, customers, true).await;
    let setup = setup.elapsed();

    let mode = args.get(5).map_or("usage", String::as_str);
    let noop = mode == "noop";
    let all = match mode {
        "noop" => {
            vec![consumers::Consumer::new("bench.noop", usage::KINDS, consumers::OnFailure::SkipAndPark, Noop).batched()]
        }
        "unbatched" => usage::consumers(&ctx)
            .into_iter()
            .map(|mut c| {
                c.batched = false;
                c
            })
            .collect(),
        _ => usage::consumers(&ctx),
    };
    let runner = Runner::new("bench");
    let started = Instant::now();
    let mut handled = 0;
    loop {
        let p = consumers::run_once(&db, &runner, &all, clock.as_ref()).await.unwrap();
        assert_eq!(p.failed, 0);
        handled += p.handled;
        if p.handled + p.passed == 0 {
            break;
        }
    }
    let took = started.elapsed().as_secs_f64();
    assert_eq!(handled as i64, n, "every completion handled once");
    let (completed,): (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(tasks_completed), 0) AS BIGINT) FROM insights_usage")
            .fetch_one(db.pool())
            .await
            .unwrap();
    if !noop {
        assert_eq!(completed, n + history, "the rollups count every task once");
    }
    // What the board then pays for the month's usage section (all tasks are in one month).
    let read = Instant::now();
    let month = usage::month(&ctx, ctx.this_month(), &j1msky_insights::kpis::Filter::default()).await.unwrap();
    let read = read.elapsed().as_secs_f64();
    if !noop {
        assert_eq!(month.tasks_completed, n + history);
    }
    println!(
        "{mode}: {n} completions in {took:.2} s = {:.0}/s (history {history} tasks, {customers} customers; \
         setup {:.1} s, of which usage::rebuild {rebuild:.1} s; usage::month {read:.2} s)",
        n as f64 / took,
        setup.as_secs_f64()
    );
}

struct Noop;

impl consumers::Handler for Noop {
    fn handle<'a>(
        &'a self,
        _: &'a mut sqlx::AnyConnection,
        _: j1msky_db::Backend,
        _: &'a j1msky_db::outbox::Event,
        _: i64,
    ) -> consumers::Handled<'a> {
        Box::pin(async { Ok(()) })
    }
}
