//! The billing jobs as durable timers: a pause resumes by itself on its date (also a
//! pause recorded before timers existed, caught up at start-up), pay-per-task charges
//! are reported every minute, and last month's pay-per-task invoices are made once
//! even with two runners.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;
use crate::support;

use common::{spawn_app_with_stripe, TestApp};
use j1msky_billing::{changes, jobs, Stripe};
use j1msky_core::vocab::Stage;
use j1msky_db::timers;
use serde_json::json;
use support::*;

/// 2026-12-01T01:00:00Z, when November's invoices are due (the test clock starts in it).
const NOVEMBER_INVOICED: i64 = 1_796_083_200 + 3600;

async fn run_timers(app: &TestApp, stripe: &Stripe) -> usize {
    let handlers = jobs::handlers(&app.db, &app.catalogue, stripe);
    timers::run_due_once(&app.db, &handlers, app.now()).await.expect("timers")
}

async fn stage_plan(app: &TestApp, id: &str) -> (Stage, Option<String>) {
    let c = j1msky_accounts::customers::get(&app.db, id).await.expect("customer");
    (c.stage, c.plan)
}

async fn paused_subscriber(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe, stripe: &Stripe) -> (String, i64) {
    let (id, _) = subscriber(app, fake, stripe, "Napper", "pro").await;
    let now = app.now() / 1_000_000;
    changes::pause(&app.db, stripe, &app.catalogue, &id, now + 2 * 86_400, now).await.expect("pause");
    settle(app, fake, stripe).await;
    assert_eq!(stage_plan(app, &id).await, (Stage::Paused, Some("paused".into())));
    (id, now + 2 * 86_400)
}

async fn two_days_on(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe) {
    app.clock.advance_secs(2 * 86_400);
    control(fake, "clock", json!({"advance_secs": 2 * 86_400})).await;
}

#[tokio::test]
async fn a_pause_schedules_its_resume_which_fires_on_its_date_once() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, resume_at) = paused_subscriber(&app, &fake, &stripe).await;
    let sub = changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    let key = format!("{sub}@{resume_at}");
    let timer = timers::find(&app.db, jobs::RESUME, &key).await.expect("find").expect("a resume timer");
    assert_eq!((timer.state.as_str(), timer.run_at), ("ready", resume_at * 1_000_000));

    run_timers(&app, &stripe).await;
    settle(&app, &fake, &stripe).await;
    assert_eq!(stage_plan(&app, &id).await.0, Stage::Paused, "not before its date");

    two_days_on(&app, &fake).await;
    run_timers(&app, &stripe).await;
    settle(&app, &fake, &stripe).await;
    assert_eq!(stage_plan(&app, &id).await, (Stage::Active, Some("pro".into())));
    let timer = timers::find(&app.db, jobs::RESUME, &key).await.expect("find").expect("timer");
    assert_eq!((timer.state.as_str(), timer.attempts), ("done", 1));
}

#[tokio::test]
async fn a_pause_recorded_before_timers_is_caught_up_at_start_up() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, _) = paused_subscriber(&app, &fake, &stripe).await;
    // As if paused by a version without timers: no timer row.
    sqlx::query("DELETE FROM jobs").execute(app.db.pool()).await.expect("forget timers");
    two_days_on(&app, &fake).await;
    run_timers(&app, &stripe).await;
    settle(&app, &fake, &stripe).await;
    assert_eq!(stage_plan(&app, &id).await.0, Stage::Paused, "nothing to fire yet");

    jobs::schedule_startup(&app.db, &app.catalogue, &jobs::handlers(&app.db, &app.catalogue, &stripe), app.now())
        .await
        .expect("start-up");
    run_timers(&app, &stripe).await;
    settle(&app, &fake, &stripe).await;
    assert_eq!(stage_plan(&app, &id).await, (Stage::Active, Some("pro".into())));
}

#[tokio::test]
async fn last_months_pay_per_task_invoices_are_made_once_with_two_runners() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (a, b) = (customer(&app, "Walk In A").await, customer(&app, "Walk In B").await);
    charged_task(&app, &a, "tsk_a", 500_000).await;
    charged_task(&app, &b, "tsk_b", 2_000_000).await;
    let handlers = jobs::handlers(&app.db, &app.catalogue, &stripe);
    jobs::schedule_startup(&app.db, &app.catalogue, &handlers, app.now()).await.expect("start-up");
    run_timers(&app, &stripe).await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM usage_charges WHERE reported_at IS NOT NULL").await, 2);
    assert_eq!(fake_state(&fake).await["objects"]["invoice"].as_i64().unwrap_or(0), 0, "November is not over");

    // December has begun: two runners (a second process) race for November's invoices.
    app.clock.advance_secs(NOVEMBER_INVOICED - 3601 - app.now() / 1_000_000);
    run_timers(&app, &stripe).await;
    assert_eq!(fake_state(&fake).await["objects"]["invoice"].as_i64().unwrap_or(0), 0, "not before it is due");
    app.clock.advance_secs(3601);
    let second = jobs::handlers(&app.db, &app.catalogue, &stripe);
    let now = app.now();
    let (x, y) =
        tokio::join!(timers::run_due_once(&app.db, &handlers, now), timers::run_due_once(&app.db, &second, now));
    x.expect("first runner");
    y.expect("second runner");
    assert_eq!(fake_state(&fake).await["objects"]["invoice"], 2, "one invoice per customer");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM usage_charges WHERE stripe_invoice_id IS NOT NULL").await, 2);
    let november = timers::find(&app.db, jobs::INVOICE_MONTH, "2026-11").await.expect("find").expect("timer");
    assert_eq!((november.state.as_str(), november.attempts), ("done", 1));
    let december = timers::find(&app.db, jobs::INVOICE_MONTH, "2026-12").await.expect("find").expect("next month");
    assert_eq!((december.state.as_str(), december.run_at), ("ready", 1_798_761_600_000_000 + 3_600_000_000));

    // A restart in December schedules nothing new for November.
    jobs::schedule_startup(&app.db, &app.catalogue, &handlers, app.now()).await.expect("restart");
    run_timers(&app, &stripe).await;
    assert_eq!(fake_state(&fake).await["objects"]["invoice"], 2);
}
