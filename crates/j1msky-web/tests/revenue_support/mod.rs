//! Helpers shared by the revenue tests: the fake Stripe's controls, settling delivered
//! events the way the billing side does, subscribers and pay-per-task charges.

#![allow(dead_code)]

use std::time::Duration;

use j1msky_billing::checkout::{self, CheckoutRequest};
use j1msky_billing::{apply, changes, webhook, Stripe};
use j1msky_core::vocab::Stage;
use j1msky_sim::stripe::RunningStripe;
use serde_json::{json, Value};

use crate::common::TestApp;

pub async fn control(fake: &RunningStripe, path: &str, body: Value) -> Value {
    let r =
        reqwest::Client::new().post(format!("{}/_sim/{path}", fake.base())).json(&body).send().await.expect("control");
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap_or_default());
    r.json().await.expect("json")
}

pub async fn fake_state(fake: &RunningStripe) -> Value {
    reqwest::get(format!("{}/_sim/state", fake.base())).await.expect("state").json().await.expect("json")
}

pub async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(app.db.pool()).await.expect(sql);
    n
}

pub async fn ledger(app: &TestApp, customer: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM revenue_entries WHERE customer_id = $1",
    )
    .bind(customer)
    .fetch_one(app.db.pool())
    .await
    .expect("ledger");
    n
}

/// Waits until every event the fake made (and has not held back) is stored here.
pub async fn delivered(app: &TestApp, fake: &RunningStripe) {
    for _ in 0..500 {
        let s = fake_state(fake).await;
        let made = s["events"].as_i64().unwrap_or(0) - s["held"].as_i64().unwrap_or(0);
        if made > 0 && count(app, "SELECT COUNT(*) FROM stripe_events").await >= made {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the fake did not deliver its webhooks");
}

/// What the billing side does with delivered events: completes what Stripe sent only in
/// part, then applies everything pending.
pub async fn settle(app: &TestApp, fake: &RunningStripe, stripe: &Stripe) {
    delivered(app, fake).await;
    app.clock.advance_secs(1);
    j1msky_billing::invoice_lines::complete_pending(&app.db, stripe).await.expect("invoice lines");
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    while webhook::apply_pending(&app.db, &ctx, 100, app.now()).await.expect("apply") > 0 {}
    j1msky_accounts::reactions::catch_up(&app.db, &app.clock).await.expect("accounts reactions");
}

pub async fn customer(app: &TestApp, name: &str) -> String {
    j1msky_accounts::customers::create(
        &app.db,
        &app.catalogue,
        &j1msky_audit::Actor::cli(),
        j1msky_accounts::customers::NewCustomer {
            name: name.into(),
            contact_email: Some(format!("{}@example.test", name.to_lowercase().replace(' ', "-"))),
            stage: Some(Stage::Qualified),
            ..Default::default()
        },
        app.now(),
    )
    .await
    .expect("customer")
    .id
}

/// A customer subscribed to `plan` through a completed checkout.
pub async fn subscriber(
    app: &TestApp,
    fake: &RunningStripe,
    stripe: &Stripe,
    name: &str,
    plan: &str,
) -> (String, String) {
    let id = customer(app, name).await;
    // These customers pay from the first day: their free trial is spent.
    j1msky_billing::offers::record_trial_had(&app.db, &id, "cli", app.now()).await.expect("trial had");
    let req = CheckoutRequest {
        plan: plan.into(),
        success_url: "https://app.example.test/app/billing?done=1".into(),
        cancel_url: "https://app.example.test/app/billing".into(),
        attempt: "1".into(),
    };
    let link = checkout::start(&app.db, stripe, &app.catalogue, &id, &req, app.now()).await.expect("checkout");
    control(fake, &format!("checkout/{}/complete", link.session_id), json!({})).await;
    settle(app, fake, stripe).await;
    let sub = changes::current(&app.db, &id).await.expect("current").expect("subscribed").id;
    (id, sub)
}

/// A succeeded pay-per-task task of `customer` and its charge, as the task worker writes them.
pub async fn charged_task(app: &TestApp, customer: &str, task: &str, micros: i64) {
    sqlx::query(
        "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, attempts, failures,
             not_before, queued_at) VALUES ($1, $2, 'code', 'code', 't', 'p', 0, 'succeeded', 1, 0, $3, $3)",
    )
    .bind(task)
    .bind(customer)
    .bind(app.now())
    .execute(app.db.pool())
    .await
    .expect("task");
    charge(app, customer, &format!("uch_{task}"), task, micros).await;
}

pub async fn charge(app: &TestApp, customer: &str, id: &str, task: &str, micros: i64) {
    app.clock.advance_secs(1);
    sqlx::query(
        "INSERT INTO usage_charges (id, customer_id, task_id, tier, amount_micros, created_at)
         VALUES ($1, $2, $3, 'simple', $4, $5)",
    )
    .bind(id)
    .bind(customer)
    .bind(task)
    .bind(micros)
    .bind(app.now())
    .execute(app.db.pool())
    .await
    .expect("charge");
}
