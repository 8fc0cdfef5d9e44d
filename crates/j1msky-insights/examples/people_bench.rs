// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The customer numbers at scale (issue 14 §4) on a SQLite file: CUSTOMERS customers
//! signed up evenly over 24 months (every one a lead at creation; 60 % qualified 1–48 h
//! later, 40 % on a trial 1–4 days after that, 25 % paying 1–14 days later), TASKS
//! succeeded tasks per customer spread over its first 10 days, an NPS answer from one
//! customer in ten. The harness writes the source tables with SQL; it measures
//! `people::rebuild` (the rollups from the source tables), then the customer section of
//! the board (`people::month` for the last month and a plan filter: cohorts, funnel,
//! NPS, spend), then the consumer handling EVENTS `task.succeeded` events.
//!
//! people_bench DB_FILE CUSTOMERS TASKS EVENTS

use std::sync::Arc;
use std::time::Instant;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_db::consumers::{self, Runner};
use j1msky_db::Db;
use j1msky_insights::kpis::{Filter, Mrr, Usage};
use j1msky_insights::{people, Ctx, Month};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// 2027-01-01 00:00 UTC: "now", the end of the 24 months of signups.
const NOW: i64 = 1_798_761_600_000_000;
const SPAN: i64 = 730 * DAY;

async fn exec(db: &Db, sql: &str, n: i64) {
    sqlx::query(sql).bind(n).bind(NOW - SPAN).bind(SPAN).bind(HOUR).execute(db.pool()).await.unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = &args[1];
    let customers: i64 = args.get(2).map_or(1_000_000, |s| s.parse().unwrap());
    let tasks: i64 = args.get(3).map_or(3, |s| s.parse().unwrap());
    let events: i64 = args.get(4).map_or(20_000, |s| s.parse().unwrap());
    let db = Db::connect(&format!("sqlite://{file}")).await.unwrap();
    db.migrate().await.unwrap();
    let started = Instant::now();
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers").fetch_one(db.pool()).await.unwrap();
    if existing == 0 {
        generate(&db, customers, tasks).await;
    }
    println!("{customers} customers, {} tasks ready in {:.1} s", customers * tasks, started.elapsed().as_secs_f64());
    measure(&db, customers, events).await;
}

/// Writes the source tables (see the module docs).
async fn generate(db: &Db, customers: i64, tasks: i64) {
    // $1 customers, $2 first signup, $3 span, $4 an hour. Customer i signs up at
    // $2 + i * $3 / $1; k = a fixed scramble of i decides its fate.
    let created = "$2 + (i * $3) / $1";
    exec(
        db,
        &format!(
            "INSERT INTO customers (id, name, stage, plan, created_at, updated_at, stage_changed_at)
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
             SELECT printf('cus_%08d', i), 'Customer ' || i, 'lead',
                    CASE i % 3 WHEN 0 THEN 'starter' WHEN 1 THEN 'pro' ELSE 'enterprise' END,
                    {created}, {created}, {created} FROM n"
        ),
        customers,
    )
    .await;
    let stage = |id: &str, to: &str, pct: i64, offset: &str| {
        format!(
            "INSERT INTO customer_stage_changes (id, customer_id, from_stage, to_stage, actor, at)
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
             SELECT printf('stg_{id}_%08d', i), printf('cus_%08d', i), NULL, '{to}', 'bench', {created} + {offset}
             FROM n WHERE (i * 7919) % 100 < {pct}"
        )
    };
    exec(db, &stage("l", "lead", 100, "0"), customers).await;
    exec(db, &stage("q", "qualified", 60, "(1 + i % 48) * $4"), customers).await;
    exec(db, &stage("t", "trial", 40, "(49 + i % 72) * $4"), customers).await;
    exec(db, &stage("a", "active", 25, "(121 + i % 312) * $4"), customers).await;
    exec(
        db,
        &format!(
            "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, not_before,
                                queued_at, started_at, finished_at)
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 * {tasks} - 1),
                  t(i, c, at) AS (SELECT i, i / {tasks}, $2 + ((i / {tasks}) * $3) / $1 + (i * 104729 % 240) * $4 FROM n)
             SELECT printf('tsk_%010d', i), printf('cus_%08d', c), 'code', 'code', 't', 'p', 0, 'succeeded',
                    at, at, at, at + $4 / 6 FROM t"
        ),
        customers,
    )
    .await;
    exec(
        db,
        &format!(
            "INSERT INTO lifecycle_surveys (id, customer_id, kind, token_digest, created_at, answered_at, score)
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 10 FROM n WHERE i < $1 - 10)
             SELECT printf('srv_%08d', i), printf('cus_%08d', i), 'nps', printf('d%08d', i),
                    {created} + 30 * 24 * $4, {created} + 31 * 24 * $4, i % 11 FROM n"
        ),
        customers,
    )
    .await;
}

/// Rebuild, the board's customer section, the consumer.
async fn measure(db: &Db, customers: i64, events: i64) {
    let clock = ManualClock::new(NOW - DAY);
    let ctx = Ctx {
        db: db.clone(),
        catalogue: Arc::new(Catalogue::from_json_str(SHIPPED).unwrap()).into(),
        clock: Arc::new(clock.clone()),
    };
    let t = Instant::now();
    people::rebuild(&ctx).await.unwrap();
    println!("people::rebuild: {:.2} s", t.elapsed().as_secs_f64());

    let month = Month::of(chrono_tz::UTC, NOW - DAY);
    people::set_spend(&ctx, month, 5_000_000, &j1msky_audit::Actor::cli()).await.unwrap();
    let (mrr, usage) = (Mrr { new_customers: 100, ..Mrr::default() }, Usage::default());
    for (label, filter) in [("all", Filter::default()), ("plan=pro", Filter { plan: Some("pro".into()), team: None })] {
        let mut best = f64::MAX;
        let mut out = None;
        for _ in 0..3 {
            let t = Instant::now();
            out = Some(people::month(&ctx, month, &filter, &mrr, &usage).await.unwrap());
            best = best.min(t.elapsed().as_secs_f64());
        }
        let c = out.unwrap();
        let last = c.activation.last().unwrap();
        println!(
            "people::month {month} ({label}): best of 3 {:.0} ms (cohort {} customers, {} activated; paid {}; nps {:?})",
            best * 1000.0,
            last.customers,
            last.activated,
            c.funnel.stages[3].entered,
            c.nps.map(|n| n.score)
        );
    }

    // The consumer: `events` task.succeeded events of customers signed up in the last week.
    let first_event: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events").fetch_one(db.pool()).await.unwrap();
    let runner = Runner::new("bench");
    let all = people::consumers(&ctx);
    consumers::run_once(db, &runner, &all, &clock).await.unwrap();
    sqlx::query(
        "INSERT INTO events (id, kind, customer_id, payload, created_at)
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
         SELECT printf('evt_b%08d', i), 'task.succeeded', printf('cus_%08d', $2 - 1 - (i % 1000)),
                '{\"v\":1,\"task_id\":\"tsk_x\",\"team\":\"code\",\"steps\":1,\"cost_micros\":0,\"tier\":null,\"charge_micros\":null}',
                $3 FROM n",
    )
    .bind(events)
    .bind(customers)
    .bind(NOW - DAY)
    .execute(db.pool())
    .await
    .unwrap();
    let t = Instant::now();
    let mut handled = 0;
    loop {
        let p = consumers::run_once(db, &runner, &all, &clock).await.unwrap();
        handled += p.handled;
        if p.handled + p.passed == 0 {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "consumer insights.people: {handled} task.succeeded events (after seq {first_event}) in {secs:.2} s = {:.0}/s",
        handled as f64 / secs
    );
}
