//! A granted trial ends by itself and the pilot's next in line is not forgotten: the
//! trial-end timer (fired with the manual clock, by a fresh set of handlers as after a
//! restart) moves an unconverted trial to `churned` once, mails the owner once and frees
//! the slot; the freed slot starts a lead the operator had qualified, or names an
//! unqualified one in an alert; a trial converted early is left alone. Direct `/v1`
//! calls over real HTTP are held to the trial: a budget over its days, then refused.

// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{csrf_token, operator, spawn_app_with_gateway, spawn_app_with_mail, TestApp};
use j1msky_accounts::{api_keys, customers, trials};
use j1msky_audit::Actor;
use j1msky_core::vocab::Stage;
use j1msky_ops::leads::{ending, next};
use serde_json::{json, Value};

async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(app.db.pool()).await.expect(sql);
    n
}

async fn post_form(app: &TestApp, company: &str, email: &str) {
    let b = app.browser();
    let token = csrf_token(&b.get(app.url("/start")).send().await.unwrap().text().await.unwrap());
    let form = [
        ("csrf_token", token.as_str()),
        ("contact_name", "Pat Pilot"),
        ("email", email),
        ("company", company),
        ("use_case", "research"),
        ("use_case_text", "briefs"),
        ("expected_monthly_tasks", "40"),
        ("website", ""),
    ];
    assert_eq!(b.post(app.url("/start")).form(&form).send().await.unwrap().status(), 303);
}

async fn lead_id(app: &TestApp, company: &str) -> String {
    let (id,): (String,) = sqlx::query_as("SELECT customer_id FROM ops_leads WHERE company = $1")
        .bind(company)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    id
}

async fn admin_post(app: &TestApp, b: &reqwest::Client, page: &str, action: &str, f: &[(&str, &str)]) -> u16 {
    let token = app.page_token(b, page).await;
    let mut form = vec![("csrf_token", token.as_str())];
    form.extend_from_slice(f);
    b.post(app.url(action)).form(&form).send().await.unwrap().status().as_u16()
}

/// A lead from the form; `qualify` has the operator qualify it on starter first; then
/// the operator asks for its 14-day trial (which may put it in line).
async fn lead_asking_trial(app: &TestApp, op: &reqwest::Client, company: &str, email: &str, qualify: bool) -> String {
    post_form(app, company, email).await;
    let id = lead_id(app, company).await;
    let page = format!("/admin/leads/{id}");
    if qualify {
        let f = [("notes", "fit"), ("plan", "starter")];
        assert_eq!(admin_post(app, op, &page, &format!("{page}/qualify"), &f).await, 303);
    }
    let f = [("plan", "starter"), ("days", "14"), ("tasks", "5")];
    assert_eq!(admin_post(app, op, &page, &format!("{page}/trial"), &f).await, 303);
    id
}

fn ops_ctx(app: &TestApp) -> j1msky_ops::Ctx {
    j1msky_ops::Ctx {
        db: app.db.clone(),
        catalogue: app.catalogue.clone().into(),
        clock: std::sync::Arc::new(app.clock.clone()),
    }
}

/// Ops' timer handlers as a freshly started process builds them.
fn ops_handlers(app: &TestApp) -> j1msky_db::timers::Handlers {
    let templates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates");
    let n = j1msky_ops::notify::Notifier::new(ops_ctx(app), templates, &app.base);
    j1msky_ops::timers::handlers(&n)
}

/// Fires the due timers, each round with a new set of handlers, and runs the pilot's
/// consumer, until neither has anything left; returns how many timers fired.
async fn fire(app: &TestApp) -> usize {
    let runner = j1msky_db::consumers::Runner::for_this_process();
    let all = vec![next::consumer()];
    let mut fired = 0;
    loop {
        let n = j1msky_db::timers::run_due_once(&app.db, &ops_handlers(app), app.now()).await.unwrap();
        let handled = j1msky_db::consumers::run_once(&app.db, &runner, &all, &app.clock).await.unwrap().handled;
        fired += n;
        if n == 0 && handled == 0 {
            return fired;
        }
    }
}

async fn stage(app: &TestApp, id: &str) -> Stage {
    customers::get(&app.db, id).await.unwrap().stage
}

async fn mails(app: &TestApp, template: &str) -> Vec<(Option<String>, String, String)> {
    sqlx::query_as(
        "SELECT recipient, customer_id, body_text FROM lifecycle_messages WHERE template = $1 ORDER BY created_at, id",
    )
    .bind(template)
    .fetch_all(app.db.pool())
    .await
    .unwrap()
}

async fn alerts(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT kind, message FROM alerts WHERE kind = $1 ORDER BY created_at, id")
        .bind(next::ALERT_KIND)
        .fetch_all(app.db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unconverted_trial_ends_once_by_its_timer_and_the_qualified_next_in_line_starts() {
    let app = spawn_app_with_mail().await;
    let op = operator(&app).await;
    assert_eq!(admin_post(&app, &op, "/admin/leads", "/admin/leads/pilot", &[("slots", "1")]).await, 303);
    let first = lead_asking_trial(&app, &op, "First Co", "first@pilot.test", true).await;
    let second = lead_asking_trial(&app, &op, "Second Co", "second@pilot.test", true).await;
    assert_eq!((stage(&app, &first).await, stage(&app, &second).await), (Stage::Trial, Stage::Qualified));
    let trial = trials::get(&app.db, &first).await.unwrap().unwrap();
    let timer = j1msky_db::timers::find(&app.db, ending::TRIAL_END_TIMER, &first).await.unwrap().unwrap();
    assert_eq!((timer.state.as_str(), timer.run_at), ("ready", trial.ends_at), "scheduled with the trial");

    // A second before the end: nothing fires, nothing moves.
    app.clock.advance_micros(trial.ends_at - app.now() - 1_000_000);
    assert_eq!(fire(&app).await, 0);
    assert_eq!(stage(&app, &first).await, Stage::Trial);

    app.clock.advance_secs(2);
    // The end, then the freed slot's look at the line.
    assert_eq!(fire(&app).await, 2, "each fires once, from handlers built anew as after a restart");
    assert_eq!(stage(&app, &first).await, Stage::Churned);
    let history: Vec<(Option<Stage>, Stage, String)> =
        customers::stage_history(&app.db, &first).await.unwrap().into_iter().map(|h| (h.from, h.to, h.actor)).collect();
    assert_eq!(history.last().unwrap(), &(Some(Stage::Trial), Stage::Churned, "system".to_string()));
    let ended = mails(&app, "trial_ended").await;
    assert_eq!(ended.len(), 1);
    assert_eq!((ended[0].0.as_deref(), ended[0].1.as_str()), (Some("first@pilot.test"), first.as_str()));
    assert!(ended[0].2.contains("ended on") && ended[0].2.contains("/app/billing"), "{}", ended[0].2);
    let done = j1msky_db::timers::find(&app.db, ending::TRIAL_END_TIMER, &first).await.unwrap().unwrap();
    assert_eq!(done.state, "done");

    // The freed slot went to the next in line, qualified with a plan: started as a manual
    // start would (invite to its owner, stage history), and the operators are told.
    assert_eq!(stage(&app, &second).await, Stage::Trial);
    let stages: Vec<Stage> =
        customers::stage_history(&app.db, &second).await.unwrap().into_iter().map(|h| h.to).collect();
    assert_eq!(stages, [Stage::Lead, Stage::Qualified, Stage::Trial]);
    let invites = mails(&app, "trial_invite").await;
    assert_eq!(invites.last().unwrap().0.as_deref(), Some("second@pilot.test"));
    let raised = alerts(&app).await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert!(raised[0].1.contains("Second Co") && raised[0].1.contains("started"), "{}", raised[0].1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM events WHERE kind = 'alert.raised'").await, 1);
    assert!(j1msky_ops::leads::trial::pilot(&ops_ctx(&app)).await.unwrap().waiting.is_empty());

    // Nothing happens twice: later rounds fire nothing new, and ending again finds nothing.
    app.clock.advance_secs(3_600);
    fire(&app).await;
    assert_eq!(mails(&app, "trial_ended").await.len(), 1);
    assert_eq!(mails(&app, "trial_invite").await.len(), 2);
    assert_eq!(alerts(&app).await.len(), 1);
    let mut tx = app.db.begin().await.unwrap();
    let again = trials::end_in(&mut tx, app.db.backend(), &Actor::system(), &first, app.now()).await.unwrap();
    assert!(again.is_none());
    tx.rollback().await.unwrap();
    // The ended trial's owner can no longer hand over work.
    let task = j1msky_tasks::NewTask { team: "research".into(), prompt: Some("brief".into()), ..Default::default() };
    let e = j1msky_tasks::submit(&app.db, &app.catalogue, &first, &task, None, app.now()).await.unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
}

#[tokio::test]
async fn a_trial_converted_early_is_left_alone_and_an_unqualified_next_in_line_is_named() {
    let app = spawn_app_with_mail().await;
    let op = operator(&app).await;
    assert_eq!(admin_post(&app, &op, "/admin/leads", "/admin/leads/pilot", &[("slots", "1")]).await, 303);
    let first = lead_asking_trial(&app, &op, "Early Co", "early@pilot.test", true).await;
    let waiting = lead_asking_trial(&app, &op, "Waiting Co", "waiting@pilot.test", false).await;
    assert_eq!(stage(&app, &waiting).await, Stage::Lead, "in line, never qualified");

    // Paid through Checkout before the end (the stage billing's state moves it to).
    customers::set_stage(&app.db, &Actor::system(), &first, Stage::Active, app.now()).await.unwrap();
    assert_eq!(fire(&app).await, 1, "the freed slot's timer");
    assert_eq!(stage(&app, &waiting).await, Stage::Lead, "not started without the operator's qualification");
    let raised = alerts(&app).await;
    assert_eq!(raised.len(), 1);
    assert!(raised[0].1.contains("Waiting Co") && raised[0].1.contains("waiting@pilot.test"), "{}", raised[0].1);
    assert!(raised[0].1.contains("qualify"), "it says what to do: {}", raised[0].1);
    assert_eq!(mails(&app, "trial_invite").await.len(), 1);

    // The end date comes: the timer finds the customer converted and changes nothing.
    app.clock.advance_secs(15 * 86_400);
    assert_eq!(fire(&app).await, 1);
    assert_eq!(stage(&app, &first).await, Stage::Active);
    assert!(mails(&app, "trial_ended").await.is_empty());
    let history = customers::stage_history(&app.db, &first).await.unwrap();
    assert_eq!(history.last().unwrap().to, Stage::Active);
    assert_eq!(alerts(&app).await.len(), 1);
}

#[tokio::test]
async fn a_timer_lost_with_its_process_is_seeded_again_at_start() {
    let app = spawn_app_with_mail().await;
    let op = operator(&app).await;
    let id = lead_asking_trial(&app, &op, "Seed Co", "seed@pilot.test", true).await;
    // A trial from before the timer existed: its timer row is gone.
    sqlx::query("DELETE FROM jobs WHERE queue = $1")
        .bind(format!("timer:{}", ending::TRIAL_END_TIMER))
        .execute(app.db.pool())
        .await
        .unwrap();
    assert_eq!(ending::seed(&ops_ctx(&app), app.now()).await.unwrap(), 1);
    assert_eq!(ending::seed(&ops_ctx(&app), app.now()).await.unwrap(), 1, "seeding twice schedules once");
    let n = count(&app, "SELECT COUNT(*) FROM jobs WHERE queue = 'timer:ops.trial_end'").await;
    assert_eq!(n, 1);
    app.clock.advance_secs(14 * 86_400 + 1);
    assert_eq!(fire(&app).await, 2, "the end, and the freed slot (pilot mode off: nothing to do)");
    assert_eq!(stage(&app, &id).await, Stage::Churned);
}

/// A customer on a granted `days`-day starter trial, with an API key.
async fn trial_with_key(app: &TestApp, name: &str, days: i64) -> (String, String) {
    let c = customers::create(
        &app.db,
        &app.catalogue,
        &Actor::cli(),
        customers::NewCustomer {
            name: name.into(),
            contact_email: Some(format!("{}@trial.test", name.to_lowercase())),
            stage: Some(Stage::Qualified),
            ..Default::default()
        },
        app.now(),
    )
    .await
    .unwrap();
    let new = trials::NewTrial {
        plan: "starter".into(),
        days,
        tasks: 5,
        owner_email: format!("owner@{}.test", name.to_lowercase()),
        owner_name: "Owner".into(),
    };
    let mut tx = app.db.begin().await.unwrap();
    trials::start_in(&mut tx, app.db.backend(), &app.catalogue, &Actor::cli(), &c.id, &new, app.now()).await.unwrap();
    tx.commit().await.unwrap();
    let (_, secret) = api_keys::create(&app.db, &Actor::cli(), &c.id, "test", app.now()).await.unwrap();
    (c.id, secret)
}

/// (status, body) of an OpenAI-format call for `max_tokens` on Claude Sonnet.
async fn chat(app: &TestApp, key: &str, max_tokens: u32) -> (u16, Value) {
    let body =
        json!({"model": "claude-sonnet", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens});
    let r =
        reqwest::Client::new().post(app.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn anthropic(app: &TestApp, key: &str) -> (u16, Value) {
    let body = json!({"model": "claude-sonnet", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let r = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn direct_calls_of_a_trial_stay_within_its_budget_and_stop_at_its_end() {
    let app = spawn_app_with_gateway(j1msky_sim::SimConfig::default()).await;
    // One day of Starter ($49 a month): $1.633333 of direct calls over the trial.
    let (id, key) = trial_with_key(&app, "Tryer", 1).await;
    let budget = trials::direct_call_budget(
        &app.catalogue,
        "starter",
        trials::get(&app.db, &id).await.unwrap().unwrap().dates(),
    );
    assert_eq!(budget.unwrap().micros(), 1_633_333);
    assert_eq!(chat(&app, &key, 50).await.0, 200);
    // 100k tokens of Sonnet may cost $1.50: within; 150k may cost $2.25: past the budget.
    assert_eq!(chat(&app, &key, 100_000).await.0, 200);
    let (status, body) = chat(&app, &key, 150_000).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("budget_exceeded")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(":trial"), "{body}");
    // The same call from a paying Starter customer is not held to it.
    let (_, payer) = app.customer_with_key("Payer", "starter").await;
    assert_eq!(chat(&app, &payer, 150_000).await.0, 200);

    // Past the end (before any timer moved the stage): refused on both formats.
    app.clock.advance_secs(86_400);
    let (status, body) = chat(&app, &key, 50).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("no_active_plan")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("the trial has ended"), "{body}");
    let (status, body) = anthropic(&app, &key).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["type"], "error", "Anthropic's error format: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("the trial has ended"), "{body}");
    assert_eq!(stage(&app, &id).await, Stage::Trial, "the refusal did not wait for the timer");
    assert_eq!(chat(&app, &payer, 50).await.0, 200);
    app.gateway().flush().await;
    let calls = count(&app, &format!("SELECT COUNT(*) FROM llm_calls WHERE customer_id = '{id}'")).await;
    assert_eq!(calls, 2, "only the two admitted calls reached a model");
}
