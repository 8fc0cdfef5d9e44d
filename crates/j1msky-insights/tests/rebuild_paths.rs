// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! `kpi rebuild` on a SQLite file, where `rollups::rebuild` runs on two connections of its
//! own (usage summed, MRR and the people rows computed on a reading thread; everything
//! written on another): it must write the rows the modules' own rebuilds write one after
//! another on one connection, and a rebuild that runs while consumers handle new events
//! must neither lose nor count twice anything they add. Both tests use SQLite files
//! whatever `J1MSKY_TEST_BACKEND` names: the two-connection shape is SQLite's.

use std::collections::BTreeMap;
use std::sync::Arc;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::events::{TaskFailed, TaskSucceeded, Typed};
use j1msky_db::consumers::{self, Runner};
use j1msky_db::testing::TestDb;
use j1msky_db::{outbox, Backend, Db};
use j1msky_insights::{mrr, people, rollups, usage, Ctx};
use sqlx::Row;

const SEC: i64 = 1_000_000;
const DAY: i64 = 86_400 * SEC;
const CUSTOMERS: usize = 120;
const TEAMS: [&str; 3] = ["code", "content", "research"];
const MODELS: [&str; 3] = ["kimi-k2.5", "claude-sonnet", "claude-opus"];
const PLANS: [Option<&str>; 3] = [Some("pro"), Some("starter"), None];

fn at(month: u32, day: u32, hour: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, month, day)
        .unwrap()
        .and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

fn ctx(db: &Db) -> Ctx {
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    Ctx { db: db.clone(), catalogue: catalogue.into(), clock: Arc::new(ManualClock::new(at(11, 28, 12))) }
}

async fn exec(db: &Db, sql: &str, values: &[Option<String>]) {
    let mut q = sqlx::query(sql);
    for v in values {
        q = q.bind(v.clone());
    }
    q.execute(db.pool()).await.unwrap();
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// Customers with stage histories, subscription histories (one unlinked Stripe customer,
/// a discount that ends, a cancellation), paid invoices and a refund, and tasks with their
/// ledgers from September to November (every eleventh task still running).
async fn world(db: &Db) {
    for i in 0..CUSTOMERS {
        let (id, created) = (format!("cus_{i:04}"), at(9, 1 + (i % 28) as u32, 9));
        exec(
            db,
            "INSERT INTO customers (id, name, stage, plan, created_at, updated_at, stage_changed_at)
             VALUES ($1, $1, 'active', $2, CAST($3 AS BIGINT), CAST($3 AS BIGINT), CAST($3 AS BIGINT))",
            &[s(&id), PLANS[i % 3].map(String::from), s(created)],
        )
        .await;
        for (k, stage) in ["lead", "trial", "active"].into_iter().enumerate().take(1 + i % 3) {
            exec(
                db,
                "INSERT INTO customer_stage_changes (id, customer_id, to_stage, actor, at)
                 VALUES ($1, $2, $3, 'test', CAST($4 AS BIGINT))",
                &[s(format!("csc_{i}_{k}")), s(&id), s(stage), s(created + k as i64 * DAY)],
            )
            .await;
        }
        let Some(plan) = PLANS[i % 3] else { continue };
        // Unlinked (no customer of ours) for one customer in ten.
        let linked = (i % 10 != 7).then(|| id.clone());
        let versions: Vec<(i64, &str, i64)> = match i % 4 {
            0 => vec![(at(9, 3, 0), "active", 4_900), (at(10, 12, 0), "active", 9_900)],
            1 => vec![(at(9, 5, 0), "active", 9_900), (at(11, 2, 0), "canceled", 9_900)],
            _ => vec![(at(9, 20, 0), "trialing", 2_900), (at(10, 4, 0), "active", 2_900)],
        };
        for (v, (effective, status, amount)) in versions.into_iter().enumerate() {
            let (bp, end) = if i % 5 == 0 { (s(2_000), s(at(10, 20, 0))) } else { (None, None) };
            exec(
                db,
                "INSERT INTO subscription_history (subscription_id, version, customer_id, stripe_customer_id, status,
                     plan, currency, amount_cents, quantity, discount_percent_bp, discount_amount_cents,
                     discount_end, effective_at, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'usd', CAST($7 AS BIGINT), 1, CAST($8 AS BIGINT), NULL,
                         CAST($9 AS BIGINT), CAST($10 AS BIGINT), CAST($10 AS BIGINT))",
                &[
                    s(format!("sub_{i}")),
                    s(format!("{effective:012}:{v}")),
                    linked.clone(),
                    s(format!("stripe_{i}")),
                    s(status),
                    s(plan),
                    s(amount),
                    bp,
                    end,
                    s(effective),
                ],
            )
            .await;
        }
        for (k, (kind, cents, when)) in [("invoice_paid", 4_900, at(10, 1, 3)), ("invoice_paid", 4_900, at(11, 1, 3))]
            .into_iter()
            .chain((i % 9 == 4).then_some(("refund", -1_500, at(11, 9, 3))))
            // Stripe's fee on some payments (billing books it negative).
            .chain((i % 4 == 1).then_some(("stripe_fee", -173, at(10, 1, 3))))
            .enumerate()
        {
            exec(
                db,
                "INSERT INTO revenue_entries (id, source_id, kind, customer_id, plan, amount_cents, currency,
                     occurred_at, recorded_at)
                 VALUES ($1, $1, $2, $3, $4, CAST($5 AS BIGINT), 'usd', CAST($6 AS BIGINT), CAST($6 AS BIGINT))",
                &[s(format!("rev_{i}_{k}")), s(kind), s(&id), s(plan), s(cents), s(when)],
            )
            .await;
        }
    }
    for i in 0..900 {
        add_task(db, i, false).await;
    }
}

/// Task `i` (finished unless every eleventh) with one to three ledger rows; with `event`,
/// its outcome is emitted to the outbox as the task runner would.
async fn add_task(db: &Db, i: usize, event: bool) {
    let customer = format!("cus_{:04}", i % CUSTOMERS);
    let team = TEAMS[i % 3];
    // Tasks that arrive with an event finish in late November, after every earlier one: a
    // customer's first success is counted once, when it comes (as in production).
    let queued = if event {
        at(11, 27, 0) + i as i64 * SEC * 60
    } else {
        at(9 + (i % 3) as u32, 2 + (i % 26) as u32, (i % 20) as u32)
    };
    let state = match i % 11 {
        0 => "running",
        3 => "failed",
        _ => "succeeded",
    };
    let finished = (state != "running").then_some(queued + (40 + (i % 30) as i64) * SEC);
    let task = format!("task_{:05}", (i * 7919) % 100_000);
    let mut tx = db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, not_before, queued_at,
             finished_at, charge_micros)
         VALUES ($1, $2, $3, $3, 't', 'p', 0, $4, $5, $5, $6, $7)",
    )
    .bind(&task)
    .bind(&customer)
    .bind(team)
    .bind(state)
    .bind(queued)
    .bind(finished)
    .bind((state == "succeeded" && i % 3 == 2).then_some(300_000 + i as i64))
    .execute(&mut *tx)
    .await
    .unwrap();
    for step in 0..=(i % 3) {
        sqlx::query(
            "INSERT INTO llm_calls (id, request_id, attempt, customer_id, task_id, team, provider, model_requested,
                 model_used, input_tokens, output_tokens, cost_micros, outcome, created_at)
             VALUES ($1, $1, 1, $2, $3, $4, 'sim', $5, $5, 100, 200, $6, 'ok', $7)",
        )
        .bind(format!("llm_{i}_{step}"))
        .bind(&customer)
        .bind(&task)
        .bind(team)
        .bind(MODELS[(i + step) % 3])
        .bind(2_000 + ((i * 31 + step) % 700) as i64 * 100)
        .bind(queued + (step as i64 + 1) * SEC)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let typed: Option<Typed> = match (state, event) {
        ("succeeded", true) => Some(
            TaskSucceeded {
                task_id: task.clone(),
                team: team.into(),
                steps: 1,
                cost_micros: 0,
                tier: None,
                charge_micros: None,
            }
            .into(),
        ),
        ("failed", true) => {
            Some(TaskFailed { task_id: task.clone(), team: team.into(), error: "x".into(), failures: 3 }.into())
        }
        _ => None,
    };
    if let (Some(e), Some(f)) = (typed, finished) {
        outbox::emit_typed(&mut tx, db.backend(), e, Some(&customer), f).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Every rollup table's rows as text, sorted, by table.
async fn rollup_rows(db: &Db) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'insights_%' ORDER BY name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        let mut rows: Vec<String> = Vec::new();
        for r in sqlx::query(&format!("SELECT * FROM {t}")).fetch_all(db.pool()).await.unwrap() {
            let cells: Vec<String> = (0..r.len())
                .map(|i| match r.try_get::<Option<i64>, _>(i) {
                    Ok(v) => v.map_or("NULL".into(), |v| v.to_string()),
                    Err(_) => r.try_get::<Option<String>, _>(i).unwrap().unwrap_or_else(|| "NULL".into()),
                })
                .collect();
            rows.push(cells.join("|"));
        }
        rows.sort();
        out.insert(t, rows);
    }
    out
}

async fn catch_up(ctx: &Ctx) {
    let runner = Runner::new("test");
    let all = rollups::consumers(ctx);
    loop {
        let p = consumers::run_once(&ctx.db, &runner, &all, ctx.clock.as_ref()).await.unwrap();
        assert_eq!(p.failed, 0, "a rollup handler failed");
        if p.handled + p.passed == 0 {
            return;
        }
    }
}

#[tokio::test]
async fn the_two_connection_rebuild_writes_the_rows_of_the_modules_rebuilt_one_by_one() {
    let t = TestDb::on(Backend::Sqlite).await;
    assert!(t.db.sqlite_file().is_some());
    let ctx = ctx(&t.db);
    world(&t.db).await;
    rollups::rebuild(&ctx).await.unwrap();
    let both = rollup_rows(&t.db).await;
    for table in [
        "insights_tasks",
        "insights_usage",
        "insights_model_cost",
        "insights_pieces",
        "insights_split",
        "insights_margins",
        "insights_revenue",
        "insights_mrr_customer_months",
        "insights_mrr_months",
        "insights_people",
    ] {
        assert!(!both[table].is_empty(), "{table} is empty: the world should fill it");
    }
    assert!(both["insights_mrr_customer_months"].iter().any(|r| r.contains("stripe:")), "an unlinked customer");
    // Each module alone, on one connection, in its own transaction.
    mrr::rebuild(&ctx).await.unwrap();
    usage::rebuild(&ctx).await.unwrap();
    people::rebuild(&ctx).await.unwrap();
    let one_by_one = rollup_rows(&t.db).await;
    for (table, rows) in &both {
        assert_eq!(rows, &one_by_one[table], "{table}: the two-connection rebuild and the modules' disagree");
    }
}

#[tokio::test]
async fn a_rebuild_racing_the_consumers_loses_nothing_and_counts_nothing_twice() {
    let t = TestDb::on(Backend::Sqlite).await;
    let ctx = ctx(&t.db);
    world(&t.db).await;
    rollups::rebuild(&ctx).await.unwrap();
    // New outcomes arrive and the consumers handle them while a rebuild runs.
    let more = async {
        for i in 900..1_100 {
            add_task(&t.db, i, true).await;
            if i % 20 == 0 {
                catch_up(&ctx).await;
            }
        }
    };
    let (rebuilt, ()) = tokio::join!(rollups::rebuild(&ctx), more);
    rebuilt.unwrap();
    catch_up(&ctx).await;
    let kept = rollup_rows(&t.db).await;
    rollups::rebuild(&ctx).await.unwrap();
    let again = rollup_rows(&t.db).await;
    for (table, rows) in &again {
        assert_eq!(rows, &kept[table], "{table}: consumers racing a rebuild kept other rows than a rebuild after");
    }
    let tasks = kept["insights_tasks"].len();
    assert!(tasks > 900, "the new tasks are counted: {tasks} rows");
}

/// The usage rollups a file rebuild merges, each with its primary key and a column to
/// make wrong.
const MERGED: [(&str, &[&str], &str); 6] = [
    ("insights_tasks", &["task_id"], "cost_micros"),
    ("insights_usage", &["month", "customer_id", "team"], "cost_micros"),
    ("insights_model_cost", &["month", "customer_id", "team", "model"], "calls"),
    ("insights_pieces", &["month", "customer_id", "team", "model"], "cost_micros"),
    ("insights_split", &["month", "team", "model", "plan"], "calls"),
    ("insights_margins", &["month", "customer_id", "team"], "margin_micros"),
];

/// Each table's indexes as the schema holds them.
async fn indexes(db: &Db) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name LIKE 'insights_%' ORDER BY name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rebuild_over_kept_rollups_writes_only_the_rows_that_differ() {
    let t = TestDb::on(Backend::Sqlite).await;
    let ctx = ctx(&t.db);
    world(&t.db).await;
    let schema = indexes(&t.db).await;
    // Empty rollups are filled: every row inserted.
    let first: BTreeMap<_, _> = rollups::rebuild(&ctx).await.unwrap().into_iter().collect();
    let right = rollup_rows(&t.db).await;
    for (table, ..) in MERGED {
        let c = first[table];
        assert_eq!((c.inserted, c.updated, c.deleted, c.kept), (right[table].len() as u64, 0, 0, 0), "{table}");
    }
    // Rows the consumers kept right: nothing written.
    let again: BTreeMap<_, _> = rollups::rebuild(&ctx).await.unwrap().into_iter().collect();
    for (table, ..) in MERGED {
        assert_eq!(again[table].written(), 0, "{table}: {:?}", again[table]);
        assert_eq!(again[table].kept, right[table].len() as u64, "{table}");
    }
    assert_eq!(rollup_rows(&t.db).await, right);
    // In every table: a value gone wrong, a row missing, and two rows that should not be
    // there, one before every key and one after (what a bug or a hand edit leaves). One
    // connection: the copied row waits in a temporary table.
    let mut conn = t.db.pool().acquire().await.unwrap();
    for (table, key, column) in MERGED {
        let keys = key.join(", ");
        let first_key = key[0];
        let lowest = format!("SELECT {keys} FROM {table} ORDER BY {keys} LIMIT 1");
        let middle =
            format!("SELECT {keys} FROM {table} ORDER BY {keys} LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM {table})");
        for sql in [
            format!("UPDATE {table} SET {column} = {column} + 7 WHERE ({keys}) IN ({lowest})"),
            format!("DELETE FROM {table} WHERE ({keys}) IN ({middle})"),
            format!("CREATE TEMP TABLE stray AS SELECT * FROM {table} LIMIT 1"),
            format!("UPDATE stray SET {first_key} = '~' || {first_key}"),
            format!("INSERT INTO {table} SELECT * FROM stray"),
            format!("UPDATE stray SET {first_key} = '!' || substr({first_key}, 2)"),
            format!("INSERT INTO {table} SELECT * FROM stray"),
            "DROP TABLE stray".to_string(),
        ] {
            sqlx::query(&sql).execute(&mut *conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    drop(conn);
    assert_ne!(rollup_rows(&t.db).await, right);
    let mended: BTreeMap<_, _> = rollups::rebuild(&ctx).await.unwrap().into_iter().collect();
    for (table, ..) in MERGED {
        let c = mended[table];
        assert_eq!((c.inserted, c.updated, c.deleted), (1, 1, 2), "{table}: {c:?}");
        assert_eq!(c.kept, right[table].len() as u64 - 2, "{table}");
    }
    assert_eq!(rollup_rows(&t.db).await, right, "the merged rollups are the rebuilt ones");
    // Every task row wrong and one rollup emptied: the first merged (every row updated),
    // the other filled, in the same rebuild.
    exec(&t.db, "UPDATE insights_tasks SET cost_micros = cost_micros + 1", &[]).await;
    exec(&t.db, "DELETE FROM insights_model_cost", &[]).await;
    let mixed: BTreeMap<_, _> = rollups::rebuild(&ctx).await.unwrap().into_iter().collect();
    let tasks = right["insights_tasks"].len() as u64;
    let c = mixed["insights_tasks"];
    assert_eq!((c.inserted, c.updated, c.deleted, c.kept), (0, tasks, 0, 0), "{c:?}");
    let c = mixed["insights_model_cost"];
    assert_eq!((c.inserted, c.kept), (right["insights_model_cost"].len() as u64, 0), "{c:?}");
    assert_eq!(mixed["insights_usage"].written(), 0);
    assert_eq!(rollup_rows(&t.db).await, right, "merged and filled alike");
    assert_eq!(indexes(&t.db).await, schema, "the indexes are as the migrations made them");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(t.db.pool()).await.unwrap();
    assert_eq!(check, "ok");
}
