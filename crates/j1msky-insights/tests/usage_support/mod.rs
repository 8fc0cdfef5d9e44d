//! Shared by the usage tests and by the board's and `j1msky kpi`'s (which include this
//! file): one hand-computed month of revenue, cost and margins, written as the worker,
//! the operator and billing's real webhook applier write it.
//!
//! The month:
//! - **Acme** (pro, $99): invoice $99.00 paid on the 15th, its charge refunded $20 then
//!   $30 in all (`amount_refunded` is cumulative: $30 is refunded). Tasks on the 10th:
//!   a1 code, succeeded in 60 s: kimi 10,000 µ$ + sonnet 30,000 µ$;
//!   a2 content, succeeded in 120 s: sonnet 20,000 µ$;
//!   a3 code, failed in 30 s: kimi 5,000 µ$;
//!   a4 code: failed (kimi 3,000 µ$), retried by the operator, then succeeded (sonnet
//!   12,000 µ$), 300 s from queued to finished.
//!   So code costs 60,000 (kimi 18,000, sonnet 42,000), content 20,000: 3 : 1.
//!   Subscription 99,000,000 µ$ → code 74,250,000, content 24,750,000; refunds
//!   30,000,000 → code 22,500,000, content 7,500,000. Code's 51,750,000 split 3 : 7 →
//!   kimi 15,525,000, sonnet 36,225,000; content's 17,250,000 all sonnet.
//!   Revenue 69,000,000, cost 80,000, margin 68,920,000.
//! - **Bolt** (no plan: pays per task): 11 research tasks on the 10th, task i succeeded
//!   in 10·i s, each charged $0.50 and costing 100,000 µ$ on opus (1,000 in, 3,800 out).
//!   Its invoice has 12 lines: the 11 charges (50 ¢ each) and a $5.00 one-off line, so
//!   billing books 500 ¢ as the invoice's non-usage part. Revenue 5,000,000 + 5,500,000
//!   = 10,500,000, cost 1,100,000, margin 9,400,000.
//! - **Cold** (starter, $49): paid, no tasks: its 49,000,000 µ$ are `unattributed`.
//! - **Dud** (starter, $49): paid; one code task on the 12th, 90 s, opus 60,000,000 µ$
//!   (2,000,000 in, 2,000,000 out). Margin −11,000,000: the loss-maker.
//!
//! Totals: subscription 9,900 + 500 + 4,900 + 4,900 = 20,200 ¢; usage 550 ¢; refunds
//! 3,000 ¢; revenue 202,000,000 + 5,500,000 − 30,000,000 = 177,500,000 µ$; cost 80,000 +
//! 1,100,000 + 60,000,000 = 61,180,000; margin 116,320,000 = 6,553 bp. Completed 15
//! (a1, a2, a4, 11 × Bolt, Dud's), failed 1 (a3): 9,375 bp; cost per completed task
//! 61,180,000 ÷ 15 = 4,078,666.

#![allow(dead_code)]

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_billing::{apply, webhook};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::events::{TaskFailed, TaskRetried, TaskSucceeded, Typed};
use j1msky_core::vocab::Stage;
use j1msky_db::{outbox, Db};
use j1msky_insights::Month;
use serde_json::json;

pub const SEC: i64 = 1_000_000;
pub const NOV: Month = Month { year: 2026, month: 11 };

/// November `day` at `hour`:00 UTC (2026-11-01 00:00 UTC is 1,793,491,200 s).
pub fn at(day: u32, hour: u32) -> i64 {
    (1_793_491_200 + i64::from(day - 1) * 86_400 + i64::from(hour) * 3_600) * SEC
}

/// The month's customers.
pub struct November {
    pub acme: String,
    pub bolt: String,
    pub cold: String,
    pub dud: String,
}

pub async fn customer(db: &Db, name: &str, plan: Option<&str>, stripe: &str) -> String {
    let catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    let input = NewCustomer {
        name: name.into(),
        stage: Some(Stage::Active),
        plan: plan.map(String::from),
        chosen_teams: if plan == Some("starter") { vec!["code".into(), "content".into()] } else { vec![] },
        ..Default::default()
    };
    let id = customers::create(db, &catalogue, &j1msky_audit::Actor::cli(), input, at(1, 0)).await.unwrap().id;
    let mut tx = db.begin().await.unwrap();
    assert!(j1msky_accounts::customer_links::link_stripe(&mut tx, &id, stripe, at(1, 0)).await.unwrap());
    tx.commit().await.unwrap();
    id
}

/// A ledger row: (model, input tokens, output tokens, cost µ$, created at).
pub type Call<'a> = (&'a str, i64, i64, i64, i64);

pub async fn ledger(db: &Db, customer: &str, task: &str, team: &str, calls: &[Call<'_>]) {
    for (i, (model, input, output, cost, when)) in calls.iter().enumerate() {
        sqlx::query(
            "INSERT INTO llm_calls (id, request_id, attempt, customer_id, task_id, team, provider, model_requested,
                 model_used, input_tokens, output_tokens, cost_micros, outcome, created_at)
             VALUES ($1, $2, 1, $3, $4, $5, 'sim', $6, $6, $7, $8, $9, 'ok', $10)",
        )
        .bind(j1msky_core::ids::new_id("llm"))
        .bind(format!("{task}.{i}.{when}"))
        .bind(customer)
        .bind(task)
        .bind(team)
        .bind(*model)
        .bind(*input)
        .bind(*output)
        .bind(*cost)
        .bind(*when)
        .execute(db.pool())
        .await
        .unwrap();
    }
}

/// Direct API calls (no task) of `customer` on November `day`, an hour apart from 08:00:
/// (model, cost µ$) each.
pub async fn direct_calls(db: &Db, customer: &str, day: u32, calls: &[(&str, i64)]) {
    for (i, (model, cost)) in calls.iter().enumerate() {
        sqlx::query(
            "INSERT INTO llm_calls (id, request_id, attempt, customer_id, provider, model_requested, model_used,
                 input_tokens, output_tokens, cost_micros, outcome, created_at)
             VALUES ($1, $2, 1, $3, 'sim', $4, $4, 10, 10, $5, 'ok', $6)",
        )
        .bind(j1msky_core::ids::new_id("llm"))
        .bind(format!("req_{customer}_{day}_{i}"))
        .bind(customer)
        .bind(*model)
        .bind(*cost)
        .bind(at(day, 8 + i as u32))
        .execute(db.pool())
        .await
        .unwrap();
    }
}

/// Writes the task in its end state with its event, as the worker (or the operator's
/// retry) does: one transaction.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    db: &Db,
    customer: &str,
    task: &str,
    team: &str,
    state: &str,
    queued: i64,
    secs: i64,
    charge: Option<i64>,
) {
    let finished = queued + secs * SEC;
    let mut tx = db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, not_before, queued_at,
             finished_at, charge_micros)
         VALUES ($1, $2, $3, $3, 't', 'p', 0, $4, $5, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, finished_at = excluded.finished_at,
             charge_micros = excluded.charge_micros",
    )
    .bind(task)
    .bind(customer)
    .bind(team)
    .bind(state)
    .bind(queued)
    .bind(finished)
    .bind(charge)
    .execute(&mut *tx)
    .await
    .unwrap();
    if let Some(amount) = charge {
        sqlx::query(
            "INSERT INTO usage_charges (id, customer_id, task_id, tier, amount_micros, created_at)
             VALUES ($1, $2, $3, 'simple', $4, $5)",
        )
        .bind(format!("uch_{task}"))
        .bind(customer)
        .bind(task)
        .bind(amount)
        .bind(finished)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let event: Typed = match state {
        "succeeded" => TaskSucceeded {
            task_id: task.into(),
            team: team.into(),
            steps: 1,
            cost_micros: 0,
            tier: charge.map(|_| "simple".into()),
            charge_micros: charge,
        }
        .into(),
        _ => TaskFailed { task_id: task.into(), team: team.into(), error: "boom".into(), failures: 3 }.into(),
    };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(customer), finished).await.unwrap();
    tx.commit().await.unwrap();
}

pub async fn retry(db: &Db, customer: &str, task: &str, now: i64) {
    let mut tx = db.begin().await.unwrap();
    sqlx::query("UPDATE tasks SET state = 'queued', finished_at = NULL WHERE id = $1")
        .bind(task)
        .execute(&mut *tx)
        .await
        .unwrap();
    outbox::emit_typed(
        &mut tx,
        db.backend(),
        TaskRetried { task_id: task.into(), by: "ops".into() },
        Some(customer),
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

pub async fn stripe(db: &Db, catalogue: &Catalogue, id: &str, kind: &str, created: i64, object: serde_json::Value) {
    let event = json!({"id": id, "object": "event", "type": kind, "created": created / SEC, "livemode": false,
                       "data": {"object": object}});
    webhook::store(db, &event, created).await.unwrap();
    let ctx = apply::Ctx { catalogue };
    while webhook::apply_pending(db, &ctx, 100, created).await.unwrap() > 0 {}
}

pub fn invoice(id: &str, stripe_customer: &str, paid: i64, lines: Vec<serde_json::Value>) -> serde_json::Value {
    let total: i64 = lines.iter().map(|l| l["amount"].as_i64().unwrap()).sum();
    json!({"id": id, "object": "invoice", "customer": stripe_customer, "amount_paid": total, "currency": "usd",
           "status": "paid", "status_transitions": {"paid_at": paid / SEC},
           "lines": {"object": "list", "has_more": false, "data": lines}})
}

pub fn plan_line(plan: &str, cents: i64) -> serde_json::Value {
    json!({"id": format!("il_{plan}"), "type": "subscription", "amount": cents,
           "price": {"id": format!("price_{plan}"), "lookup_key": format!("j1msky_{plan}_monthly")}})
}

/// Writes the month into `db` (the shipped catalogue: business zone UTC).
pub async fn november(db: &Db, catalogue: &Catalogue) -> November {
    let acme = customer(db, "Acme", Some("pro"), "cus_A").await;
    let bolt = customer(db, "Bolt", None, "cus_B").await;
    let cold = customer(db, "Cold", Some("starter"), "cus_C").await;
    let dud = customer(db, "Dud", Some("starter"), "cus_D").await;

    let d10 = at(10, 9);
    ledger(db, &acme, "a1", "code", &[("kimi-k2.5", 0, 0, 10_000, d10), ("claude-sonnet", 0, 0, 30_000, d10)]).await;
    finish(db, &acme, "a1", "code", "succeeded", d10, 60, None).await;
    ledger(db, &acme, "a2", "content", &[("claude-sonnet", 0, 0, 20_000, d10)]).await;
    finish(db, &acme, "a2", "content", "succeeded", d10, 120, None).await;
    ledger(db, &acme, "a3", "code", &[("kimi-k2.5", 0, 0, 5_000, d10)]).await;
    finish(db, &acme, "a3", "code", "failed", d10, 30, None).await;
    ledger(db, &acme, "a4", "code", &[("kimi-k2.5", 0, 0, 3_000, d10)]).await;
    finish(db, &acme, "a4", "code", "failed", d10, 20, None).await;
    retry(db, &acme, "a4", d10 + 100 * SEC).await;
    ledger(db, &acme, "a4", "code", &[("claude-sonnet", 0, 0, 12_000, d10 + 200 * SEC)]).await;
    finish(db, &acme, "a4", "code", "succeeded", d10, 300, None).await;
    let mut lines = Vec::new();
    for i in 1..=11 {
        let task = format!("b{i}");
        ledger(db, &bolt, &task, "research", &[("claude-opus", 1_000, 3_800, 100_000, d10)]).await;
        finish(db, &bolt, &task, "research", "succeeded", d10, 10 * i, Some(500_000)).await;
        lines.push(json!({"id": format!("il_b{i}"), "amount": 50, "metadata": {"j1msky_task": task}}));
    }
    lines.push(json!({"id": "il_setup", "amount": 500, "description": "onboarding session"}));
    let d12 = at(12, 9);
    ledger(db, &dud, "d1", "code", &[("claude-opus", 2_000_000, 2_000_000, 60_000_000, d12)]).await;
    finish(db, &dud, "d1", "code", "succeeded", d12, 90, None).await;

    let d15 = at(15, 9);
    stripe(db, catalogue, "evt_a", "invoice.paid", d15, invoice("in_A", "cus_A", d15, vec![plan_line("pro", 9_900)]))
        .await;
    stripe(db, catalogue, "evt_b", "invoice.paid", d15, invoice("in_B", "cus_B", d15, lines)).await;
    let starter = || vec![plan_line("starter", 4_900)];
    stripe(db, catalogue, "evt_c", "invoice.paid", d15, invoice("in_C", "cus_C", d15, starter())).await;
    stripe(db, catalogue, "evt_d", "invoice.paid", d15, invoice("in_D", "cus_D", d15, starter())).await;
    for (n, (day, refunded)) in [(20, 2_000), (21, 3_000)].into_iter().enumerate() {
        let charge = json!({"id": "ch_A", "object": "charge", "customer": "cus_A", "invoice": "in_A",
                            "amount_refunded": refunded, "currency": "usd"});
        stripe(db, catalogue, &format!("evt_r{n}"), "charge.refunded", at(day, 9), charge).await;
    }
    November { acme, bolt, cold, dud }
}

/// The month's totals worked out above, as `Usage`'s fields name them.
pub const TOTALS: &[(&str, i64)] = &[
    ("subscription_revenue_cents", 20_200),
    ("usage_revenue_cents", 550),
    ("refunds_cents", 3_000),
    ("revenue_micros", 177_500_000),
    ("model_cost_micros", 61_180_000),
    ("gross_margin_micros", 116_320_000),
    ("gross_margin_bp", 6_553),
    ("tasks_completed", 15),
    ("tasks_failed", 1),
    ("success_rate_bp", 9_375),
    ("cost_per_completed_task_micros", 4_078_666),
];

/// Each customer's (name, revenue µ$, cost µ$, margin µ$, tasks), the loss-makers first.
pub const BY_CUSTOMER: &[(&str, i64, i64, i64, i64)] = &[
    ("Dud", 49_000_000, 60_000_000, -11_000_000, 1),
    ("Bolt", 10_500_000, 1_100_000, 9_400_000, 11),
    ("Cold", 49_000_000, 0, 49_000_000, 0),
    ("Acme", 69_000_000, 80_000, 68_920_000, 3),
];

/// Completion times per team (team, tasks, median ms, p90 ms), by nearest rank: code
/// [60, 90, 300] s; content 120 s; research 10..110 s (the 6th and the 10th).
pub const COMPLETION: &[(&str, i64, i64, i64)] =
    &[("code", 3, 90_000, 300_000), ("content", 1, 120_000, 120_000), ("research", 11, 60_000, 100_000)];
