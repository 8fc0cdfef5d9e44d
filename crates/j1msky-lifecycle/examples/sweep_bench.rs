// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Retention trigger sweep benchmark (issue 13 §6): the hourly sweep over N customers on
//! a SQLite file. The harness writes customers and their activity read model directly
//! with SQL: last activity spread evenly over the past 60 days, 10 % churned (never
//! nudged), 10 % on a trial, the rest active, plus a year of churn events for the spike
//! rule. The levels stored are those a sweep `LAG_HOURS` earlier left, so the measured
//! sweep fires what crossed a threshold since (steady state: LAG_HOURS = 1).
//!
//! sweep_bench DB_FILE CUSTOMERS LAG_HOURS

use std::sync::Arc;
use std::time::Instant;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_db::Db;
use j1msky_lifecycle::{transport::Recording, triggers, Ctx};

const MIN: i64 = 60_000_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
const NOW: i64 = 1_800_000_000_000_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = &args[1];
    let customers: i64 = args.get(2).map_or(1_000_000, |s| s.parse().unwrap());
    let lag_hours: i64 = args.get(3).map_or(1, |s| s.parse().unwrap());
    let db = Db::connect(&format!("sqlite://{file}")).await.unwrap();
    db.migrate().await.unwrap();

    let started = Instant::now();
    let spread_minutes = 60 * 24 * 60; // 60 days
    sqlx::query(
        "INSERT INTO customers (id, name, stage, created_at, updated_at, stage_changed_at)
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
         SELECT printf('cus_%08d', i), 'Customer ' || i,
                CASE i % 10 WHEN 0 THEN 'churned' WHEN 1 THEN 'trial' ELSE 'active' END, $2, $2, $2
         FROM n",
    )
    .bind(customers)
    .bind(NOW - 400 * DAY)
    .execute(db.pool())
    .await
    .unwrap();
    // Last activity: minute offsets spread over 60 days (a fixed permutation of i).
    let prev = NOW - lag_hours * HOUR;
    sqlx::query(
        "INSERT INTO lifecycle_activity (customer_id, last_active_at, inactive_level)
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1),
              a(i, at) AS (SELECT i, $2 - ((i * 7919) % $3) * $4 FROM n)
         SELECT printf('cus_%08d', i), at,
                CASE WHEN i % 10 = 0 THEN 3
                     WHEN at <= $5 - $6 THEN 3 WHEN at <= $5 - $7 THEN 2 WHEN at <= $5 - $8 THEN 1 ELSE 0 END
         FROM a",
    )
    .bind(customers)
    .bind(NOW)
    .bind(spread_minutes)
    .bind(MIN)
    .bind(prev)
    .bind(14 * DAY)
    .bind(7 * DAY)
    .bind(3 * DAY)
    .execute(db.pool())
    .await
    .unwrap();
    // A year of churn: every churned customer's move to `churned`, evenly spread.
    sqlx::query(
        "INSERT INTO events (id, kind, customer_id, payload, created_at)
         SELECT 'evt_' || id, 'customer.stage_changed', id, '{\"v\":1,\"from\":\"active\",\"to\":\"churned\"}',
                $1 - (CAST(substr(id, 5) AS INTEGER) * 7919 % 365) * $2
         FROM customers WHERE stage = 'churned'",
    )
    .bind(NOW)
    .bind(DAY)
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(db.pool()).await.unwrap();
    let setup = started.elapsed();

    let ctx = Ctx {
        db: db.clone(),
        catalogue: Arc::new(Catalogue::from_json_str(SHIPPED).unwrap()).into(),
        clock: Arc::new(ManualClock::new(NOW)),
        transport: Arc::new(Recording::default()),
        stripe: None,
        base_url: "http://localhost".into(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    };
    let t = Instant::now();
    let fired = triggers::sweep(&ctx, NOW, false).await.unwrap();
    let first = t.elapsed();
    let t = Instant::now();
    let again = triggers::sweep(&ctx, NOW, false).await.unwrap();
    let second = t.elapsed();
    assert!(again.is_empty(), "a second sweep at the same time fires nothing");
    let (enrolled,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM lifecycle_enrollments").fetch_one(db.pool()).await.unwrap();
    let (todos,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM lifecycle_todos").fetch_one(db.pool()).await.unwrap();
    let by = |t: &str| fired.iter().filter(|f| f.trigger == t).count();
    println!(
        "customers={customers} lag_hours={lag_hours} setup_s={:.1} sweep_s={:.3} fired={} (inactive={} outreach={} offer={} churn_spike={}) enrollments={enrolled} todos={todos} idle_sweep_s={:.3}",
        setup.as_secs_f64(),
        first.as_secs_f64(),
        fired.len(),
        by("inactive"),
        by("inactive_outreach"),
        by("inactive_offer"),
        by("churn_spike"),
        second.as_secs_f64(),
    );
}
