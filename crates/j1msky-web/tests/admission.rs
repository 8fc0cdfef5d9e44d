//! Who may use the service: the model API and the task queue admit a customer only
//! while its stage, plan and payments allow it, and refuse everyone else the same way
//! (402 `no_active_plan`); a failed payment gives a grace period, then restricts.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{spawn_app_with_gateway, spawn_app_with_gateway_and_stripe, TestApp, WEBHOOK_SECRET};
use j1msky_accounts::{api_keys, customers};
use j1msky_audit::Actor;
use j1msky_billing::{apply, checkout, webhook};
use j1msky_core::vocab::Stage;
use j1msky_sim::SimConfig;
use serde_json::{json, Value};

async fn customer_key(app: &TestApp, name: &str, stage: Stage, plan: Option<&str>) -> (String, String) {
    let c = customers::create(
        &app.db,
        &app.catalogue,
        &Actor::cli(),
        customers::NewCustomer {
            name: name.into(),
            contact_email: Some(format!("{}@example.test", name.to_lowercase())),
            stage: Some(stage),
            plan: plan.map(String::from),
            ..Default::default()
        },
        app.now(),
    )
    .await
    .expect("customer");
    let (_, secret) = api_keys::create(&app.db, &Actor::cli(), &c.id, "test", app.now()).await.expect("key");
    (c.id, secret)
}

/// An owner user (with the test password) for the customer.
async fn owner_of(app: &TestApp, customer: &str, email: &str) {
    app.user_of(customer, email, j1msky_core::vocab::UserRole::Owner).await;
}

/// A customer without a plan with a card on file (pay-per-task), and its API key.
async fn pay_per_task_customer(app: &TestApp, name: &str) -> (String, String) {
    let (id, key) = customer_key(app, name, Stage::Active, None).await;
    let mut tx = app.db.begin().await.expect("tx");
    j1msky_accounts::access::set_payment_method(&mut tx, app.db.backend(), &id, true, app.now())
        .await
        .expect("payment method");
    tx.commit().await.expect("commit");
    app.gateway().customer_changed(&id);
    (id, key)
}

/// (status, error code or type, message) of an OpenAI-format call.
async fn chat(app: &TestApp, key: &str) -> (u16, String, String) {
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50});
    let r = reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("chat");
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"]["code"].as_str().unwrap_or("").into(), v["error"]["message"].as_str().unwrap_or("").into())
}

async fn anthropic(app: &TestApp, key: &str) -> (u16, String) {
    let body = json!({"model": "claude-sonnet", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]});
    let r = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .expect("messages");
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"]["message"].as_str().unwrap_or("").into())
}

async fn task(app: &TestApp, key: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/tasks"))
        .bearer_auth(key)
        .json(&json!({"team": "research", "prompt": "Compare three CRMs"}))
        .send()
        .await
        .expect("task");
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"]["code"].as_str().unwrap_or("").into())
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(app.db.pool()).await.expect(sql);
    n
}

#[tokio::test]
async fn leads_prospects_and_churned_customers_are_refused_on_both_paths_and_nothing_is_stored() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let refused = [
        ("Lead", Stage::Lead, None),
        ("Prospect", Stage::Qualified, None),
        ("Planless", Stage::Active, None),
        ("Gone", Stage::Churned, Some("pro")),
        ("Chosen", Stage::Qualified, Some("pro")),
    ];
    for (name, stage, plan) in refused {
        let (_, key) = customer_key(&app, name, stage, plan).await;
        let (status, code, message) = chat(&app, &key).await;
        assert_eq!((status, code.as_str()), (402, "no_active_plan"), "{name}: {message}");
        assert!(message.contains("plan"), "{name}: the refusal says why: {message}");
        let (status, message) = anthropic(&app, &key).await;
        assert_eq!(status, 402, "{name} on /v1/messages: {message}");
        assert_eq!(task(&app, &key).await, (402, "no_active_plan".to_string()), "{name} on /api/v1/tasks");
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM tasks").await, 0);
    app.gateway().flush().await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM llm_calls").await, 0, "no call reached a model");

    // Trials and actives with a plan are in; so is a paused customer, within the pause plan.
    for (name, stage, plan) in [("Trier", Stage::Trial, "pro"), ("Payer", Stage::Active, "pro")] {
        let (_, key) = customer_key(&app, name, stage, Some(plan)).await;
        assert_eq!(chat(&app, &key).await.0, 200, "{name}");
        assert_eq!(task(&app, &key).await.0, 201, "{name}");
    }
    let pause = app.catalogue.pause_plan.clone();
    let (_, key) = customer_key(&app, "Sleeper", Stage::Paused, Some(&pause)).await;
    assert_eq!(chat(&app, &key).await.0, 200, "paused: API calls within the pause plan");
    let (status, code) = task(&app, &key).await;
    assert_ne!(code, "no_active_plan", "paused: the pause plan's own limits answer ({status})");

    // An operator running a customer outside Stripe: stage and plan set by hand admit it.
    let (id, key) = customer_key(&app, "Handshake", Stage::Qualified, Some("pro")).await;
    assert_eq!(chat(&app, &key).await.0, 402);
    customers::set_stage(&app.db, &Actor::cli(), &id, Stage::Active, app.now()).await.expect("stage");
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200);
    customers::set_stage(&app.db, &Actor::cli(), &id, Stage::Churned, app.now()).await.expect("stage");
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.1, "no_active_plan", "churned: refused again");
}

async fn delivered_and_applied(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe) {
    for _ in 0..500 {
        let s: Value =
            reqwest::get(format!("{}/_sim/state", fake.base())).await.expect("state").json().await.expect("json");
        let made = s["events"].as_i64().unwrap_or(0) - s["held"].as_i64().unwrap_or(0);
        if made > 0 && count(app, "SELECT COUNT(*) FROM stripe_events").await >= made {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    while webhook::apply_pending(&app.db, &ctx, 100, app.now()).await.expect("apply") > 0 {}
    j1msky_accounts::reactions::catch_up(&app.db, &app.clock).await.expect("accounts reactions");
}

async fn control(fake: &j1msky_sim::stripe::RunningStripe, path: &str, body: Value) {
    let r =
        reqwest::Client::new().post(format!("{}/_sim/{path}", fake.base())).json(&body).send().await.expect("control");
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap_or_default());
}

/// A completed, paid checkout for `plan` (the customer's free trial spent first), its
/// webhooks applied.
async fn paid_checkout(
    app: &TestApp,
    fake: &j1msky_sim::stripe::RunningStripe,
    stripe: &j1msky_billing::Stripe,
    id: &str,
    plan: &str,
) {
    let request = checkout::CheckoutRequest {
        plan: plan.into(),
        success_url: "https://app.example.test/app/billing?done=1".into(),
        cancel_url: "https://app.example.test/app/billing".into(),
        attempt: "1".into(),
    };
    j1msky_billing::offers::record_trial_had(&app.db, id, "cli", app.now()).await.expect("trial had");
    let link = checkout::start(&app.db, stripe, &app.catalogue, id, &request, app.now()).await.expect("checkout");
    control(fake, &format!("checkout/{}/complete", link.session_id), json!({})).await;
    delivered_and_applied(app, fake).await;
}

/// A paid Pro checkout (a call admitted), then a renewal the card declines, applied: the
/// customer is `past_due`, in its grace. Returns the subscription.
async fn paid_then_declined(
    app: &TestApp,
    fake: &j1msky_sim::stripe::RunningStripe,
    stripe: &j1msky_billing::Stripe,
    id: &str,
    key: &str,
) -> String {
    paid_checkout(app, fake, stripe, id, "pro").await;
    app.gateway().customer_changed(id);
    assert_eq!(chat(app, key).await.0, 200, "paid: in");
    let sub: String = sqlx::query_scalar("SELECT id FROM subscriptions WHERE customer_id = $1")
        .bind(id)
        .fetch_one(app.db.pool())
        .await
        .expect("sub");
    control(fake, &format!("subscriptions/{sub}/renew"), json!({"fail": true})).await;
    delivered_and_applied(app, fake).await;
    app.gateway().customer_changed(id);
    sub
}

async fn events(app: &TestApp, kind: &str, customer: &str) -> Vec<Value> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT payload FROM events WHERE kind = $1 AND customer_id = $2 ORDER BY id")
            .bind(kind)
            .bind(customer)
            .fetch_all(app.db.pool())
            .await
            .expect("events");
    rows.into_iter().map(|(p,)| serde_json::from_str(&p).expect("payload")).collect()
}

#[tokio::test]
async fn a_failed_payment_keeps_access_for_the_grace_period_then_restricts_until_paid() {
    let (app, fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (id, key) = customer_key(&app, "Latepay", Stage::Qualified, None).await;
    let owner = "owner@latepay.test";
    owner_of(&app, &id, owner).await;
    let sub = paid_then_declined(&app, &fake, &stripe, &id, &key).await;
    assert_eq!(chat(&app, &key).await.0, 200, "past due: still in during the grace period");
    assert_eq!(task(&app, &key).await.0, 201);
    let changes = events(&app, "customer.billing_status_changed", &id).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["to"], "past_due");
    let browser = app.browser();
    app.login(&browser, owner, common::PASSWORD).await;
    let home = browser.get(app.url("/app")).send().await.expect("app").text().await.expect("body");
    assert!(home.contains("payment failed"), "the owner sees a banner: {home}");

    // Day 8 of 7: restricted like a churned customer, with an event saying so.
    app.clock.advance_secs(8 * 86_400);
    app.gateway().customer_changed(&id);
    let (status, code, message) = chat(&app, &key).await;
    assert_eq!((status, code.as_str()), (402, "no_active_plan"), "{message}");
    assert!(message.contains("payment"), "the refusal names the failed payment: {message}");
    assert_eq!(task(&app, &key).await, (402, "no_active_plan".to_string()));
    let n = j1msky_billing::jobs::restrict_overdue(&app.db, &app.catalogue, app.now()).await.expect("restrict");
    assert_eq!(n, 1);
    assert_eq!(j1msky_billing::jobs::restrict_overdue(&app.db, &app.catalogue, app.now()).await.expect("again"), 0);
    assert_eq!(events(&app, "customer.access_restricted", &id).await.len(), 1, "once, however often the job runs");

    // Paid at last: in again.
    control(&fake, "clock", json!({"advance_secs": 8 * 86_400})).await;
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    delivered_and_applied(&app, &fake).await;
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200, "paid again: in");
    let changes = events(&app, "customer.billing_status_changed", &id).await;
    assert_eq!(changes.last().map(|c| c["to"].clone()), Some(Value::Null), "{changes:?}");
}

#[tokio::test]
async fn an_unpaid_subscription_restricts_at_once() {
    let (app, fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (id, key) = customer_key(&app, "Nopay", Stage::Qualified, None).await;
    paid_checkout(&app, &fake, &stripe, &id, "starter").await;
    let sub: String = sqlx::query_scalar("SELECT id FROM subscriptions WHERE customer_id = $1")
        .bind(&id)
        .fetch_one(app.db.pool())
        .await
        .expect("sub");
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({"fail": true, "status": "unpaid"})).await;
    delivered_and_applied(&app, &fake).await;
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.1, "no_active_plan");
    assert_eq!(
        events(&app, "customer.billing_status_changed", &id).await.last().map(|c| c["to"].clone()),
        Some(json!("unpaid"))
    );
}

#[tokio::test]
async fn a_test_mode_server_refuses_live_events_and_stores_nothing() {
    let (app, _fake, _stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let now = app.now() / 1_000_000;
    let body = json!({"id": "evt_live1", "object": "event", "type": "invoice.paid", "created": now, "livemode": true,
                      "data": {"object": {"id": "in_live", "amount_paid": 4900}}})
    .to_string();
    let r = reqwest::Client::new()
        .post(app.url("/webhooks/stripe"))
        .header("stripe-signature", j1msky_billing::signature::header(WEBHOOK_SECRET, now, body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.expect("json");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains("livemode")), "{err}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM stripe_events").await, 0);
}

#[tokio::test]
async fn a_pay_per_task_customer_is_admitted_only_while_a_payment_method_is_on_file() {
    let (app, fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (id, key) = customer_key(&app, "Walkin", Stage::Lead, None).await;
    assert_eq!(chat(&app, &key).await.1, "no_active_plan", "no plan, no card: refused");
    let sc = j1msky_billing::usage::ensure_stripe_customer(&app.db, &stripe, &id, app.now()).await.expect("customer");

    let set_card = |card: &'static str| {
        let (stripe, sc) = (stripe.clone(), sc.clone());
        async move {
            let params = json!({"invoice_settings": {"default_payment_method": card}});
            stripe.post(&format!("customers/{sc}"), &params, &format!("card-{card}")).await.expect("update customer");
        }
    };
    set_card("pm_card_visa").await;
    delivered_and_applied(&app, &fake).await;
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200, "a card on file admits pay-per-task");
    assert_eq!(task(&app, &key).await.0, 201);
    assert_eq!(events(&app, "customer.payment_method_changed", &id).await.len(), 1);

    // The card removed: refused again.
    set_card("").await;
    delivered_and_applied(&app, &fake).await;
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.1, "no_active_plan");
}

async fn sum_of(app: &TestApp, sql: &str, customer: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).bind(customer).fetch_one(app.db.pool()).await.expect(sql);
    n
}

#[tokio::test]
async fn a_pay_per_task_customer_s_direct_api_calls_are_charged_per_day_and_billed_once() {
    let (app, _fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (walk_in, key) = pay_per_task_customer(&app, "Walkin").await;
    let (subscriber, sub_key) = customer_key(&app, "Subscriber", Stage::Active, Some("pro")).await;
    for _ in 0..3 {
        assert_eq!(chat(&app, &key).await.0, 200, "a pay-per-task customer with a card calls the API");
    }
    assert_eq!(chat(&app, &sub_key).await.0, 200);
    // A strategy call Opus did not answer in time (Sonnet did): the timed-out attempt is
    // the business's cost, booked at its most, not the customer's charge.
    app.script_faults(json!({"fault": "timeout", "model": "claude-opus-4-5", "times": 1})).await;
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "plan it"}], "max_tokens": 2000});
    let r = reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-j1msky-category", "strategy")
        .json(&body)
        .send()
        .await
        .expect("strategy call");
    assert_eq!(r.status().as_u16(), 200, "Sonnet answered after Opus timed out");
    app.gateway().flush().await;
    let cost = sum_of(
        &app,
        "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = $1 AND outcome = 'ok'",
        &walk_in,
    )
    .await;
    assert!(cost > 0, "the calls are in the cost ledger");
    let timed_out = sum_of(
        &app,
        "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = $1 AND outcome = 'timeout'",
        &walk_in,
    )
    .await;
    assert!(timed_out > 10_000, "booked as cost, since the provider may bill it: {timed_out}");

    // The day is still open: nothing is charged yet.
    let meter = |now| j1msky_tasks::api_usage::meter_api_calls(&app.db, &app.catalogue, now);
    assert_eq!(meter(app.now()).await.expect("meter"), 0);

    // Next day: one charge for the day, three times the answered calls' model cost rounded
    // up to the cent (and the subscriber's day metered as included in its plan).
    app.clock.advance_secs(86_400);
    assert_eq!(meter(app.now()).await.expect("meter"), 2);
    assert_eq!(meter(app.now()).await.expect("again"), 0, "a day is metered once");
    let charges: Vec<(Option<String>, String, i64, Option<String>)> =
        sqlx::query_as("SELECT task_id, tier, amount_micros, api_day FROM usage_charges WHERE customer_id = $1")
            .bind(&walk_in)
            .fetch_all(app.db.pool())
            .await
            .expect("charges");
    let expected = (cost * 3 + 9_999) / 10_000 * 10_000;
    let day = j1msky_tasks::api_usage::day_label((app.now() - 86_400_000_000) / 86_400_000_000);
    assert_eq!(charges, vec![(None, "api".to_string(), expected, Some(day))]);
    let subscriber_charges =
        sum_of(&app, "SELECT COUNT(*) FROM usage_charges WHERE customer_id = $1", &subscriber).await;
    assert_eq!(subscriber_charges, 0, "a subscriber's calls are in the plan");
    assert_eq!(events(&app, "usage.api_metered", &walk_in).await.len(), 1);
    let included = events(&app, "usage.api_metered", &subscriber).await;
    assert_eq!(included.len(), 1, "{included:?}");
    assert_eq!(included[0]["charge_micros"], 0, "{included:?}");
    assert!(included[0]["cost_micros"].as_i64().is_some_and(|c| c > 0), "its model cost: {included:?}");

    // Reported to Stripe like a task's charge: once.
    let reported = j1msky_billing::usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await;
    assert_eq!(reported.expect("report"), 1);
    let again = j1msky_billing::usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await;
    assert_eq!(again.expect("report again"), 0);
    let sent = events(&app, "usage.reported", &walk_in).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["amount_cents"], expected / 10_000);
    assert!(sent[0]["invoice_item"].as_str().is_some_and(|i| i.starts_with("ii_")), "{sent:?}");
}

/// Direct API calls admitted as pay-per-task are charged even when the customer starts a
/// plan before their day is metered: which calls were pay-per-task was decided by the
/// plan at metering time, so subscribing (a trial is enough) before the day closed left
/// the day's calls unbilled for good. Calls after the plan started are the plan's.
#[tokio::test]
async fn api_calls_made_before_a_plan_starts_are_charged_though_it_starts_before_the_day_is_metered() {
    let (app, _fake, _stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (walk_in, key) = pay_per_task_customer(&app, "Walkin").await;
    for _ in 0..3 {
        assert_eq!(chat(&app, &key).await.0, 200);
    }
    app.gateway().flush().await;
    let ledger = "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = $1";
    let before = sum_of(&app, ledger, &walk_in).await;
    assert!(before > 0);

    // An hour later the customer subscribes, as billing tells accounts.
    app.clock.advance_secs(3_600);
    let state = j1msky_core::events::CustomerSubscriptionState {
        plan: Some("pro".into()),
        stage: Some("trial".into()),
        billing_status: None,
        at: app.now(),
        subscription_status: Some("trialing".into()),
        trial: None,
        period: None,
        period_budget_micros: None,
    };
    let mut tx = app.db.begin().await.expect("tx");
    j1msky_db::outbox::emit_typed(&mut tx, app.db.backend(), state, Some(&walk_in), app.now()).await.expect("emit");
    tx.commit().await.expect("commit");
    j1msky_accounts::reactions::catch_up(&app.db, &app.clock).await.expect("accounts reactions");
    app.gateway().customer_changed(&walk_in);
    app.clock.advance_secs(60);
    for _ in 0..2 {
        assert_eq!(chat(&app, &key).await.0, 200, "now on a plan");
    }
    app.gateway().flush().await;
    assert!(sum_of(&app, ledger, &walk_in).await > before);

    // The day closes: the calls before the plan are charged, those after are not.
    app.clock.advance_secs(86_400);
    let metered = j1msky_tasks::api_usage::meter_api_calls(&app.db, &app.catalogue, app.now()).await;
    assert_eq!(metered.expect("meter"), 1);
    let charged = sum_of(
        &app,
        "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) FROM usage_charges WHERE customer_id = $1",
        &walk_in,
    )
    .await;
    assert_eq!(charged, j1msky_tasks::api_usage::api_charge(&app.catalogue, before));
}

/// A pay-per-task customer has an hourly cap of its own (`pay_per_task_calls_per_hour`):
/// without one, a single walk-in with a card could spend the business's whole hourly cap
/// and day budget, and every subscriber got 429 or 402. The operator's cap on the
/// customer still wins.
#[tokio::test]
async fn a_pay_per_task_customer_has_an_hourly_cap_of_its_own() {
    let mut catalogue = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).expect("cat");
    catalogue.pay_per_task_calls_per_hour = 3;
    let app = common::spawn_app_with_catalogue(SimConfig::default(), catalogue).await;
    let (walk_in, key) = pay_per_task_customer(&app, "Walkin").await;
    let (_, sub_key) = customer_key(&app, "Subscriber", Stage::Active, Some("pro")).await;
    for i in 0..3 {
        assert_eq!(chat(&app, &key).await.0, 200, "call {i}");
    }
    let (status, code, message) = chat(&app, &key).await;
    assert_eq!(status, 429, "{code}: {message}");
    assert!(message.contains(&format!("customer:{walk_in}")) || code.contains("rate"), "{code}: {message}");
    assert_eq!(chat(&app, &sub_key).await.0, 200, "others are not held up");
}

/// A subscriber without a budget of its own is held to its plan's `monthly_model_budget`:
/// without one, a flat-price customer's direct calls (or unlimited tasks) could spend the
/// business's whole daily budget, switch the business to its cheaper modes and leave every
/// other customer refused until the next day. The operator's budget for the customer
/// replaces the plan's.
#[tokio::test]
async fn a_subscriber_is_held_to_its_plan_s_monthly_model_budget() {
    let mut catalogue = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).expect("cat");
    // Less than one call's reservation: the plan's budget refuses the first call.
    let tiny = j1msky_core::Money::from_micros(1);
    catalogue.plans.get_mut("pro").expect("pro").monthly_model_budget = Some(tiny);
    let app = common::spawn_app_with_catalogue(SimConfig::default(), catalogue).await;
    let (held, key) = customer_key(&app, "Flatrate", Stage::Active, Some("pro")).await;
    let (status, code, message) = chat(&app, &key).await;
    assert_eq!(status, 402, "{code}: {message}");
    assert_eq!(code, "budget_exceeded");
    assert!(message.contains(&format!("customer:{held}:month")), "the customer's own month: {message}");
    app.gateway().flush().await;
    let calls = sum_of(&app, "SELECT COUNT(*) FROM llm_calls WHERE customer_id = $1", &held).await;
    assert_eq!(calls, 0, "no model was called");
    let budget = j1msky_gateway::limits::customer_month(&app.db, &app.catalogue, &held, app.now())
        .await
        .expect("month")
        .map(|(budget, _, _)| budget);
    assert_eq!(budget, Some(tiny), "the customer's month shows the plan's budget");
    // An operator's budget for a customer replaces the plan's.
    let (trusted, trusted_key) = customer_key(&app, "Trusted", Stage::Active, Some("pro")).await;
    let room = j1msky_core::Money::from_micros(5_000_000);
    j1msky_gateway::controls::set_customer_budget(&app.db, &Actor::cli(), &trusted, Some(room), "test", app.now())
        .await
        .expect("budget");
    app.gateway().customer_changed(&trusted);
    assert_eq!(chat(&app, &trusted_key).await.0, 200, "the operator's budget for the customer");
    // Still refused: one customer's plan budget does not hold up the others.
    assert_eq!(chat(&app, &key).await.0, 402);
}

/// A streamed call's ledger row is dated when it settles, as a whole answer's is when it
/// comes back: dated when the stream opened, a pay-per-task stream still running when its
/// day was metered landed in a day already charged, and was never billed (a night of long
/// streams opened at 23:59 cost the business and nobody paid).
#[tokio::test]
async fn a_stream_settled_after_its_day_was_metered_is_still_charged() {
    let sim = SimConfig { chunk_delay: std::time::Duration::from_millis(150), ..SimConfig::default() };
    let (app, _fake, _stripe) = spawn_app_with_gateway_and_stripe(sim).await;
    let (walk_in, key) = pay_per_task_customer(&app, "Streamer").await;
    let ledger = "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = $1";
    let charged = "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) FROM usage_charges WHERE customer_id = $1";
    let meter = |now| j1msky_tasks::api_usage::meter_api_calls(&app.db, &app.catalogue, now);
    // A small call today, then a stream opened today that is still running at midnight.
    assert_eq!(chat(&app, &key).await.0, 200);
    app.gateway().flush().await;
    let first = sum_of(&app, ledger, &walk_in).await;
    let stream = reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "auto", "stream": true, "max_tokens": 50,
                      "messages": [{"role": "user", "content": "a long answer please"}]}))
        .send()
        .await
        .expect("stream opened");
    assert_eq!(stream.status(), 200);
    // The day closes and is metered while the stream runs: the small call alone.
    app.clock.advance_secs(86_400 + 20 * 60);
    assert_eq!(meter(app.now()).await.expect("meter"), 1);
    assert_eq!(sum_of(&app, charged, &walk_in).await, j1msky_tasks::api_usage::api_charge(&app.catalogue, first));
    // The stream ends; its cost is charged with the day it settled in.
    let body = stream.text().await.expect("stream body");
    assert!(body.contains("[DONE]"), "{body}");
    app.gateway().flush().await;
    let streamed = sum_of(&app, ledger, &walk_in).await - first;
    assert!(streamed > 0, "the stream is in the ledger");
    app.clock.advance_secs(86_400);
    assert_eq!(meter(app.now()).await.expect("meter"), 1, "the stream's day is charged");
    let want = j1msky_tasks::api_usage::api_charge(&app.catalogue, first)
        + j1msky_tasks::api_usage::api_charge(&app.catalogue, streamed);
    assert_eq!(sum_of(&app, charged, &walk_in).await, want);
}

/// One customer's model calls may spend at most `routing.customer_daily_share_percent` of
/// the business's day (the shipped catalogue: 25 %): without it one subscriber could spend
/// nearly the whole day (the shipped Starter's month budget, $49, is nearly the shipped
/// day's $50) and leave every other customer refused until the next day. Another customer
/// is not held up, and a contract customer (a plan with `custom_limits`) is held to its
/// contract instead.
#[tokio::test]
async fn one_customer_cannot_spend_more_than_its_share_of_the_business_s_day() {
    let catalogue = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).expect("cat");
    assert_eq!(catalogue.routing.customer_daily_share_percent, Some(25), "the shipped share");
    let app = common::spawn_app_with_catalogue(SimConfig::default(), catalogue).await;
    // A day of $0.01: a quarter of it is a handful of calls.
    let day = j1msky_core::Money::from_micros(10_000);
    j1msky_gateway::controls::set_daily_budget(&app.db, &Actor::cli(), Some(day), "test", app.now())
        .await
        .expect("budget");
    app.gateway().controls_changed();
    let (greedy, key) = customer_key(&app, "Greedy", Stage::Active, Some("pro")).await;
    let spent = "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = $1";
    let mut answered = 0;
    let refusal = loop {
        let (status, code, message) = chat(&app, &key).await;
        if status != 200 {
            break (status, code, message);
        }
        answered += 1;
        assert!(answered < 100, "never refused");
    };
    assert!(answered >= 1, "the share admits calls before it binds");
    assert_eq!((refusal.0, refusal.1.as_str()), (402, "budget_exceeded"), "{refusal:?}");
    assert!(refusal.2.contains(&format!("customer:{greedy}:day")), "the customer's share of the day: {}", refusal.2);
    app.gateway().flush().await;
    let ledger = sum_of(&app, spent, &greedy).await;
    assert!(ledger <= 2_500, "never more than a quarter of the day");
    // What the customer's home shows: the share and what the calls spent of it.
    let today = j1msky_gateway::limits::customer_day(&app.db, &app.catalogue, &greedy, app.now())
        .await
        .expect("today")
        .map(|(cap, spent, _)| (cap.micros(), spent.micros()));
    assert_eq!(today, Some((2_500, ledger)));
    let hits: Vec<(String,)> =
        sqlx::query_as("SELECT payload FROM events WHERE kind = 'plan.limit_hit' AND customer_id = $1")
            .bind(&greedy)
            .fetch_all(app.db.pool())
            .await
            .expect("events");
    assert!(hits.iter().any(|(p,)| p.contains("daily_share")), "{hits:?}");
    // Another subscriber is not held up.
    let (_, other) = customer_key(&app, "Other", Stage::Active, Some("starter")).await;
    assert_eq!(chat(&app, &other).await.0, 200);
    // A contract customer spends past a quarter of the day (its contract holds it instead).
    let (big, big_key) = customer_key(&app, "BigCo", Stage::Active, Some("enterprise")).await;
    for i in 0..100 {
        app.gateway().flush().await;
        if sum_of(&app, spent, &big).await > 2_500 {
            break;
        }
        let (status, code, message) = chat(&app, &big_key).await;
        assert_eq!(status, 200, "call {i}: {code} {message}");
    }
    assert!(sum_of(&app, spent, &big).await > 2_500);
    let contract = j1msky_gateway::limits::customer_day(&app.db, &app.catalogue, &big, app.now()).await.expect("today");
    assert_eq!(contract, None, "no share for a contract");
}

/// (status, error code and message) of a direct call for `max_tokens` on Claude Sonnet.
async fn sonnet(app: &TestApp, key: &str, max_tokens: u32) -> (u16, Value) {
    let body =
        json!({"model": "claude-sonnet", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens});
    let r = reqwest::Client::new().post(app.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await;
    let r = r.expect("call");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A one-day free trial of Starter started at Checkout, its webhooks applied.
async fn one_day_checkout_trial(
    app: &TestApp,
    fake: &j1msky_sim::stripe::RunningStripe,
    stripe: &j1msky_billing::Stripe,
    id: &str,
) {
    let mut one_day = (*app.catalogue).clone();
    one_day.trial_days = 1;
    let request = checkout::CheckoutRequest {
        plan: "starter".into(),
        success_url: "https://app.example.test/app/billing?done=1".into(),
        cancel_url: "https://app.example.test/app/billing".into(),
        attempt: "1".into(),
    };
    let link = checkout::start(&app.db, stripe, &one_day, id, &request, app.now()).await.expect("checkout");
    control(fake, &format!("checkout/{}/complete", link.session_id), json!({})).await;
    delivered_and_applied(app, fake).await;
}

/// A free trial started at Checkout had no model-spend limit of its own: its direct calls
/// could spend the plan's whole monthly budget (two, across a month's end) and the
/// customer cancel before paying anything. It is held to the budget of a granted trial
/// of the same length (the plan's price for the trial's share of a month) until Stripe
/// reports the first period paid.
#[tokio::test]
async fn a_checkout_trial_s_direct_calls_are_held_to_the_trial_s_budget() {
    let (app, fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (id, key) = customer_key(&app, "Trier", Stage::Qualified, None).await;
    // A one-day trial at Checkout: $49 × 1/30 = $1.633333 of direct calls.
    one_day_checkout_trial(&app, &fake, &stripe, &id).await;
    let c = customers::get(&app.db, &id).await.expect("customer");
    assert_eq!((c.stage, c.plan.as_deref()), (Stage::Trial, Some("starter")));
    app.gateway().customer_changed(&id);

    // 100k tokens of Sonnet may cost $1.50: within; 150k may cost $2.25: past the trial's.
    assert_eq!(sonnet(&app, &key, 100_000).await.0, 200);
    let (status, body) = sonnet(&app, &key, 150_000).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("budget_exceeded")), "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains(":trial"), "{body}");

    // The trial ends and the first month is paid: the plan's own budget applies.
    let sub = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    app.clock.advance_secs(1);
    delivered_and_applied(&app, &fake).await;
    assert_eq!(customers::get(&app.db, &id).await.expect("customer").stage, Stage::Active);
    app.gateway().customer_changed(&id);
    assert_eq!(sonnet(&app, &key, 150_000).await.0, 200, "a paying customer is not held to the trial's budget");
}

/// The charge of the customer's first paid invoice (kept on its revenue entry).
async fn first_charge(app: &TestApp, customer: &str) -> String {
    let charge: Option<String> = sqlx::query_scalar(
        "SELECT charge_id FROM revenue_entries WHERE customer_id = $1 AND kind = 'invoice_paid' ORDER BY occurred_at LIMIT 1",
    )
    .bind(customer)
    .fetch_one(app.db.pool())
    .await
    .expect("entry");
    charge.expect("a paid invoice keeps its charge")
}

/// A customer's revenue entries of kind `kind`, summed (cents).
async fn booked(app: &TestApp, customer: &str, kind: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM revenue_entries WHERE customer_id = $1 AND kind = $2",
    )
    .bind(customer)
    .bind(kind)
    .fetch_one(app.db.pool())
    .await
    .expect("sum")
}

async fn open_dispute(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe, charge: &str, inquiry: bool) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/charges/{charge}/dispute", fake.base()))
        .json(&json!({"reason": "fraudulent", "inquiry": inquiry}))
        .send()
        .await
        .expect("dispute");
    assert!(r.status().is_success());
    let du: Value = r.json().await.expect("json");
    delivered_and_applied(app, fake).await;
    du["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn a_disputed_payment_pauses_the_customer_until_it_is_won_and_the_ledger_follows_the_money() {
    let (app, fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (id, key) = customer_key(&app, "Chargeback", Stage::Qualified, None).await;
    let owner = "owner@chargeback.test";
    owner_of(&app, &id, owner).await;
    paid_checkout(&app, &fake, &stripe, &id, "pro").await;
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200, "paid: in");
    let charge = first_charge(&app, &id).await;

    // An inquiry moves no money and pauses nobody, but the operator must answer it.
    let inquiry = open_dispute(&app, &fake, &charge, true).await;
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200, "an inquiry does not pause");
    assert_eq!(booked(&app, &id, "dispute").await, 0);
    let alert: String = sqlx::query_scalar("SELECT message FROM alerts WHERE kind = 'payment_disputed'")
        .fetch_one(app.db.pool())
        .await
        .expect("alert");
    assert!(alert.contains("99.00 USD") && alert.contains(&charge) && alert.contains(&id), "{alert}");
    assert!(alert.contains("respond by"), "{alert}");
    control(&fake, &format!("disputes/{inquiry}/close"), json!({"outcome": "won"})).await;
    delivered_and_applied(&app, &fake).await;
    let (status,): (String,) = sqlx::query_as("SELECT status FROM disputes WHERE id = $1")
        .bind(&inquiry)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(status, "warning_closed");

    // The second charge (next month's renewal) is disputed: Stripe takes the money back.
    let sub = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    delivered_and_applied(&app, &fake).await;
    let renewal: String = sqlx::query_scalar(
        "SELECT charge_id FROM revenue_entries WHERE customer_id = $1 AND kind = 'invoice_paid' AND charge_id <> $2",
    )
    .bind(&id)
    .bind(&charge)
    .fetch_one(app.db.pool())
    .await
    .expect("renewal's charge");
    let dispute = open_dispute(&app, &fake, &renewal, false).await;
    app.gateway().customer_changed(&id);
    let (status, code, message) = chat(&app, &key).await;
    assert_eq!((status, code.as_str()), (402, "no_active_plan"), "{message}");
    assert!(message.contains("disputed"), "the refusal says why: {message}");
    assert_eq!(task(&app, &key).await, (402, "no_active_plan".to_string()));
    assert_eq!(booked(&app, &id, "dispute").await, -9900, "the disputed amount left the balance");
    assert_eq!(booked(&app, &id, "invoice_paid").await, 2 * 9900);
    let disputed = events(&app, "charge.disputed", &id).await;
    assert_eq!(
        disputed.last().map(|e| (e["status"].clone(), e["restricted"].clone())),
        Some((json!("needs_response"), json!(true)))
    );
    let browser = app.browser();
    app.login(&browser, owner, common::PASSWORD).await;
    let home = browser.get(app.url("/app")).send().await.expect("app").text().await.expect("body");
    assert!(home.contains("disputed with your card issuer"), "the owner sees why: {home}");
    let operator = common::operator(&app).await;
    let review =
        operator.get(app.url("/admin/review/morning")).send().await.expect("review").text().await.expect("body");
    assert!(review.contains("Payment disputed: 99.00 USD (fraudulent)"), "the morning review lists it");
    let page = operator
        .get(app.url(&format!("/admin/customers/{id}")))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    assert!(page.contains(&dispute) && page.contains("Let them use the service"), "the customer's page shows it");

    // Won: the money comes back and so does the customer, at once.
    control(&fake, &format!("disputes/{dispute}/close"), json!({"outcome": "won"})).await;
    delivered_and_applied(&app, &fake).await;
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200, "won: in again");
    assert_eq!(booked(&app, &id, "dispute").await, 0, "withdrawn and reinstated");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM revenue_entries WHERE kind = 'dispute'").await, 2);
    // Every event delivered again changes nothing.
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    sqlx::query("UPDATE stripe_events SET state = 'pending'").execute(app.db.pool()).await.expect("replay");
    while webhook::apply_pending(&app.db, &ctx, 100, app.now()).await.expect("apply") > 0 {}
    assert_eq!(booked(&app, &id, "dispute").await, 0);
    assert_eq!(customers::get(&app.db, &id).await.expect("customer").disputed_since, None);
}

#[tokio::test]
async fn a_lost_dispute_delivered_out_of_order_pauses_until_the_operator_releases_it() {
    let (app, fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (id, key) = customer_key(&app, "Lostcase", Stage::Qualified, None).await;
    paid_checkout(&app, &fake, &stripe, &id, "starter").await;
    let charge = first_charge(&app, &id).await;

    // Opened and lost, delivered newest first: the dispute ends lost, the money gone.
    control(&fake, "webhooks", json!({"hold": true, "reverse": true})).await;
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/charges/{charge}/dispute", fake.base()))
        .json(&json!({"reason": "product_not_received"}))
        .send()
        .await
        .expect("dispute");
    let dispute = r.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    control(&fake, &format!("disputes/{dispute}/close"), json!({"outcome": "lost"})).await;
    control(&fake, "webhooks", json!({"hold": false})).await;
    control(&fake, "webhooks/release", json!({})).await;
    delivered_and_applied(&app, &fake).await;
    let (status,): (String,) = sqlx::query_as("SELECT status FROM disputes WHERE id = $1")
        .bind(&dispute)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(status, "lost", "the newest snapshot wins");
    assert_eq!(booked(&app, &id, "dispute").await, -4900);
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.1, "no_active_plan", "lost: still paused");

    // Only a dispute of this customer is released from its page (another id: 404).
    let operator = common::operator(&app).await;
    let path = format!("/admin/customers/{id}");
    let token = app.page_token(&operator, &path).await;
    let wrong = operator
        .post(app.url(&format!("/admin/customers/{id}/disputes/du_not_theirs/release")))
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), 404);
    let done = operator
        .post(app.url(&format!("/admin/customers/{id}/disputes/{dispute}/release")))
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(done.status(), 303);
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200, "released: in");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM audit_log WHERE action = 'dispute.released'").await, 1);
    assert_eq!(booked(&app, &id, "dispute").await, -4900, "releasing gives no money back");
    // A later snapshot of the same dispute does not pause them again.
    sqlx::query("UPDATE stripe_events SET state = 'pending'").execute(app.db.pool()).await.expect("replay");
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    while webhook::apply_pending(&app.db, &ctx, 100, app.now()).await.expect("apply") > 0 {}
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200);
}

/// A second dispute applied while the operator releases the first keeps the customer
/// paused: the release must not decide from a view that misses it (on PostgreSQL both
/// transactions used to read the disputes before either committed, and the release
/// cleared the pause the new dispute's transaction thought was still there).
#[tokio::test]
async fn a_dispute_opened_while_another_is_released_keeps_the_customer_paused() {
    let (app, fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (id, key) = customer_key(&app, "Twice", Stage::Qualified, None).await;
    paid_checkout(&app, &fake, &stripe, &id, "starter").await;
    let charge = first_charge(&app, &id).await;
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/charges/{charge}/dispute", fake.base()))
        .json(&json!({"reason": "fraudulent"}))
        .send()
        .await
        .expect("dispute");
    let first = r.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    control(&fake, &format!("disputes/{first}/close"), json!({"outcome": "lost"})).await;
    delivered_and_applied(&app, &fake).await;
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.1, "no_active_plan", "paused by the first");

    // The second dispute's event is being applied (its transaction open) ...
    let secs = app.now() / 1_000_000;
    let second = json!({
        "id": "evt_second_dispute", "type": "charge.dispute.created", "created": secs,
        "data": {"object": {"id": "du_second", "object": "dispute", "charge": charge, "amount": 4900,
            "currency": "usd", "reason": "fraudulent", "status": "needs_response", "created": secs,
            "evidence_details": {"due_by": secs + 7 * 86_400}}}
    });
    let mut applying = app.db.begin().await.expect("begin");
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    apply::event(&mut applying, app.db.backend(), &ctx, &second, app.now()).await.expect("apply");
    // ... when the operator releases the first; the application commits meanwhile.
    let (db, catalogue, now) = (app.db.clone(), app.catalogue.clone(), app.now());
    let releasing = tokio::spawn(async move {
        j1msky_billing::disputes::release(&db, &catalogue, &Actor("op".into()), &first, now).await
    });
    // Give the release every chance to finish before the commit (it waits when right).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    applying.commit().await.expect("commit");
    releasing.await.expect("task").expect("released");

    let (since,): (Option<i64>,) = sqlx::query_as("SELECT disputed_since FROM customers WHERE id = $1")
        .bind(&id)
        .fetch_one(app.db.pool())
        .await
        .expect("customer");
    assert!(since.is_some(), "the open second dispute pauses the customer");
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.1, "no_active_plan");
}

/// A task's call during a Checkout trial shares the trial's budget: such a trial includes
/// no count of tasks for the queue to hold it to (a granted trial's does).
#[tokio::test]
async fn a_checkout_trial_s_task_calls_share_the_trial_s_budget() {
    use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
    let (app, fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (id, _) = customer_key(&app, "Tasker", Stage::Qualified, None).await;
    one_day_checkout_trial(&app, &fake, &stripe, &id).await;
    assert_eq!(customers::get(&app.db, &id).await.expect("customer").stage, Stage::Trial);
    app.gateway().customer_changed(&id);
    // $49 × 1/30 = $1.633333 for the trial's calls; a writing step of Sonnet that may cost
    // up to $2.25 (150k output tokens at $15 a million) does not fit, as a task's or not.
    let ctx = j1msky_gateway::CallContext {
        request_id: "req_trial_task".into(),
        customer_id: Some(id.clone()),
        category: "writing".into(),
        task_id: Some("tsk_trial".into()),
        team: Some("content".into()),
        role: Some("writer".into()),
    };
    let req = ChatRequest {
        system: None,
        turns: vec![Turn { speaker: Speaker::User, text: "Draft the launch post".into() }],
        max_tokens: 150_000,
        temperature: None,
        stop: vec![],
    };
    match app.gateway().complete(&ctx, Some("claude-sonnet"), &req).await {
        Err(j1msky_gateway::GatewayError::Limit(j1msky_gateway::limits::LimitError::Budget { scope, .. })) => {
            assert!(scope.ends_with(":trial"), "held to the trial's budget, not the plan's: {scope}")
        }
        other => panic!("a task's call past the trial's budget must be refused, got {:?}", other.map(|c| c.cost)),
    }
    let small = ChatRequest { max_tokens: 1_000, ..req };
    assert!(app.gateway().complete(&ctx, Some("claude-sonnet"), &small).await.is_ok(), "within the trial's budget");
}

/// A plan's monthly model budget followed the calendar month only: a customer who paid on
/// the 20th could spend a month's budget by the 31st and another from the 1st, then
/// cancel, two budgets for one payment. The budget now also holds over the period the
/// customer paid for; a renewal (the next payment) opens the next one.
#[tokio::test]
async fn one_payment_buys_one_month_s_model_budget_however_its_period_falls_across_months() {
    let (app, fake, stripe) = spawn_app_with_gateway_and_stripe(SimConfig::default()).await;
    let (id, key) = customer_key(&app, "Twentieth", Stage::Qualified, None).await;
    // Both clocks (the fake's starts at the app's) on the tenth day before a month's end.
    let both = |secs: i64| {
        let fake = &fake;
        let app = &app;
        async move {
            app.clock.advance_secs(secs.max(0));
            control(fake, "clock", json!({"advance_secs": secs.max(0)})).await;
        }
    };
    let tz: chrono_tz::Tz = app.catalogue.business.time_zone.parse().expect("tz");
    let (_, month_end) = j1msky_core::windows::month(tz, app.now());
    let mut target = month_end - 10 * 86_400_000_000;
    if target <= app.now() {
        target = j1msky_core::windows::month(tz, month_end).1 - 10 * 86_400_000_000;
    }
    both((target - app.now()) / 1_000_000).await;
    // Stripe's clock half a minute ahead of ours: the period it reports starts "later".
    control(&fake, "clock", json!({"advance_secs": 30})).await;
    paid_checkout(&app, &fake, &stripe, &id, "starter").await;
    let c = customers::get(&app.db, &id).await.expect("customer");
    assert_eq!((c.stage, c.plan.as_deref()), (Stage::Active, Some("starter")), "paid");
    // The period paid for, as the subscription's events tell it (they may come late on
    // a loaded machine).
    let mut period = None;
    for _ in 0..100 {
        period = sqlx::query_as::<_, (Option<i64>, Option<i64>)>(
            "SELECT paid_period_start, paid_period_end FROM customers WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(app.db.pool())
        .await
        .ok()
        .and_then(|(a, b)| a.zip(b));
        if period.is_some() {
            break;
        }
        delivered_and_applied(&app, &fake).await;
    }
    let (start, end) = period.expect("the paid period is known");
    assert!(start >= target && start < target + 3_600_000_000 && end - start == 30 * 86_400_000_000, "{start}..{end}");
    // A budget of half a cent (the operator's for the customer, held like the plan's).
    let budget = j1msky_core::Money::from_micros(5_000);
    j1msky_gateway::controls::set_customer_budget(&app.db, &Actor::cli(), &id, Some(budget), "test", app.now())
        .await
        .expect("budget");
    app.gateway().customer_changed(&id);
    let spend_until_refused = || async {
        for _ in 0..200 {
            let (status, code, message) = chat(&app, &key).await;
            if status != 200 {
                return (status, code, message);
            }
        }
        panic!("never refused");
    };
    let (status, code, _) = spend_until_refused().await;
    assert_eq!((status, code.as_str()), (402, "budget_exceeded"));

    // The next calendar month starts; the period paid for has twenty days to go.
    let (_, month_end) = j1msky_core::windows::month(tz, app.now());
    both((month_end - app.now()) / 1_000_000 + 3_600).await;
    app.gateway().customer_changed(&id);
    let (status, code, message) = chat(&app, &key).await;
    assert_eq!((status, code.as_str()), (402, "budget_exceeded"), "the month paid for is spent: {message}");
    assert!(message.contains(&format!("customer:{id}:period")), "{message}");
    // The customer's home shows the period's spend, not the new month's nothing.
    app.gateway().flush().await;
    let shown = j1msky_gateway::limits::customer_month(&app.db, &app.catalogue, &id, app.now())
        .await
        .expect("month")
        .map(|(b, spent, reserved)| (b.micros(), spent.micros() + reserved.micros() > 0));
    assert_eq!(shown, Some((5_000, true)));

    // The next payment opens the next period's budget.
    let sub = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    app.clock.advance_secs(1);
    delivered_and_applied(&app, &fake).await;
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200, "paid again");
}

/// An upgrade on the period's last day bought the new plan's whole monthly budget for a
/// day's share of its price (the upgrade is prorated): the period's budget is now each
/// plan's for the share of the period it was in force, as Stripe prorates the price.
#[tokio::test]
async fn an_upgrade_late_in_the_period_buys_its_share_of_the_new_plan_s_budget() {
    let mut catalogue = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).expect("cat");
    catalogue.plans.get_mut("starter").expect("starter").monthly_model_budget =
        Some(j1msky_core::Money::from_micros(3_000));
    catalogue.plans.get_mut("pro").expect("pro").monthly_model_budget =
        Some(j1msky_core::Money::from_micros(3_000_000));
    let (app, fake, stripe) =
        common::spawn_app_with_gateway_stripe_and_catalogue(SimConfig::default(), catalogue).await;
    let (id, key) = customer_key(&app, "Upgrader", Stage::Qualified, None).await;
    paid_checkout(&app, &fake, &stripe, &id, "starter").await;
    let db = app.db.clone();
    let period = |id: String| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (Option<i64>, Option<i64>, Option<i64>)>(
                "SELECT paid_period_start, paid_period_end, paid_period_budget_micros FROM customers WHERE id = $1",
            )
            .bind(id)
            .fetch_one(db.pool())
            .await
            .expect("period")
        }
    };
    let (start, end, budget) = period(id.clone()).await;
    let (start, end) = (start.expect("paid period"), end.expect("paid period"));
    assert_eq!(budget, Some(3_000), "a whole period of Starter");
    // A day before the period ends (both clocks), the customer upgrades to Pro.
    let day = 86_400;
    let to = (end - app.now()) / 1_000_000 - day;
    app.clock.advance_secs(to);
    control(&fake, "clock", json!({"advance_secs": to})).await;
    j1msky_billing::changes::upgrade(&app.db, &stripe, &app.catalogue, &id, "pro", app.now()).await.expect("upgrade");
    delivered_and_applied(&app, &fake).await;
    assert_eq!(customers::get(&app.db, &id).await.expect("customer").plan.as_deref(), Some("pro"));
    // Starter for 29 days, Pro for the last: 3,000 × 29/30 + 3,000,000 × 1/30 ≈ 102,900 µ$
    // (the upgrade is dated by the fake's clock, a few seconds either way).
    let (_, _, budget) = period(id.clone()).await;
    let budget = budget.expect("the period's budget");
    assert!((100_000..106_000).contains(&budget), "{budget} of {} s", (end - start) / 1_000_000);
    // A call that may cost more than the period has left is refused, though Pro's month
    // would take it (30k tokens of Sonnet may cost $0.45); a small one goes through.
    app.gateway().customer_changed(&id);
    assert_eq!(chat(&app, &key).await.0, 200);
    let (status, body) = sonnet(&app, &key, 30_000).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("budget_exceeded")), "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(&format!("customer:{id}:period")), "{message}");
    // The customer's home shows the period's budget.
    let shown = j1msky_gateway::limits::customer_month(&app.db, &app.catalogue, &id, app.now())
        .await
        .expect("month")
        .map(|(b, _, _)| b.micros());
    assert_eq!(shown, Some(budget));
}

/// A renewal the card declines leaves the plan in force for the grace days, and with it
/// the grace days' share of the plan's monthly budget, counted from the failure: a
/// customer who never pays used to get the whole new period's model budget for the week.
#[tokio::test]
async fn a_customer_in_its_grace_after_a_failed_payment_spends_only_the_grace_days_share_of_its_budget() {
    let mut catalogue = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).expect("cat");
    // A budget whose grace share (7 of 30 days) is three calls' reservations.
    let input = "hello".len() as u64 + 16; // the reservation's input tokens: a token a byte, plus framing
    let per_call = j1msky_gateway::policy::max_cost(&catalogue, "kimi-k2.5", input, 50).micros();
    let days = i64::from(catalogue.stripe.past_due_grace_days);
    let budget = j1msky_core::Money::from_micros(3 * per_call * 30 / days + 1);
    catalogue.plans.get_mut("pro").expect("pro").monthly_model_budget = Some(budget);
    let grace_cap = budget.micros() * days / 30;
    let (app, fake, stripe) =
        common::spawn_app_with_gateway_stripe_and_catalogue(SimConfig::default(), catalogue).await;
    let (id, key) = customer_key(&app, "Neverpay", Stage::Qualified, None).await;
    paid_then_declined(&app, &fake, &stripe, &id, &key).await;
    app.gateway().flush().await;
    let before =
        sum_of(&app, "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = $1", &id)
            .await;

    let mut admitted = 0;
    let refusal = loop {
        let (status, code, message) = chat(&app, &key).await;
        match status {
            200 => admitted += 1,
            _ => break (status, code, message),
        }
        assert!(admitted < 40, "the grace never ran out of budget");
    };
    assert_eq!((refusal.0, refusal.1.as_str()), (402, "budget_exceeded"), "{}", refusal.2);
    assert!(refusal.2.contains(&format!("customer:{id}:grace")), "refused by the grace's budget: {}", refusal.2);
    app.gateway().flush().await;
    let after =
        sum_of(&app, "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = $1", &id)
            .await;
    assert!(admitted >= 1, "the grace keeps the customer in");
    assert!(after - before <= grace_cap, "spent {} in the grace, its share is {grace_cap}", after - before);
    assert!(after < budget.micros() - per_call, "the month's budget had room left: {after} of {budget}");
    // The customer's own view of its budget shows the grace's, the one that refused it.
    let shown = j1msky_gateway::limits::customer_month(&app.db, &app.catalogue, &id, app.now()).await.expect("month");
    assert_eq!(shown.map(|(b, s, _)| (b.micros(), s.micros())), Some((grace_cap, after - before)));
}

/// The customer's view of its model budget is the one admission holds it to, read from the
/// same terms: a paused Pro customer is held to the pause plan's budget, not Pro's, and a
/// closed account has none.
#[tokio::test]
async fn the_customer_s_view_of_its_budget_follows_the_plan_in_force() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (id, key) = app.customer_with_key("Resting Ltd", "pro").await;
    let shown = || async {
        j1msky_gateway::limits::customer_month(&app.db, &app.catalogue, &id, app.now())
            .await
            .expect("budget")
            .map(|(b, spent, reserved)| (b.micros(), spent.micros() + reserved.micros()))
    };
    let pro = app.catalogue.plans["pro"].monthly_model_budget.expect("pro's budget").micros();
    assert_eq!(shown().await, Some((pro, 0)));
    customers::set_stage(&app.db, &Actor::cli(), &id, Stage::Paused, app.now()).await.expect("paused");
    app.gateway().customer_changed(&id);
    let paused = app.catalogue.plans[&app.catalogue.pause_plan].monthly_model_budget.expect("budget").micros();
    assert!(paused < pro);
    assert_eq!(shown().await, Some((paused, 0)), "the pause plan's budget holds a paused customer");
    // A call while paused is spent in the window the view shows.
    assert_eq!(chat(&app, &key).await.0, 200);
    app.gateway().flush().await;
    let (cap, used) = shown().await.expect("a budget");
    assert!(cap == paused && used > 0, "{cap} {used}");
    customers::set_stage(&app.db, &Actor::cli(), &id, Stage::Churned, app.now()).await.expect("closed");
    app.gateway().customer_changed(&id);
    assert_eq!(shown().await, None, "a closed account has no budget to show");
    let day = j1msky_gateway::limits::customer_day(&app.db, &app.catalogue, &id, app.now()).await.expect("day");
    assert_eq!(day, None, "nor a share of the day");
    assert_eq!(chat(&app, &key).await.0, 402, "and admission refuses it");
    let why = j1msky_gateway::limits::customer_refused(&app.db, &app.catalogue, &id, app.now()).await.expect("why");
    assert!(why.as_deref().is_some_and(|w| w.contains("the account is closed")), "{why:?}");
    // Its home says why there is no budget, not that none was set.
    let owner = format!("owner@{}.test", id.to_lowercase());
    app.user_of(&id, &owner, j1msky_core::vocab::UserRole::Owner).await;
    let browser = app.browser();
    assert_eq!(app.login(&browser, &owner, common::PASSWORD).await.status(), 303);
    let home = browser.get(app.url("/app")).send().await.expect("home").text().await.expect("html");
    assert!(home.contains("id=\"budget-refused\"") && home.contains("the account is closed"), "{home}");
    assert!(!home.contains("no monthly budget set"));
}

/// A paused customer on a contract plan (no share of the day: it is held to its contract)
/// is held to the pause plan, share of the day included, and shown that share.
#[tokio::test]
async fn a_paused_contract_customer_is_shown_the_pause_plan_s_share_of_the_day() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (id, _) = app.customer_with_key("Big Pause AG", "enterprise").await;
    let day =
        || async { j1msky_gateway::limits::customer_day(&app.db, &app.catalogue, &id, app.now()).await.expect("day") };
    assert_eq!(day().await, None, "a contract has no share of the day");
    customers::set_stage(&app.db, &Actor::cli(), &id, Stage::Paused, app.now()).await.expect("paused");
    let share = day().await.map(|(cap, _, _)| cap.micros());
    assert!(share.is_some_and(|c| c > 0), "the pause plan's share: {share:?}");
}

/// A trial's direct calls share one budget over the trial, smaller than the plan's month:
/// the customer's view shows that one, as admission holds it.
#[tokio::test]
async fn a_trial_customer_is_shown_the_trial_s_budget_for_its_direct_calls() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let c = customers::create(
        &app.db,
        &app.catalogue,
        &Actor::cli(),
        customers::NewCustomer {
            name: "Trying Co".into(),
            contact_email: Some("trying@trial.test".into()),
            stage: Some(Stage::Qualified),
            ..Default::default()
        },
        app.now(),
    )
    .await
    .expect("customer");
    let new = j1msky_accounts::trials::NewTrial {
        plan: "starter".into(),
        days: 14,
        tasks: 5,
        owner_email: "owner@trying.test".into(),
        owner_name: "Owner".into(),
    };
    let mut tx = app.db.begin().await.expect("tx");
    j1msky_accounts::trials::start_in(&mut tx, app.db.backend(), &app.catalogue, &Actor::cli(), &c.id, &new, app.now())
        .await
        .expect("trial");
    tx.commit().await.expect("commit");
    let shown = j1msky_gateway::limits::customer_month(&app.db, &app.catalogue, &c.id, app.now())
        .await
        .expect("budget")
        .map(|(cap, _, _)| cap.micros());
    // Starter's $49.00 for 14 of 30 days: $22.866666 (rounded down), below its month's $49.
    let trial = app.catalogue.plans["starter"].monthly_price.micros() * 14 / 30;
    assert_eq!(shown, Some(trial));
    assert!(trial < app.catalogue.plans["starter"].monthly_model_budget.expect("budget").micros());
}

/// A paused customer pays the pause plan's price: a budget the operator set for its plan
/// holds no more than the pause plan's while it is paused, in admission and in its view.
#[tokio::test]
async fn a_paused_customer_s_operator_budget_holds_no_more_than_the_pause_plan_s() {
    let mut catalogue = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    // Half a cent for the pause plan, so a few calls reach it (and room for them in its
    // hourly cap, which would refuse them first).
    let pause = catalogue.pause_plan.clone();
    let plan = catalogue.plans.get_mut(&pause).expect("pause plan");
    plan.monthly_model_budget = Some(j1msky_core::Money::from_micros(5_000));
    plan.api_calls_per_hour = 1_000;
    let app = common::spawn_app_with_catalogue(SimConfig::default(), catalogue).await;
    let (id, key) = app.customer_with_key("Sleepy GmbH", "pro").await;
    let fifty = j1msky_core::Money::from_micros(50_000_000);
    j1msky_gateway::controls::set_customer_budget(&app.db, &Actor::cli(), &id, Some(fifty), "test", app.now())
        .await
        .expect("budget");
    let shown = || async {
        j1msky_gateway::limits::customer_month(&app.db, &app.catalogue, &id, app.now())
            .await
            .expect("budget")
            .map(|(b, _, _)| b.micros())
    };
    assert_eq!(shown().await, Some(50_000_000), "the operator's budget while active");
    customers::set_stage(&app.db, &Actor::cli(), &id, Stage::Paused, app.now()).await.expect("paused");
    app.gateway().customer_changed(&id);
    assert_eq!(shown().await, Some(5_000), "no more than the pause plan's while paused");
    let mut admitted = 0;
    let refused = loop {
        let (status, code, message) = chat(&app, &key).await;
        if status != 200 {
            break (status, code, message);
        }
        admitted += 1;
        assert!(admitted < 200, "the operator's $50 still held a paused customer");
    };
    assert_eq!((refused.0, refused.1.as_str()), (402, "budget_exceeded"), "{}", refused.2);
    app.gateway().flush().await;
    let (cap, spent, _) = j1msky_gateway::limits::customer_month(&app.db, &app.catalogue, &id, app.now())
        .await
        .expect("budget")
        .expect("a budget");
    assert!(cap.micros() == 5_000 && spent.micros() <= 5_000, "{cap} {spent}");
}
