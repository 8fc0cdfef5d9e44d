// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! A journey's offer step with Stripe configured (the fake Stripe on loopback): the
//! enrollment waits for billing's answer; the announcing mail is queued only after the
//! grant, never when billing refuses (granted meanwhile by someone else); a retry after
//! a crash between the grant and the journey's next step finds its own grant.

use crate::common;

use std::sync::Arc;

use common::{spawn_app_with_stripe, TestApp};
use j1msky_lifecycle::{journeys, Ctx};

fn ctx(app: &TestApp, stripe: &j1msky_billing::Stripe) -> Ctx {
    Ctx {
        db: app.db.clone(),
        catalogue: app.catalogue.clone().into(),
        clock: Arc::new(j1msky_core::clock::ManualClock::new(app.now())),
        transport: Arc::new(j1msky_lifecycle::transport::Recording::default()),
        stripe: Some(stripe.clone()),
        base_url: app.base.clone(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    }
}

async fn enroll(ctx: &Ctx, customer: &str, now: i64) -> String {
    let mut tx = ctx.db.begin().await.unwrap();
    let id = journeys::enroll(&mut tx, ctx.db.backend(), ctx, customer, "we_miss_you", "trigger:inactive_offer:1", now)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn announced(app: &TestApp, customer: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>(
        "SELECT COUNT(*) FROM lifecycle_messages WHERE customer_id = $1 AND template = 'we_miss_you'",
    )
    .bind(customer)
    .fetch_one(app.db.pool())
    .await
    .unwrap()
    .0
}

async fn log(ctx: &Ctx, id: &str) -> Vec<(String, String)> {
    journeys::history(&ctx.db, id).await.unwrap().into_iter().map(|s| (s.step, s.outcome)).collect()
}

async fn run_timers(ctx: &Ctx, now: i64) {
    let handlers = j1msky_lifecycle::timer_handlers(ctx);
    while j1msky_db::timers::run_due_once(&ctx.db, &handlers, now).await.unwrap() > 0 {}
}

#[tokio::test]
async fn the_offer_mail_waits_for_the_grant_and_is_not_sent_when_billing_refuses() {
    let (app, _fake, stripe) = spawn_app_with_stripe().await;
    let ctx = ctx(&app, &stripe);
    let now = app.now();

    // Granted: then announced.
    let ann = app.active_customer("Ann", "pro").await.id;
    let id = enroll(&ctx, &ann, now).await;
    assert_eq!(announced(&app, &ann).await, 0, "nothing is announced before billing answered");
    run_timers(&ctx, now).await;
    assert_eq!(log(&ctx, &id).await, vec![("grant".into(), "offer_granted".into()), ("tell".into(), "queued".into())]);
    assert_eq!(announced(&app, &ann).await, 1);
    let grants = j1msky_billing::offers::for_customer(&app.db, &ann).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].granted_by, format!("journey:{id}"));

    // Granted by an operator between the step and the grant: billing refuses, no mail.
    let bob = app.active_customer("Bob", "pro").await.id;
    let id = enroll(&ctx, &bob, now).await;
    j1msky_billing::offers::grant(&app.db, &stripe, &app.catalogue, &bob, "we_miss_you", "user:usr_op", now)
        .await
        .unwrap();
    run_timers(&ctx, now).await;
    assert_eq!(log(&ctx, &id).await, vec![("grant".into(), "offer_refused".into())]);
    assert_eq!(announced(&app, &bob).await, 0);
    let e = journeys::of_customer(&app.db, &bob).await.unwrap().into_iter().find(|e| e.id == id).unwrap();
    assert_eq!((e.state.as_str(), e.end_reason.as_deref()), ("exited", Some("offer refused")));

    // The grant went through but the process died before the journey moved on: the
    // retry finds the enrollment's own grant and announces it once.
    let cy = app.active_customer("Cy", "pro").await.id;
    let id = enroll(&ctx, &cy, now).await;
    let by = format!("journey:{id}");
    j1msky_billing::offers::grant(&app.db, &stripe, &app.catalogue, &cy, "we_miss_you", &by, now).await.unwrap();
    run_timers(&ctx, now).await;
    assert_eq!(log(&ctx, &id).await[0], ("grant".into(), "offer_granted".into()));
    assert_eq!(announced(&app, &cy).await, 1);
    assert_eq!(j1msky_billing::offers::for_customer(&app.db, &cy).await.unwrap().len(), 1);
}
