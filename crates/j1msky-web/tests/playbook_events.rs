//! The events the onboarding and retention playbook reacts to, each found in the
//! outbox after the real action: API and task activity, every kind of plan-limit
//! refusal (one event an hour per customer and limit), a trial about to end and a
//! cancellation made in Stripe's Customer Portal.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{spawn_app_with_gateway, spawn_app_with_stripe, TestApp};
use j1msky_audit::Actor;
use j1msky_billing::{apply, changes, checkout, webhook};
use j1msky_core::vocab::Stage;
use j1msky_core::Money;
use j1msky_gateway::controls;
use j1msky_sim::SimConfig;
use serde_json::{json, Value};

async fn events(app: &TestApp, kind: &str, customer: &str) -> Vec<Value> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT payload FROM events WHERE kind = $1 AND customer_id = $2 ORDER BY seq")
            .bind(kind)
            .bind(customer)
            .fetch_all(app.db.pool())
            .await
            .expect("events");
    rows.into_iter().map(|(p,)| serde_json::from_str(&p).expect("payload")).collect()
}

async fn call(app: &TestApp, key: &str, model: &str) -> u16 {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50});
    let r = reqwest::Client::new().post(app.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await;
    r.expect("chat").status().as_u16()
}

async fn submit_task(app: &TestApp, key: &str) -> u16 {
    let body = json!({"team": "research", "prompt": "Compare three CRMs"});
    let r = reqwest::Client::new().post(app.url("/api/v1/tasks")).bearer_auth(key).json(&body).send().await;
    r.expect("task").status().as_u16()
}

#[tokio::test]
async fn api_key_use_and_task_submission_mark_the_customer_active_once_an_hour() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (id, key) = app.customer_with_key("Busy", "pro").await;
    for _ in 0..3 {
        assert_eq!(call(&app, &key, "auto").await, 200);
    }
    assert_eq!(events(&app, "customer.active", &id).await, [json!({"source": "api_key", "v": 1})], "one per hour");
    app.clock.advance_secs(3601);
    assert_eq!(call(&app, &key, "auto").await, 200);
    assert_eq!(events(&app, "customer.active", &id).await.len(), 2, "the next hour marks again");

    // A task submitted (here through the domain, as the dashboard does) marks activity too.
    let worker = app.active_customer("Delegator", "pro").await;
    let input =
        j1msky_tasks::NewTask { team: "research".into(), prompt: Some("Compare CRMs".into()), ..Default::default() };
    j1msky_tasks::submit(&app.db, &app.catalogue, &worker.id, &input, None, app.now()).await.expect("submit");
    assert_eq!(events(&app, "customer.active", &worker.id).await, [json!({"source": "task", "v": 1})]);
}

#[tokio::test]
async fn every_kind_of_plan_limit_hit_is_one_event_per_customer_and_limit_an_hour() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let limits_of =
        |evs: Vec<Value>| evs.iter().map(|e| e["limit"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>();

    // Hourly cap (429), hammered.
    let (capped, key) = app.customer_with_key("Capped", "starter").await;
    controls::set_cap(
        &app.db,
        &app.catalogue,
        &Actor::cli(),
        &format!("customer:{capped}"),
        Some(1),
        "test",
        app.now(),
    )
    .await
    .expect("cap");
    app.gateway().controls_changed();
    assert_eq!(call(&app, &key, "auto").await, 200);
    for _ in 0..3 {
        assert_eq!(call(&app, &key, "auto").await, 429);
    }
    assert_eq!(limits_of(events(&app, "plan.limit_hit", &capped).await), ["hourly_cap"]);

    // Monthly budget (402).
    let (poor, poor_key) = app.customer_with_key("Thrifty", "pro").await;
    controls::set_customer_budget(&app.db, &Actor::cli(), &poor, Some(Money::from_micros(100)), "test", app.now())
        .await
        .expect("budget");
    for _ in 0..2 {
        assert_eq!(call(&app, &poor_key, "auto").await, 402);
    }
    assert_eq!(limits_of(events(&app, "plan.limit_hit", &poor).await), ["monthly_budget"]);

    // A model outside the plan (403), and a team outside it.
    let (sleepy, paused_key) = app.customer_with_key("Sleepy", "paused").await;
    for _ in 0..2 {
        assert_eq!(call(&app, &paused_key, "claude-opus").await, 403);
        assert_ne!(submit_task(&app, &paused_key).await, 201);
    }
    let mut hits = limits_of(events(&app, "plan.limit_hit", &sleepy).await);
    hits.sort();
    assert_eq!(hits, ["model_not_in_plan", "team_not_in_plan"]);
    let stored = events(&app, "plan.limit_hit", &sleepy).await;
    assert!(stored.iter().all(|e| e["v"] == 1 && e["detail"].as_str().is_some_and(|d| !d.is_empty())), "{stored:?}");

    // The next hour the same refusal is news again.
    app.clock.advance_secs(3601);
    assert_eq!(call(&app, &paused_key, "claude-opus").await, 403);
    assert_eq!(events(&app, "plan.limit_hit", &sleepy).await.len(), 3);
}

async fn control(fake: &j1msky_sim::stripe::RunningStripe, path: &str, body: Value) {
    let r =
        reqwest::Client::new().post(format!("{}/_sim/{path}", fake.base())).json(&body).send().await.expect("control");
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap_or_default());
}

async fn settle(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe) {
    let stored = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM stripe_events").fetch_one(app.db.pool()).await.expect("count");
        n
    };
    for _ in 0..1000 {
        let s: Value =
            reqwest::get(format!("{}/_sim/state", fake.base())).await.expect("state").json().await.expect("json");
        let made = s["events"].as_i64().unwrap_or(0) - s["held"].as_i64().unwrap_or(0);
        if made > 0 && stored().await >= made {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    while webhook::apply_pending(&app.db, &ctx, 100, app.now()).await.expect("apply") > 0 {}
}

async fn trialing(
    app: &TestApp,
    fake: &j1msky_sim::stripe::RunningStripe,
    stripe: &j1msky_billing::Stripe,
    name: &str,
) -> (String, String) {
    let c = j1msky_accounts::customers::create(
        &app.db,
        &app.catalogue,
        &Actor::cli(),
        j1msky_accounts::customers::NewCustomer {
            name: name.into(),
            contact_email: Some(format!("{}@example.test", name.to_lowercase())),
            stage: Some(Stage::Qualified),
            ..Default::default()
        },
        app.now(),
    )
    .await
    .expect("customer");
    let request = checkout::CheckoutRequest {
        plan: "starter".into(),
        success_url: "https://app.example.test/app/billing?done=1".into(),
        cancel_url: "https://app.example.test/app/billing".into(),
        attempt: "1".into(),
    };
    let link = checkout::start(&app.db, stripe, &app.catalogue, &c.id, &request, app.now()).await.expect("checkout");
    control(fake, &format!("checkout/{}/complete", link.session_id), json!({})).await;
    settle(app, fake).await;
    let (sub,): (String,) = sqlx::query_as("SELECT id FROM subscriptions WHERE customer_id = $1")
        .bind(&c.id)
        .fetch_one(app.db.pool())
        .await
        .expect("subscription");
    (c.id, sub)
}

#[tokio::test]
async fn stripe_sends_the_trial_notice_and_it_is_an_event() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, sub) = trialing(&app, &fake, &stripe, "Trier").await;
    control(&fake, &format!("subscriptions/{sub}/trial_will_end"), json!({})).await;
    settle(&app, &fake).await;
    let notices = events(&app, "subscription.trial_will_end", &id).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["subscription"], sub);
    assert!(notices[0]["current_period_end"].as_i64().is_some() || notices[0]["trial_end"].as_i64().is_some());
}

#[tokio::test]
async fn a_cancellation_in_the_customer_portal_is_an_event_and_our_own_cancel_is_not() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, sub) = trialing(&app, &fake, &stripe, "Portal").await;
    control(&fake, &format!("subscriptions/{sub}/portal_cancel"), json!({"at_period_end": true})).await;
    settle(&app, &fake).await;
    assert_eq!(
        events(&app, "subscription.cancelled", &id).await,
        [json!({"subscription": sub, "source": "customer_portal", "at_period_end": true, "v": 1})]
    );

    // Our own cancel flow (through the API, with our idempotency key) is not a portal cancellation.
    let (other, other_sub) = trialing(&app, &fake, &stripe, "Ourflow").await;
    changes::cancel(&app.db, &stripe, &other).await.expect("cancel");
    settle(&app, &fake).await;
    let (cancelling,): (i64,) = sqlx::query_as("SELECT cancel_at_period_end FROM subscriptions WHERE id = $1")
        .bind(&other_sub)
        .fetch_one(app.db.pool())
        .await
        .expect("mirror");
    assert_eq!(cancelling, 1, "the cancellation was applied");
    assert!(events(&app, "subscription.cancelled", &other).await.is_empty());

    // Ending it at once in the portal.
    let (third, third_sub) = trialing(&app, &fake, &stripe, "Atonce").await;
    control(&fake, &format!("subscriptions/{third_sub}/portal_cancel"), json!({"at_period_end": false})).await;
    settle(&app, &fake).await;
    let ended = events(&app, "subscription.cancelled", &third).await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["at_period_end"], false);
}

#[tokio::test]
async fn a_login_is_an_event() {
    let app = common::spawn_app().await;
    let id = app.customer_with_owner("Logger", "owner@logger.test").await;
    let resp = app.login(&app.browser(), "owner@logger.test", common::PASSWORD).await;
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let logins = events(&app, "user.logged_in", &id).await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert!(logins[0]["user_id"].as_str().is_some_and(|u| u.starts_with("usr")), "{logins:?}");
}

/// The Customer Portal j1msky sends a customer to is opened with the configuration `stripe
/// sync` keeps: no plan switch there (a dearer plan goes through the billing page, paid at
/// once), no cancel at once with a prorated credit; a cancel at the period's end is
/// offered. Sessions used to be opened with the account's default configuration, whatever
/// the Dashboard had opened up. A configuration changed in the Dashboard is put back by the
/// next sync.
#[tokio::test]
async fn the_customer_portal_offers_no_plan_switch_and_cancels_only_at_the_period_s_end() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, sub) = trialing(&app, &fake, &stripe, "Switcher").await;
    let url = checkout::portal(&app.db, &stripe, &id, "https://app.example.test/app/billing").await.expect("portal");
    let session = url.rsplit('/').next().expect("session id").to_string();
    let pro = j1msky_billing::sync::stored_id(&app.db, "price:pro").await.expect("stored").expect("pro's price");
    let act = |action: &'static str, body: Value| {
        let url = format!("{}/_sim/portal/{session}/{action}", fake.base());
        async move { reqwest::Client::new().post(url).json(&body).send().await.expect("portal action") }
    };
    let switch = act("switch", json!({"subscription": sub, "price": pro})).await;
    assert_eq!(switch.status(), 400, "the portal offered a plan switch: {}", switch.text().await.unwrap_or_default());
    let now = act("cancel", json!({"subscription": sub, "at_period_end": false})).await;
    assert_eq!(now.status(), 400, "the portal offered a cancel at once: {}", now.text().await.unwrap_or_default());
    let later = act("cancel", json!({"subscription": sub, "at_period_end": true})).await;
    assert!(later.status().is_success(), "{}", later.text().await.unwrap_or_default());
    settle(&app, &fake).await;
    let (plan, cancelling): (Option<String>, i64) =
        sqlx::query_as("SELECT plan, cancel_at_period_end FROM subscriptions WHERE id = $1")
            .bind(&sub)
            .fetch_one(app.db.pool())
            .await
            .expect("mirror");
    assert_eq!((plan.as_deref(), cancelling), (Some("starter"), 1));

    // Someone opens plan switching in the Dashboard; the next sync closes it again.
    let config = j1msky_billing::sync::stored_id(&app.db, "portal").await.expect("stored").expect("configuration");
    let opened = json!({"features": {"subscription_update": {"enabled": true}}});
    stripe.post(&format!("billing_portal/configurations/{config}"), &opened, "dashboard-edit").await.expect("edit");
    let report = j1msky_billing::sync::sync(&app.db, &stripe, &app.catalogue, app.now()).await.expect("sync");
    assert_eq!(report.updated, ["portal"], "{report:?}");
    let held = stripe.get(&format!("billing_portal/configurations/{config}"), &Value::Null).await.expect("config");
    assert_eq!(held["features"]["subscription_update"]["enabled"], false, "{held}");
    let again = j1msky_billing::sync::sync(&app.db, &stripe, &app.catalogue, app.now()).await.expect("sync");
    assert!(again.changed_nothing() && again.unchanged.contains(&"portal".to_string()), "{again:?}");
}
