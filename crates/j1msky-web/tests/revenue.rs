//! Revenue is counted once, under the right plan and date: invoices longer than the page
//! Stripe embeds, subscribers on a retired price, churn found by a reconcile after
//! downtime. The real server, a fake Stripe on loopback delivering signed webhooks to it.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;
use crate::support;

use common::{spawn_app_with_stripe, TestApp};
use j1msky_billing::{apply, changes, sync, usage, webhook};
use j1msky_core::vocab::Stage;
use serde_json::{json, Value};
use support::*;

async fn entry_of(app: &TestApp, invoice: &str) -> (Option<String>, i64) {
    sqlx::query_as("SELECT plan, amount_cents FROM revenue_entries WHERE source_id = $1")
        .bind(invoice)
        .fetch_one(app.db.pool())
        .await
        .expect("the invoice's ledger entry")
}

/// The newest invoice of a Stripe subscription, from the events the fake made.
async fn last_invoice(app: &TestApp, sub: &str) -> String {
    let (id,): (String,) = sqlx::query_as(
        "SELECT object_id FROM stripe_events WHERE type = 'invoice.paid' AND payload LIKE $1
         ORDER BY created DESC, received_at DESC LIMIT 1",
    )
    .bind(format!("%\"subscription\":\"{sub}\"%"))
    .fetch_one(app.db.pool())
    .await
    .expect("an invoice");
    id
}

#[tokio::test]
async fn an_invoice_longer_than_stripe_embeds_is_booked_whole_under_its_subscription_line_plan() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, sub) = subscriber(&app, &fake, &stripe, "Many Lines", "pro").await;
    changes::downgrade(&app.db, &stripe, &app.catalogue, &id, "starter").await.expect("downgrade");
    settle(&app, &fake, &stripe).await;
    // Twelve pay-per-task charges ride on the renewal invoice, listed before the
    // subscription's line: thirteen lines, of which Stripe embeds ten.
    let mut usage_cents = 0;
    for n in 0..12 {
        charged_task(&app, &id, &format!("tsk_many{n:02}"), 500_000 + n * 10_000).await;
        usage_cents += 50 + n;
    }
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 12);
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    delivered(&app, &fake).await;
    let invoice = last_invoice(&app, &sub).await;
    let embedded = stripe.get(&format!("invoices/{invoice}"), &Value::Null).await.expect("invoice");
    assert_eq!(
        (embedded["lines"]["data"].as_array().map(Vec::len), &embedded["lines"]["has_more"]),
        (Some(10), &json!(true))
    );
    settle(&app, &fake, &stripe).await;

    assert_eq!(entry_of(&app, &invoice).await, (Some("starter".into()), 4900), "the new period, at Starter's price");
    assert_eq!(ledger(&app, &id).await, 9900 + 4900 + usage_cents, "every line once: what was paid, no more");
    let (start, end): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT period_start, period_end FROM revenue_entries WHERE source_id = $1")
            .bind(&invoice)
            .fetch_one(app.db.pool())
            .await
            .expect("period");
    assert!(start.zip(end).is_some_and(|(s, e)| e - s == 30 * 86_400 * 1_000_000), "the subscription line's period");
}

#[tokio::test]
async fn a_subscriber_on_a_retired_price_keeps_their_plan() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, sub) = subscriber(&app, &fake, &stripe, "Old Price", "pro").await;
    // Pro's price goes up: a new price takes the lookup key, the old one is archived;
    // the existing subscriber stays on the old price.
    let mut changed = (*app.catalogue).clone();
    changed.plans.get_mut("pro").expect("pro").monthly_price = "129.00".parse().expect("money");
    sync::sync(&app.db, &stripe, &changed, app.now()).await.expect("sync");
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    settle(&app, &fake, &stripe).await;

    let invoice = last_invoice(&app, &sub).await;
    assert_eq!(entry_of(&app, &invoice).await, (Some("pro".into()), 9900));
    let current = changes::current(&app.db, &id).await.expect("current").expect("sub");
    assert_eq!(current.plan.as_deref(), Some("pro"), "the mirror still knows the plan");
    let c = j1msky_accounts::customers::get(&app.db, &id).await.expect("customer");
    assert_eq!((c.stage, c.plan.as_deref()), (Stage::Active, Some("pro")));
}

#[tokio::test]
async fn churn_found_by_a_reconcile_after_downtime_is_dated_when_it_happened_at_stripe() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, sub) = subscriber(&app, &fake, &stripe, "Gone Quietly", "starter").await;
    // We are down: Stripe's deliveries never arrive.
    control(&fake, "webhooks", json!({"hold": true})).await;
    stripe
        .post(&format!("subscriptions/{sub}"), &json!({"cancel_at_period_end": true}), "t-cancel")
        .await
        .expect("cancel");
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    let ended_at = fake_state(&fake).await["now"].as_i64().expect("fake's clock");

    // Forty days later, back up, the operator reconciles.
    app.clock.advance_secs(40 * 86_400);
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    let r = webhook::reconcile(&app.db, &stripe, &ctx, ended_at - 86_400, app.now()).await.expect("reconcile");
    j1msky_accounts::reactions::catch_up(&app.db, &app.clock).await.expect("accounts reactions");
    assert!(r.missed >= 2, "{r:?}");
    let (created,): (i64,) =
        sqlx::query_as("SELECT created FROM stripe_events WHERE type = 'customer.subscription.deleted'")
            .fetch_one(app.db.pool())
            .await
            .expect("deleted event");
    assert!((created - ended_at).abs() <= 2, "Stripe's own time of the cancellation");

    let c = j1msky_accounts::customers::get(&app.db, &id).await.expect("customer");
    assert_eq!(c.stage, Stage::Churned);
    assert_eq!(c.stage_changed_at, created * 1_000_000, "churned when Stripe ended it, not when we heard");
    let (at,): (i64,) =
        sqlx::query_as("SELECT at FROM customer_stage_changes WHERE customer_id = $1 AND to_stage = 'churned'")
            .bind(&id)
            .fetch_one(app.db.pool())
            .await
            .expect("history");
    assert_eq!(at, created * 1_000_000);
    assert!(app.now() - at > 30 * 86_400 * 1_000_000, "in the month it happened");
}

/// (source, amount) of a customer's `stripe_fee` entries, by source.
async fn fees_of(app: &TestApp, customer: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT source_id, amount_cents FROM revenue_entries WHERE customer_id = $1 AND kind = 'stripe_fee'
         ORDER BY occurred_at, source_id",
    )
    .bind(customer)
    .fetch_all(app.db.pool())
    .await
    .unwrap()
}

/// Stripe's fees are booked as Stripe reports them: a payment's processing fee (2.9 % +
/// 30 ¢ at the fake, as at Stripe) read once per paid invoice from the charge's balance
/// transaction, a dispute's $15.00 fee from the dispute itself, and nothing when the
/// dispute is won (the fee is not given back). Each is announced once.
#[tokio::test]
async fn stripes_fees_are_read_from_balance_transactions_and_booked_once() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, _) = subscriber(&app, &fake, &stripe, "Fee Co", "pro").await;
    let (charge, paid): (String, i64) = sqlx::query_as(
        "SELECT charge_id, paid_cents FROM revenue_entries WHERE customer_id = $1 AND kind = 'invoice_paid'",
    )
    .bind(&id)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert!(paid > 0 && charge.starts_with("ch_"), "{charge} {paid}");
    assert!(fees_of(&app, &id).await.is_empty(), "not read before the timer runs");

    assert_eq!(j1msky_billing::fees::fetch_due(&app.db, &stripe, app.now()).await.unwrap(), 1);
    // Worked out: 2.9 % of the price, rounded to the cent, and 30 ¢.
    let processing = (paid * 29 + 500) / 1_000 + 30;
    let fees = fees_of(&app, &id).await;
    assert_eq!(fees.len(), 1);
    assert!(fees[0].0.starts_with("txn_"), "{fees:?}");
    assert_eq!(fees[0].1, -processing);
    assert_eq!(j1msky_billing::fees::fetch_due(&app.db, &stripe, app.now()).await.unwrap(), 0, "read once");
    // The fee is the business's cost: the customer's own list of payments does not show it.
    let payments = j1msky_billing::revenue::for_customer(&app.db, &id, 24).await.unwrap();
    assert_eq!(
        payments.iter().map(|e| (e.kind.as_str(), e.amount_cents)).collect::<Vec<_>>(),
        [("invoice_paid", paid)]
    );
    let announced = count(&app, "SELECT COUNT(*) FROM events WHERE kind = 'billing.stripe_fee_booked'").await;
    assert_eq!(announced, 1);

    // A dispute takes the payment and Stripe's $15.00 fee; winning it returns the payment only.
    let du = control(&fake, &format!("charges/{charge}/dispute"), json!({"reason": "fraudulent"})).await;
    settle(&app, &fake, &stripe).await;
    let fees = fees_of(&app, &id).await;
    assert_eq!(fees.iter().map(|f| f.1).collect::<Vec<_>>(), vec![-processing, -1_500], "{fees:?}");
    control(&fake, &format!("disputes/{}/close", du["id"].as_str().unwrap()), json!({"outcome": "won"})).await;
    settle(&app, &fake, &stripe).await;
    assert_eq!(fees_of(&app, &id).await.len(), 2, "no fee comes back with a won dispute");
    let announced = count(&app, "SELECT COUNT(*) FROM events WHERE kind = 'billing.stripe_fee_booked'").await;
    assert_eq!(announced, 2, "each fee announced once, whatever the dispute's later snapshots");

    // A paid invoice whose charge Stripe refuses to show is read once, without a fee, and
    // does not hold up the invoices paid after it.
    let now = app.now();
    for (n, charge) in ["ch_gone", "ch_gone2"].into_iter().enumerate() {
        let event = json!({"id": format!("evt_gone{n}"), "object": "event", "type": "invoice.paid",
            "created": now / 1_000_000, "livemode": false, "data": {"object": {
                "id": format!("in_gone{n}"), "object": "invoice", "customer": "cus_nobody", "amount_paid": 4_900,
                "currency": "usd", "status": "paid", "charge": charge,
                "status_transitions": {"paid_at": now / 1_000_000},
                "lines": {"object": "list", "has_more": false, "data": []}}}});
        webhook::store(&app.db, &event, now).await.unwrap();
    }
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    while webhook::apply_pending(&app.db, &ctx, 100, now).await.unwrap() > 0 {}
    assert_eq!(j1msky_billing::fees::fetch_due(&app.db, &stripe, now).await.unwrap(), 2);
    assert_eq!(j1msky_billing::fees::fetch_due(&app.db, &stripe, now).await.unwrap(), 0, "marked read");
    let gone =
        count(&app, "SELECT COUNT(*) FROM revenue_entries WHERE kind = 'stripe_fee' AND charge_id LIKE 'ch_gone%'");
    assert_eq!(gone.await, 0);
}
