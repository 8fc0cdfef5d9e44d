//! Pay-per-task billing: one customer's failure never holds up the others, Stripe's
//! refusals are errors with Stripe's words, a charge re-reported after a restore is not
//! invoiced twice, and usage is revenue only once its invoice is paid.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;
use crate::support;

use common::spawn_app_with_stripe;
use j1msky_billing::usage;
use serde_json::{json, Value};
use support::*;

async fn reported(app: &common::TestApp, charge: &str) -> bool {
    let (at,): (Option<i64>,) = sqlx::query_as("SELECT reported_at FROM usage_charges WHERE id = $1")
        .bind(charge)
        .fetch_one(app.db.pool())
        .await
        .expect("charge");
    at.is_some()
}

/// The invoices whose payment failed for customers `a` and `b`: (invoice, customer).
async fn failed_invoices(app: &common::TestApp, a: &str, b: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT DISTINCT e.object_id, c.id FROM stripe_events e
           JOIN customers c ON e.payload LIKE '%' || c.stripe_customer_id || '%'
         WHERE e.type = 'invoice.payment_failed' AND c.id IN ($1, $2)",
    )
    .bind(a)
    .bind(b)
    .fetch_all(app.db.pool())
    .await
    .expect("failed invoices")
}

async fn link_to_stripe(app: &common::TestApp, customer: &str, stripe_customer: &str) {
    sqlx::query("UPDATE customers SET stripe_customer_id = $1 WHERE id = $2")
        .bind(stripe_customer)
        .bind(customer)
        .execute(app.db.pool())
        .await
        .expect("link");
}

#[tokio::test]
async fn a_customer_stripe_refuses_does_not_hold_up_the_others_reports() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    // The first customer's Stripe customer was deleted there: each of its items is refused.
    let broken = customer(&app, "Deleted At Stripe").await;
    link_to_stripe(&app, &broken, "cus_deleted").await;
    for n in 0..3 {
        charged_task(&app, &broken, &format!("tsk_broken{n}"), 500_000).await;
    }
    let fine = customer(&app, "Fine").await;
    charged_task(&app, &fine, "tsk_fine", 2_000_000).await;

    let err = usage::report(&app.db, &stripe, &app.catalogue, 2, app.now()).await.expect_err("a refusal is reported");
    assert!(err.to_string().contains("cus_deleted"), "Stripe's message: {err}");
    assert!(reported(&app, "uch_tsk_fine").await, "the other customer's charge went through");
    assert!(!reported(&app, "uch_tsk_broken0").await);
    assert_eq!(fake_state(&fake).await["objects"]["invoiceitem"], 1);
}

#[tokio::test]
async fn a_refused_invoice_is_an_error_with_stripes_message_and_is_retried() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (a, b) = (customer(&app, "Walk In A").await, customer(&app, "Walk In B").await);
    charged_task(&app, &a, "tsk_a", 500_000).await;
    charged_task(&app, &b, "tsk_b", 2_000_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 2);

    // Stripe refuses the first invoice (400): an error naming it, the other customer invoiced.
    control(&fake, "fail", json!({"times": 1, "status": 400})).await;
    let err = usage::invoice_pay_per_task(&app.db, &stripe, "2026-11", app.now()).await.expect_err("refused");
    assert!(err.to_string().contains("simulated failure"), "{err}");
    assert_eq!(fake_state(&fake).await["objects"]["invoice"], 1);
    // The next run invoices the refused one, and only it.
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-11", app.now()).await.expect("retry"), 1);
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-11", app.now()).await.expect("again"), 0);
    assert_eq!(fake_state(&fake).await["objects"]["invoice"], 2);
}

#[tokio::test]
async fn a_charge_reported_again_after_a_restore_is_not_invoiced_twice() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let id = customer(&app, "Restored").await;
    charged_task(&app, &id, "tsk_restored", 2_000_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 1);
    // A restore from a backup taken before the report: the task's charge is written
    // again by the worker (a new row, a new id) and is unreported here.
    sqlx::query("DELETE FROM usage_charges WHERE task_id = 'tsk_restored'").execute(app.db.pool()).await.expect("gone");
    charge(&app, &id, "uch_after_restore", "tsk_restored", 2_000_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("again"), 1);
    assert_eq!(fake_state(&fake).await["objects"]["invoiceitem"], 1, "Stripe holds the task's item once");
}

#[tokio::test]
async fn usage_is_revenue_when_its_invoice_is_paid_and_never_when_voided_or_uncollectible() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let paid = customer(&app, "Pays").await;
    let voided = customer(&app, "Voided").await;
    let written_off = customer(&app, "Written Off").await;
    for (c, n) in [(&paid, 3), (&voided, 2), (&written_off, 2)] {
        for i in 0..n {
            charged_task(&app, c, &format!("tsk_{}_{i}", &c[4..]), 1_000_000).await;
        }
    }
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 7);
    for c in [&paid, &voided, &written_off] {
        assert_eq!(ledger(&app, c).await, 0, "reported is not yet earned");
    }
    // Two cards decline: their invoices stay open, then are given up on.
    for c in [&voided, &written_off] {
        let sc = j1msky_billing::usage::ensure_stripe_customer(&app.db, &stripe, c, app.now()).await.expect("sc");
        control(&fake, &format!("customers/{sc}/card"), json!({"declines": true})).await;
    }
    // A row booked when reported, as older versions did: voiding must take it back out.
    let (legacy,): (String,) =
        sqlx::query_as("SELECT id FROM usage_charges WHERE customer_id = $1 ORDER BY id LIMIT 1")
            .bind(&voided)
            .fetch_one(app.db.pool())
            .await
            .expect("charge");
    sqlx::query(
        "INSERT INTO revenue_entries (id, source_id, kind, customer_id, amount_cents, currency, occurred_at, recorded_at)
         VALUES ('rev_legacy', $1, 'usage_charge', $2, 100, 'usd', $3, $3)",
    )
    .bind(&legacy)
    .bind(&voided)
    .bind(app.now())
    .execute(app.db.pool())
    .await
    .expect("legacy entry");
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-11", app.now()).await.expect("invoice"), 3);
    settle(&app, &fake, &stripe).await;
    assert_eq!(ledger(&app, &paid).await, 300, "paid: booked once, the invoice and its usage lines together");
    let (invoice,): (String,) = sqlx::query_as("SELECT object_id FROM stripe_events WHERE type = 'invoice.paid'")
        .fetch_one(app.db.pool())
        .await
        .expect("the paid invoice");
    let paid_at = stripe.get(&format!("invoices/{invoice}"), &Value::Null).await.expect("invoice")
        ["status_transitions"]["paid_at"]
        .as_i64()
        .expect("paid_at");
    let dates: Vec<(i64,)> = sqlx::query_as("SELECT occurred_at FROM revenue_entries WHERE customer_id = $1")
        .bind(&paid)
        .fetch_all(app.db.pool())
        .await
        .expect("dates");
    assert!(!dates.is_empty() && dates.iter().all(|d| d.0 == paid_at * 1_000_000), "dated when paid: {dates:?}");

    let invoices = failed_invoices(&app, &voided, &written_off).await;
    assert_eq!(invoices.len(), 2);
    for (invoice, c) in &invoices {
        let action = if *c == voided { "void" } else { "uncollectible" };
        control(&fake, &format!("invoices/{invoice}/{action}"), json!({})).await;
    }
    settle(&app, &fake, &stripe).await;
    assert_eq!(ledger(&app, &voided).await, 0, "a voided invoice's usage is not revenue, even if booked before");
    assert_eq!(ledger(&app, &written_off).await, 0);
    // Nothing is left to invoice for them: Stripe closed those items with the invoice.
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-11", app.now()).await.expect("again"), 0);
}

#[tokio::test]
async fn items_stripe_already_invoiced_are_recognised_rather_than_refused_every_month() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let id = customer(&app, "Upgraded").await;
    charged_task(&app, &id, "tsk_upgraded", 2_000_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 1);
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-10", app.now()).await.expect("invoice"), 1);
    // A row from before invoices were recorded on our side: Stripe invoiced it, we don't know.
    sqlx::query("UPDATE usage_charges SET stripe_invoice_id = NULL, invoice_status = NULL")
        .execute(app.db.pool())
        .await
        .expect("forget");
    // Stripe has nothing pending for them and refuses an empty invoice: that is no error,
    // and what Stripe says invoiced the item is recorded.
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-11", app.now()).await.expect("nothing owed"), 0);
    let (invoice,): (Option<String>,) =
        sqlx::query_as("SELECT stripe_invoice_id FROM usage_charges WHERE task_id = 'tsk_upgraded'")
            .fetch_one(app.db.pool())
            .await
            .expect("charge");
    assert!(invoice.is_some_and(|i| i.starts_with("in_")));
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-12", app.now()).await.expect("later"), 0);
    assert_eq!(fake_state(&fake).await["objects"]["invoice"], 1);
}

/// Whether `customer` may use the service now, as admission decides it.
async fn admitted(app: &common::TestApp, customer: &str) -> bool {
    let c = j1msky_accounts::customers::get(&app.db, customer).await.expect("customer");
    j1msky_accounts::access::admit(&app.catalogue, &j1msky_accounts::access::Standing::of(&c), app.now()).is_ok()
}

async fn standing(app: &common::TestApp, customer: &str) -> Option<String> {
    j1msky_accounts::customers::get(&app.db, customer).await.expect("customer").billing_status
}

/// A checkout for Pro, as the billing page opens it.
async fn subscribe(
    app: &common::TestApp,
    stripe: &j1msky_billing::Stripe,
    customer: &str,
) -> Result<j1msky_billing::checkout::CheckoutLink, j1msky_billing::BillingError> {
    let req = j1msky_billing::checkout::CheckoutRequest {
        plan: "pro".into(),
        success_url: "https://app.test/app/billing?ok".into(),
        cancel_url: "https://app.test/app/billing".into(),
        attempt: "1".into(),
    };
    j1msky_billing::checkout::start(&app.db, stripe, &app.catalogue, customer, &req, app.now()).await
}

/// A pay-per-task customer's failed invoice used to change nothing but the dunning mail:
/// with a card on file that declines, they kept using the service (and spending the
/// business's caps and budget) for good. Now a failed pay-per-task invoice puts them
/// past due (the grace period of a failed subscription payment applies), one written off
/// restricts them at once, and paying what they owe clears it.
#[tokio::test]
async fn a_pay_per_task_customer_whose_invoice_fails_is_refused_after_the_grace_period() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let late = customer(&app, "Late Payer").await;
    let gone = customer(&app, "Written Off").await;
    let fine = customer(&app, "Pays Fine").await;
    let mut stripe_ids = Vec::new();
    for c in [&late, &gone, &fine] {
        let sc = usage::ensure_stripe_customer(&app.db, &stripe, c, app.now()).await.expect("sc");
        let mut conn = app.db.pool().acquire().await.expect("conn");
        j1msky_accounts::access::set_payment_method(&mut conn, app.db.backend(), c, true, app.now())
            .await
            .expect("card on file");
        drop(conn);
        for i in 0..2 {
            charged_task(&app, c, &format!("tsk_{}_{i}", &c[4..]), 1_000_000).await;
        }
        stripe_ids.push(sc);
    }
    for c in [&late, &gone, &fine] {
        assert!(admitted(&app, c).await, "pay-per-task with a card on file");
    }
    for sc in &stripe_ids[..2] {
        control(&fake, &format!("customers/{sc}/card"), json!({"declines": true})).await;
    }
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 6);
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-11", app.now()).await.expect("invoice"), 3);
    settle(&app, &fake, &stripe).await;
    assert_eq!(standing(&app, &fine).await, None);
    for c in [&late, &gone] {
        assert_eq!(standing(&app, c).await.as_deref(), Some("past_due"), "a failed invoice");
        assert!(admitted(&app, c).await, "within the grace period");
    }
    let failed = failed_invoices(&app, &late, &gone).await;
    assert_eq!(failed.len(), 2);
    let invoice_of = |c: &str| failed.iter().find(|(_, who)| who == c).map(|(i, _)| i.clone()).expect("invoice");
    // Written off: restricted at once.
    control(&fake, &format!("invoices/{}/uncollectible", invoice_of(&gone)), json!({})).await;
    settle(&app, &fake, &stripe).await;
    assert_eq!(standing(&app, &gone).await.as_deref(), Some("unpaid"));
    assert!(!admitted(&app, &gone).await, "written off: refused");
    // Owing, neither may start a subscription: its standing would replace the one their
    // invoices gave them, and a first checkout's free trial would let them in for nothing.
    for c in [&late, &gone] {
        let err = subscribe(&app, &stripe, c).await.expect_err("a checkout while owing");
        assert!(err.to_string().contains("were not paid"), "{err}");
    }
    // The grace period ends: the late payer is refused too; the one who pays is not.
    let grace = i64::from(app.catalogue.stripe.past_due_grace_days) * 86_400 + 60;
    app.clock.advance_secs(grace);
    control(&fake, "clock", json!({"advance_secs": grace})).await;
    assert!(!admitted(&app, &late).await, "past due after the grace period: refused");
    assert!(admitted(&app, &fine).await);
    // Each fixes the card and the invoice is paid (Stripe's retry, or the hosted invoice
    // page): paid up, admitted again.
    for (c, sc) in [(&late, &stripe_ids[0]), (&gone, &stripe_ids[1])] {
        control(&fake, &format!("customers/{sc}/card"), json!({"declines": false})).await;
        stripe
            .post(&format!("invoices/{}/pay", invoice_of(c)), &json!({}), &format!("test-pay-{c}"))
            .await
            .expect("pay");
    }
    settle(&app, &fake, &stripe).await;
    for c in [&late, &gone] {
        assert_eq!(standing(&app, c).await, None, "paid up");
        assert!(admitted(&app, c).await);
    }
    subscribe(&app, &stripe, &gone).await.expect("paid up, it may subscribe");
    assert_eq!(ledger(&app, &late).await, 200, "its usage is revenue once paid");
}

/// The checkout's refusal is checked when the session opens; a session opened before
/// the usage invoice failed and completed after it must not wipe the debt's standing
/// (a subscription's own standing used to replace it, and the first checkout's free
/// trial let the debtor in for nothing). Paying the debt clears it, the subscription stays.
#[tokio::test]
async fn a_checkout_opened_before_a_usage_debt_and_completed_after_it_keeps_the_debtor_out() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let debtor = customer(&app, "Quick Subscriber").await;
    let sc = usage::ensure_stripe_customer(&app.db, &stripe, &debtor, app.now()).await.expect("sc");
    let mut conn = app.db.pool().acquire().await.expect("conn");
    j1msky_accounts::access::set_payment_method(&mut conn, app.db.backend(), &debtor, true, app.now())
        .await
        .expect("card on file");
    drop(conn);
    for i in 0..2 {
        charged_task(&app, &debtor, &format!("tsk_quick_{i}"), 1_000_000).await;
    }
    // Nothing is owed yet: the session opens (with the first checkout's free trial).
    let link = subscribe(&app, &stripe, &debtor).await.expect("nothing owed yet");
    // Then the month's usage invoice fails and is written off.
    control(&fake, &format!("customers/{sc}/card"), json!({"declines": true})).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 2);
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-11", app.now()).await.expect("invoice"), 1);
    settle(&app, &fake, &stripe).await;
    let failed = failed_invoices(&app, &debtor, &debtor).await;
    let invoice = failed.first().map(|(i, _)| i.clone()).expect("a failed invoice");
    control(&fake, &format!("invoices/{invoice}/uncollectible"), json!({})).await;
    settle(&app, &fake, &stripe).await;
    assert_eq!(standing(&app, &debtor).await.as_deref(), Some("unpaid"));
    assert!(!admitted(&app, &debtor).await);
    // The session opened before is completed now: a trialing subscription.
    control(&fake, &format!("checkout/{}/complete", link.session_id), json!({})).await;
    settle(&app, &fake, &stripe).await;
    let plan: Option<String> = sqlx::query_scalar("SELECT plan FROM customers WHERE id = $1")
        .bind(&debtor)
        .fetch_one(app.db.pool())
        .await
        .expect("plan");
    assert_eq!(plan.as_deref(), Some("pro"), "the subscription is applied");
    assert_eq!(standing(&app, &debtor).await.as_deref(), Some("unpaid"), "the debt still stands");
    assert!(!admitted(&app, &debtor).await, "a trial does not pay a written-off invoice");
    // Paid, right after a change of the subscription (its events applied in one go, the
    // subscription's first, before any reaction ran): the subscription's own standing
    // (nothing failing) is the customer's; the older announcement does not win.
    control(&fake, &format!("customers/{sc}/card"), json!({"declines": false})).await;
    let sub = j1msky_billing::changes::current(&app.db, &debtor).await.expect("current").expect("sub").id;
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    stripe.post(&format!("invoices/{invoice}/pay"), &json!({}), "test-pay-quick").await.expect("pay");
    settle(&app, &fake, &stripe).await;
    assert_eq!(standing(&app, &debtor).await, None, "paid up");
    assert!(admitted(&app, &debtor).await);
}
