// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The retention triggers fire once per occurrence, and only when they should: the
//! inactivity thresholds (each kind of activity resets them), plan limit hits, task
//! success and usage, payments, trials, Portal cancels and the churn spike.

use std::sync::Arc;

use j1msky_accounts::activity::{self, Source};
use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::events::Kind;
use j1msky_core::vocab::{Stage, UserRole};
use j1msky_db::consumers::{self, Runner};
use j1msky_db::testing::TestDb;
use j1msky_db::{outbox, Db};
use j1msky_lifecycle::{journeys, transport::Recording, triggers, Ctx};

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;
const T0: i64 = 1_800_000_000_000_000;

fn ctx_with(db: &Db, clock: &Arc<ManualClock>, edit: impl FnOnce(&mut Catalogue)) -> Ctx {
    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    edit(&mut catalogue);
    Ctx {
        db: db.clone(),
        catalogue: Arc::new(catalogue).into(),
        clock: clock.clone(),
        transport: Arc::new(Recording::default()),
        stripe: None,
        base_url: "http://localhost".into(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    }
}

fn ctx(db: &Db, clock: &Arc<ManualClock>) -> Ctx {
    ctx_with(db, clock, |_| {})
}

async fn customer(db: &Db, name: &str, stage: Stage, at: i64) -> String {
    let catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    let input = NewCustomer { name: name.into(), stage: Some(stage), ..Default::default() };
    customers::create(db, &catalogue, &j1msky_audit::Actor::cli(), input, at).await.unwrap().id
}

/// Runs the triggers' consumer until it has seen every event.
async fn catch_up(c: &Ctx, clock: &ManualClock) {
    let all = triggers::consumers(c);
    let runner = Runner::new("test");
    loop {
        let p = consumers::run_once(&c.db, &runner, &all, clock).await.unwrap();
        assert_eq!(p.failed, 0, "the triggers' consumer failed an event");
        if p.handled + p.passed == 0 {
            return;
        }
    }
}

async fn emit(db: &Db, kind: Kind, customer: &str, payload: serde_json::Value, at: i64) {
    let mut tx = db.begin().await.unwrap();
    j1msky_db::testing::emit_raw(&mut tx, db.backend(), kind, Some(customer), &payload, at).await.unwrap();
    tx.commit().await.unwrap();
}

async fn enrollments(db: &Db, customer: &str, journey: &str) -> usize {
    journeys::of_customer(db, customer).await.unwrap().iter().filter(|e| e.journey == journey).count()
}

async fn todos(db: &Db, customer: &str) -> Vec<String> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT reason FROM lifecycle_todos WHERE customer_id = $1 ORDER BY created_at, id")
            .bind(customer)
            .fetch_all(db.pool())
            .await
            .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

async fn firings(db: &Db, trigger: &str, customer: &str) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM lifecycle_trigger_firings WHERE trigger_id = $1 AND customer_id = $2")
            .bind(trigger)
            .bind(customer)
            .fetch_one(db.pool())
            .await
            .unwrap();
    n
}

async fn sweep_at(c: &Ctx, clock: &ManualClock, at: i64) -> Vec<triggers::Fired> {
    clock.advance_micros(at - j1msky_core::Clock::now_micros(clock));
    catch_up(c, clock).await;
    triggers::sweep(c, at, false).await.unwrap()
}

#[tokio::test]
async fn inactivity_fires_each_threshold_once_per_quiet_spell() {
    let t = TestDb::new().await;
    let db = &t.db;
    let clock = Arc::new(ManualClock::new(T0));
    let c = ctx(db, &clock);
    let cus = customer(db, "Quiet", Stage::Active, T0).await;

    assert!(sweep_at(&c, &clock, T0 + 3 * DAY - HOUR).await.is_empty(), "not yet 3 days");
    let dry = triggers::sweep(&c, T0 + 3 * DAY + HOUR, true).await.unwrap();
    assert_eq!(dry.len(), 1);
    assert_eq!(enrollments(db, &cus, "reengagement").await, 0, "a dry run writes nothing");

    let fired = sweep_at(&c, &clock, T0 + 3 * DAY + HOUR).await;
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].trigger.as_str(), fired[0].customer_id.as_str()), ("inactive", cus.as_str()));
    assert_eq!(fired[0].action, "journey:reengagement");
    assert_eq!(enrollments(db, &cus, "reengagement").await, 1);
    // Run again (and again): nothing more for this spell.
    assert!(sweep_at(&c, &clock, T0 + 3 * DAY + 2 * HOUR).await.is_empty());
    assert!(triggers::sweep(&c, T0 + 3 * DAY + 2 * HOUR, false).await.unwrap().is_empty());

    let fired = sweep_at(&c, &clock, T0 + 7 * DAY + HOUR).await;
    assert_eq!(fired.iter().map(|f| f.trigger.as_str()).collect::<Vec<_>>(), ["inactive_outreach"]);
    assert!(sweep_at(&c, &clock, T0 + 8 * DAY).await.is_empty());
    let reasons = todos(db, &cus).await;
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].starts_with("Personal outreach"), "{reasons:?}");

    let fired = sweep_at(&c, &clock, T0 + 14 * DAY + HOUR).await;
    assert_eq!(fired.iter().map(|f| f.trigger.as_str()).collect::<Vec<_>>(), ["inactive_offer"]);
    assert_eq!(enrollments(db, &cus, "we_miss_you").await, 1);
    assert!(sweep_at(&c, &clock, T0 + 20 * DAY).await.is_empty());

    // Activity starts a new spell, which fires again from its first threshold.
    activity::mark_active(db, &cus, Source::ApiKey, T0 + 21 * DAY).await;
    assert!(sweep_at(&c, &clock, T0 + 23 * DAY).await.is_empty());
    let fired = sweep_at(&c, &clock, T0 + 24 * DAY + HOUR).await;
    assert_eq!(fired.iter().map(|f| f.trigger.as_str()).collect::<Vec<_>>(), ["inactive"]);
    assert_eq!(firings(db, "inactive", &cus).await, 2);
    assert_eq!(firings(db, "inactive_offer", &cus).await, 1);
}

#[tokio::test]
async fn a_login_an_api_call_and_a_task_each_reset_inactivity() {
    let t = TestDb::new().await;
    let db = &t.db;
    let clock = Arc::new(ManualClock::new(T0));
    let c = ctx(db, &clock);
    let by_login = customer(db, "Logs in", Stage::Active, T0).await;
    let by_api = customer(db, "Calls the API", Stage::Active, T0).await;
    let by_task = customer(db, "Runs tasks", Stage::Trial, T0).await;
    let idle = customer(db, "Idle", Stage::Active, T0).await;
    let lead = customer(db, "Only a lead", Stage::Lead, T0).await;

    let password = "correct horse battery staple";
    let input = j1msky_accounts::users::NewUser {
        email: "ann@logs.test".into(),
        display_name: "Ann".into(),
        password: password.into(),
        role: UserRole::Owner,
        customer_id: Some(by_login.clone()),
    };
    j1msky_accounts::users::create(db, &j1msky_audit::Actor::cli(), input, T0).await.unwrap();
    let at = T0 + 2 * DAY;
    j1msky_accounts::users::authenticate(db, "ann@logs.test", password, "10.0.0.1", None, at).await.unwrap();
    activity::mark_active(db, &by_api, Source::ApiKey, at).await;
    activity::mark_active(db, &by_task, Source::Task, at).await;

    let fired = sweep_at(&c, &clock, T0 + 3 * DAY + HOUR).await;
    let who: Vec<&str> = fired.iter().map(|f| f.customer_id.as_str()).collect();
    assert_eq!(who, [idle.as_str()], "only the idle customer (the lead is not a customer yet)");

    let fired = sweep_at(&c, &clock, at + 3 * DAY + HOUR).await;
    let mut who: Vec<String> = fired.iter().map(|f| f.customer_id.clone()).collect();
    who.sort();
    let mut want = vec![by_login, by_api, by_task];
    want.sort();
    assert_eq!(who, want);
    assert_eq!(firings(db, "inactive", &lead).await, 0);
}

#[tokio::test]
async fn a_plan_limit_hit_prompts_an_upgrade_and_holds_the_coupon_once() {
    let t = TestDb::new().await;
    let db = &t.db;
    let clock = Arc::new(ManualClock::new(T0));
    let c = ctx(db, &clock);
    let cus = customer(db, "Busy", Stage::Active, T0).await;
    for (i, limit) in ["hourly_cap", "monthly_budget", "team_not_in_plan"].iter().enumerate() {
        activity::limit_hit(db, &cus, limit, "refused", T0 + i as i64 * HOUR).await;
    }
    catch_up(&c, &clock).await;
    catch_up(&c, &clock).await;
    assert_eq!(firings(db, "limit_hit", &cus).await, 3, "each limit hit is an occurrence");
    assert_eq!(enrollments(db, &cus, "upgrade_prompt").await, 1, "one prompt while one is running");
    let (grant, expires) = j1msky_billing::offers::held_for_upgrade(db, &cus, T0 + 3 * HOUR).await.unwrap().unwrap();
    assert_eq!(grant.offer, "upgrade");
    assert_eq!(expires, T0 + 14 * DAY);
    let held: Vec<_> = j1msky_billing::offers::for_customer(db, &cus).await.unwrap();
    assert_eq!(held.len(), 1, "the coupon is held once, not per hit");

    // The same event handled again (a replay) fires nothing.
    let ev = outbox::after(db, 0, 1000).await.unwrap().into_iter().find(|e| e.kind == "plan.limit_hit").unwrap();
    let mut tx = db.begin().await.unwrap();
    assert!(triggers::on_event(&mut tx, db.backend(), &c, &ev, T0).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    assert_eq!(firings(db, "limit_hit", &cus).await, 3);
}

#[tokio::test]
async fn low_success_opens_one_todo_until_the_customer_recovers() {
    let t = TestDb::new().await;
    let db = &t.db;
    let clock = Arc::new(ManualClock::new(T0));
    let c = ctx(db, &clock);
    let cus = customer(db, "Struggling", Stage::Active, T0).await;
    let mut at = T0;
    let mut outcome = |ok: bool| {
        at += 1;
        let kind = if ok { Kind::TaskSucceeded } else { Kind::TaskFailed };
        (kind, at)
    };
    // 7 of 10 succeed: exactly 70 % is not below 70 %.
    for ok in [true, true, true, true, true, true, true, false, false, false] {
        let (k, at) = outcome(ok);
        emit(db, k, &cus, serde_json::json!({"task_id": "t"}), at).await;
    }
    catch_up(&c, &clock).await;
    assert!(todos(db, &cus).await.is_empty());
    // One more failure: 6 of the last 10.
    let (k, at1) = outcome(false);
    emit(db, k, &cus, serde_json::json!({"task_id": "t"}), at1).await;
    catch_up(&c, &clock).await;
    let reasons = todos(db, &cus).await;
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("only 6 of their last 10"), "{reasons:?}");
    // Still low: no second to-do.
    for _ in 0..3 {
        let (k, at) = outcome(false);
        emit(db, k, &cus, serde_json::json!({"task_id": "t"}), at).await;
    }
    catch_up(&c, &clock).await;
    assert_eq!(todos(db, &cus).await.len(), 1);
    // Recovers, then falls again: a second to-do.
    for _ in 0..10 {
        let (k, at) = outcome(true);
        emit(db, k, &cus, serde_json::json!({"task_id": "t"}), at).await;
    }
    for _ in 0..4 {
        let (k, at) = outcome(false);
        emit(db, k, &cus, serde_json::json!({"task_id": "t"}), at).await;
    }
    catch_up(&c, &clock).await;
    assert_eq!(todos(db, &cus).await.len(), 2);
}

#[tokio::test]
async fn high_usage_enrolls_in_loyalty_once_per_period() {
    let t = TestDb::new().await;
    let db = &t.db;
    let clock = Arc::new(ManualClock::new(T0));
    let c = ctx_with(db, &clock, |cat| {
        cat.lifecycle.triggers.high_usage.tasks = 5;
        cat.lifecycle.triggers.high_usage.days = 30;
    });
    let cus = customer(db, "Power user", Stage::Active, T0).await;
    let calm = customer(db, "Calm", Stage::Active, T0).await;
    for i in 0..8 {
        emit(db, Kind::TaskSucceeded, &cus, serde_json::json!({"task_id": i}), T0 + i).await;
    }
    for i in 0..4 {
        emit(db, Kind::TaskSucceeded, &calm, serde_json::json!({"task_id": i}), T0 + i).await;
    }
    catch_up(&c, &clock).await;
    assert_eq!(firings(db, "high_usage", &cus).await, 1);
    assert_eq!(enrollments(db, &cus, "loyalty").await, 1);
    assert_eq!(firings(db, "high_usage", &calm).await, 0);
}

#[tokio::test]
async fn payments_trials_and_portal_cancels_enroll_their_journeys_once() {
    let t = TestDb::new().await;
    let db = &t.db;
    let clock = Arc::new(ManualClock::new(T0));
    let c = ctx(db, &clock);
    let cus = customer(db, "Billing", Stage::Active, T0).await;
    let other = customer(db, "Cancelled by us", Stage::Active, T0).await;
    // Stripe retries a failed invoice: one dunning run per invoice.
    for attempt in 1..=3 {
        let p = serde_json::json!({"invoice": "in_1", "subscription": "sub_1", "attempt_count": attempt});
        emit(db, Kind::InvoicePaymentFailed, &cus, p, T0 + attempt).await;
    }
    emit(db, Kind::SubscriptionTrialWillEnd, &cus, serde_json::json!({"subscription": "sub_1", "trial_end": 1}), T0)
        .await;
    let portal = serde_json::json!({"subscription": "sub_1", "source": "customer_portal", "at_period_end": true});
    emit(db, Kind::SubscriptionCancelled, &cus, portal.clone(), T0).await;
    emit(db, Kind::SubscriptionCancelled, &cus, portal, T0 + 1).await;
    let ours = serde_json::json!({"subscription": "sub_2", "source": "retention", "at_period_end": true});
    emit(db, Kind::SubscriptionCancelled, &other, ours, T0).await;
    catch_up(&c, &clock).await;
    assert_eq!(firings(db, "payment_failed", &cus).await, 1);
    assert_eq!(enrollments(db, &cus, "dunning").await, 1);
    assert_eq!(enrollments(db, &cus, "trial_ending").await, 1);
    assert_eq!(firings(db, "portal_cancel", &cus).await, 1);
    assert_eq!(enrollments(db, &cus, "exit_survey").await, 1);
    assert_eq!(firings(db, "portal_cancel", &other).await, 0, "only Customer Portal cancels");
    assert_eq!(enrollments(db, &other, "exit_survey").await, 0);
}

/// A stage change through accounts (its history row and event), dated `at`.
async fn move_stage(db: &Db, customer: &str, to: Stage, at: i64) {
    let mut tx = db.begin().await.unwrap();
    let actor = j1msky_audit::Actor::cli();
    customers::change_stage_at(&mut tx, db.backend(), &actor, customer, Stage::Active, to, at, at).await.unwrap();
    tx.commit().await.unwrap();
}

async fn churn(db: &Db, customer: &str, at: i64) {
    move_stage(db, customer, Stage::Churned, at).await;
}

#[tokio::test]
async fn churn_spike_uses_the_trailing_weekly_average() {
    let t = TestDb::new().await;
    let db = &t.db;
    let clock = Arc::new(ManualClock::new(T0));
    // k = 2, 4 trailing weeks, at least 3.
    let c = ctx(db, &clock);
    let now = T0 + 60 * DAY;
    let week = 7 * DAY;
    // Trailing weeks (most recent first): 1, 2, 1, 0 → average 1 → a spike is more than 2.
    let mut n = 0;
    for (w, count) in [(1, 1), (2, 2), (3, 1), (4, 0)] {
        for _ in 0..count {
            n += 1;
            let gone = customer(db, &format!("old {n}"), Stage::Churned, T0).await;
            churn(db, &gone, now - w * week - DAY).await;
        }
    }
    // A churn older than the trailing weeks does not count.
    let ancient = customer(db, "ancient", Stage::Churned, T0).await;
    churn(db, &ancient, now - 5 * week - DAY).await;
    // A move to another stage is not churn.
    let paused = customer(db, "paused", Stage::Paused, T0).await;
    move_stage(db, &paused, Stage::Paused, now - DAY).await;
    // Created as churned (an import) is not a move to churned.
    customer(db, "imported", Stage::Churned, now - DAY).await;
    // A trial that ended unconverted never paid: it is not a lost customer.
    let tried = customer(db, "tried", Stage::Trial, T0).await;
    let mut tx = db.begin().await.unwrap();
    let actor = j1msky_audit::Actor::cli();
    customers::change_stage_at(
        &mut tx,
        db.backend(),
        &actor,
        &tried,
        Stage::Trial,
        Stage::Churned,
        now - DAY,
        now - DAY,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let a = customer(db, "a", Stage::Churned, T0).await;
    let b = customer(db, "b", Stage::Churned, T0).await;
    churn(db, &a, now - DAY).await;
    churn(db, &b, now - 2 * DAY).await;
    let numbers = triggers::churn_numbers(&c, now).await.unwrap();
    assert_eq!(numbers.trailing, vec![1, 2, 1, 0]);
    assert_eq!(numbers.last_week.len(), 2);
    assert!(!numbers.spike, "2 is not more than 2 × 1");
    // The count reads only the window's churned rows: on SQLite the plan is a range on
    // the (to_stage, at) index, not a scan of the stage history.
    if db.backend() == j1msky_db::Backend::Sqlite {
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT customer_id, at FROM customer_stage_changes
             WHERE to_stage = 'churned' AND at > $1 AND at <= $2 AND from_stage IS NOT NULL
               AND from_stage <> 'trial' ORDER BY at, id",
        )
        .bind(0i64)
        .bind(now)
        .fetch_all(db.pool())
        .await
        .unwrap();
        let detail = plan.iter().map(|p| p.3.clone()).collect::<Vec<_>>().join("; ");
        assert!(
            detail.contains("USING INDEX customer_stage_changes_to_stage (to_stage=? AND at>? AND at<?)"),
            "{detail}"
        );
    }

    let cc = customer(db, "c", Stage::Churned, T0).await;
    churn(db, &cc, now - 3 * DAY).await;
    // At risk: active and quiet for a week. Not at risk: active yesterday.
    let at_risk = customer(db, "at risk", Stage::Active, T0).await;
    let happy = customer(db, "happy", Stage::Active, T0).await;
    activity::mark_active(db, &happy, Source::Task, now - DAY).await;
    activity::mark_active(db, &at_risk, Source::Task, now - 8 * DAY).await;
    catch_up(&c, &clock).await;
    let numbers = triggers::churn_numbers(&c, now).await.unwrap();
    assert_eq!(numbers.last_week.len(), 3);
    assert!(numbers.spike, "3 > 2 × 1");

    let fired = triggers::sweep(&c, now, false).await.unwrap();
    let spikes: Vec<_> = fired.iter().filter(|f| f.trigger == "churn_spike").collect();
    assert_eq!(spikes.len(), 1);
    let alerts = j1msky_audit::alerts::recent(db, 10).await.unwrap();
    assert_eq!(alerts.iter().filter(|a| a.kind == "churn_spike").count(), 1);
    for gone in [&a, &b, &cc] {
        assert_eq!(enrollments(db, gone, "churn_survey").await, 1);
    }
    assert_eq!(enrollments(db, &tried, "churn_survey").await, 0, "an ended trial is not surveyed as churn");
    assert_eq!(enrollments(db, &ancient, "churn_survey").await, 0);
    assert_eq!(enrollments(db, &at_risk, "at_risk_offer").await, 1);
    assert_eq!(enrollments(db, &happy, "at_risk_offer").await, 0);
    // The same week again: nothing more.
    let again = triggers::sweep(&c, now + HOUR, false).await.unwrap();
    assert!(again.iter().all(|f| f.trigger != "churn_spike"));
    assert_eq!(j1msky_audit::alerts::recent(db, 10).await.unwrap().len(), alerts.len());
}

#[test]
fn the_shipped_catalogue_wires_every_retention_journey_to_a_trigger() {
    let c = Catalogue::from_json_str(SHIPPED).unwrap();
    for (journey, trigger) in [
        ("reengagement", "inactive"),
        ("we_miss_you", "inactive_offer"),
        ("upgrade_prompt", "limit_hit"),
        ("dunning", "payment_failed"),
        ("trial_ending", "trial_ending"),
        ("exit_survey", "portal_cancel"),
        ("loyalty", "high_usage"),
        ("churn_survey", "churn_spike_canceller"),
        ("at_risk_offer", "churn_spike_at_risk"),
    ] {
        assert_eq!(c.lifecycle.journeys[journey].entry.on, format!("trigger:{trigger}"));
    }
    let mut bad = c.clone();
    bad.lifecycle.triggers.outreach_days = 2;
    let json = serde_json::to_string(&bad).unwrap();
    let err = Catalogue::from_json_str(&json).unwrap_err().to_string();
    assert!(err.contains("lifecycle.triggers.outreach_days"), "{err}");
}
