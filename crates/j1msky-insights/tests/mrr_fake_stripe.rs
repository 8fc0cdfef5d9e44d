// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! One customer's year at the fake Stripe, driven by billing's own calls (checkout,
//! upgrade, pause, resume) and the Customer Portal, with the events Stripe lists read back
//! by `webhook::reconcile` and applied by the real applier: the history holds what the
//! fake sent and MRR moves as the plan says. Prices are the shipped catalogue's.

use crate::mrr_support;

use j1msky_billing::checkout::{self, CheckoutRequest};
use j1msky_billing::{apply, changes, webhook, Stripe, StripeConfig};
use j1msky_insights::kpis::Filter;
use j1msky_insights::mrr;
use j1msky_insights::Month;
use j1msky_sim::stripe::{spawn_stripe, FakeStripeConfig, RunningStripe};
use mrr_support::{world, World};
use serde_json::{json, Value};

/// 2026-01-10 12:00 UTC.
const JAN_10: i64 = 1_768_046_400;
const DAY: i64 = 86_400;

async fn control(fake: &RunningStripe, path: &str, body: Value) {
    let r = reqwest::Client::new().post(format!("{}/_sim/{path}", fake.base())).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap_or_default());
}

/// Moves both clocks (ours and the fake's) to `secs`.
async fn at(w: &World, fake: &RunningStripe, secs: i64) {
    let now = j1msky_core::Clock::now_micros(&w.clock) / 1_000_000;
    control(fake, "clock", json!({"advance_secs": secs - now})).await;
    w.set_now(secs);
}

/// Reads back every event Stripe lists, applies them, runs the MRR consumer.
async fn settle(w: &World, stripe: &Stripe) {
    let ctx = apply::Ctx { catalogue: &w.ctx.catalogue };
    let now = j1msky_core::Clock::now_micros(&w.clock);
    webhook::reconcile(&w.db, stripe, &ctx, 0, now).await.unwrap();
    j1msky_accounts::reactions::catch_up(&w.db, &w.clock).await.unwrap();
    w.consume().await;
}

fn cents(w: &World, plan: &str) -> i64 {
    w.ctx.catalogue.plans[plan].monthly_price.to_cents_rounded()
}

#[tokio::test]
async fn checkout_upgrade_pause_resume_and_portal_cancel_move_mrr() {
    let w = world("UTC", JAN_10).await;
    let fake =
        spawn_stripe(FakeStripeConfig { webhook_url: None, now: Some(JAN_10), ..Default::default() }).await.unwrap();
    let stripe = Stripe::new(StripeConfig {
        base_url: fake.base(),
        secret_key: "sk_test_j1msky".into(),
        api_version: w.ctx.catalogue.stripe.api_version.clone(),
        allow_live: false,
    })
    .unwrap();
    j1msky_billing::sync::sync(&w.db, &stripe, &w.ctx.catalogue, JAN_10 * 1_000_000).await.unwrap();
    let (starter, pro, paused) = (cents(&w, "starter"), cents(&w, "pro"), cents(&w, &w.ctx.catalogue.pause_plan));
    assert!(starter < pro && paused < starter, "the shipped prices: {starter} {pro} {paused}");

    // January 10: checkout on Starter, paid at once (its trial already had).
    let c = w.customer("Fake Stripe Co").await;
    j1msky_billing::offers::record_trial_had(&w.db, &c, "cli", JAN_10 * 1_000_000).await.unwrap();
    let req = CheckoutRequest {
        plan: "starter".into(),
        success_url: "https://app.example.test/app/billing?done=1".into(),
        cancel_url: "https://app.example.test/app/billing".into(),
        attempt: "1".into(),
    };
    let link = checkout::start(&w.db, &stripe, &w.ctx.catalogue, &c, &req, JAN_10 * 1_000_000).await.unwrap();
    control(&fake, &format!("checkout/{}/complete", link.session_id), json!({})).await;
    settle(&w, &stripe).await;
    let sub = changes::current(&w.db, &c).await.unwrap().unwrap().id;

    // February 15: upgrade to Pro (the prorated difference is invoiced, not MRR).
    at(&w, &fake, JAN_10 + 36 * DAY).await;
    changes::upgrade(&w.db, &stripe, &w.ctx.catalogue, &c, "pro", (JAN_10 + 36 * DAY) * 1_000_000).await.unwrap();
    settle(&w, &stripe).await;
    // March 12: paused for 30 days, on the pause plan's price.
    at(&w, &fake, JAN_10 + 61 * DAY).await;
    changes::pause(&w.db, &stripe, &w.ctx.catalogue, &c, JAN_10 + 91 * DAY, JAN_10 + 61 * DAY).await.unwrap();
    settle(&w, &stripe).await;
    // April 11: resumed on Pro.
    at(&w, &fake, JAN_10 + 91 * DAY).await;
    changes::resume(&w.db, &stripe, &w.ctx.catalogue, &c, Some((JAN_10 + 91 * DAY) * 1_000_000)).await.unwrap();
    settle(&w, &stripe).await;
    // May 20: cancelled at once in the Customer Portal.
    at(&w, &fake, JAN_10 + 130 * DAY).await;
    control(&fake, &format!("subscriptions/{sub}/portal_cancel"), json!({"at_period_end": false})).await;
    settle(&w, &stripe).await;
    at(&w, &fake, JAN_10 + 150 * DAY).await;

    let history: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT status, amount_cents, customer_id FROM subscription_history WHERE subscription_id = $1 ORDER BY version",
    )
    .bind(&sub)
    .fetch_all(w.db.pool())
    .await
    .unwrap();
    assert!(
        history.iter().all(|h| h.2.as_deref() == Some(c.as_str())),
        "every row joined to the customer: {history:?}"
    );
    assert_eq!(history.first().map(|h| (h.0.as_str(), h.1)), Some(("active", starter)), "{history:?}");
    assert_eq!(history.last().map(|h| h.0.as_str()), Some("canceled"), "{history:?}");

    // (month, starting, new, expansion, contraction, churn, ending)
    let want = [
        ("2026-01", 0, starter, 0, 0, 0, starter),
        ("2026-02", starter, 0, pro - starter, 0, 0, pro),
        ("2026-03", pro, 0, 0, pro - paused, 0, paused),
        ("2026-04", paused, 0, pro - paused, 0, 0, pro),
        ("2026-05", pro, 0, 0, 0, pro, 0),
        ("2026-06", 0, 0, 0, 0, 0, 0),
    ];
    for (month, start, new, exp, contr, churn, end) in want {
        let m = mrr::month(&w.ctx, Month::parse(month).unwrap(), &Filter::default()).await.unwrap();
        assert_eq!(
            (m.starting_cents, m.new_cents, m.expansion_cents, m.contraction_cents, m.churn_cents, m.ending_cents),
            (start, new, exp, contr, churn, end),
            "{month}"
        );
    }
}
