//! The task API with a customer API key: submit (idempotent), list, show with steps,
//! cancel, templates, and clear errors that store nothing.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use std::sync::Arc;

use common::spawn_app_with_gateway;
use j1msky_sim::SimConfig;
use serde_json::{json, Value};

/// A task submitted through the domain function (not the story under test).
async fn submit_direct(app: &common::TestApp, customer: &str, team: &str, prompt: &str) -> String {
    let input = j1msky_tasks::NewTask { team: team.into(), prompt: Some(prompt.into()), ..Default::default() };
    j1msky_tasks::submit(&app.db, &app.catalogue, customer, &input, None, app.now()).await.expect("submit").task.id
}

async fn count_tasks(app: &common::TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tasks").fetch_one(app.db.pool()).await.expect("count");
    n
}

#[tokio::test]
async fn customers_submit_follow_and_cancel_tasks_over_the_api() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (_, key) = app.customer_with_key("Acme", "starter").await;
    let http = reqwest::Client::new();
    let submit = |body: Value, idem: Option<&str>| {
        let mut r = http.post(app.url("/api/v1/tasks")).bearer_auth(&key).json(&body);
        if let Some(k) = idem {
            r = r.header("idempotency-key", k);
        }
        r.send()
    };

    // A starter customer who has not chosen its teams yet may run none.
    let resp = submit(json!({"team": "code", "prompt": "x"}), None).await.expect("send");
    assert_eq!(resp.status(), 403);
    sqlx::query("UPDATE customers SET chosen_teams = '[\"code\",\"content\"]'")
        .execute(app.db.pool())
        .await
        .expect("teams");

    // Bad input: a clear error naming what is wrong, nothing stored.
    let cases = [
        (json!({"team": "nope", "prompt": "x"}), 422, "unknown team `nope`"),
        (json!({"team": "code"}), 422, "prompt: the prompt is empty"),
        (json!({"team": "code", "prompt": "x", "priority": "urgent"}), 422, "priority"),
        (json!({"team": "code", "template": "bug_fix", "fields": {"repository": "r", "x": "1"}}), 422, "no field `x`"),
        (json!({"team": "code", "prompt": "x", "colour": "red"}), 400, "colour"),
        (json!({"team": "code", "prompt": "x".repeat(200 * 1024)}), 422, "the limit is"),
    ];
    for (i, (body, status, fragment)) in cases.into_iter().enumerate() {
        let resp = submit(body, None).await.expect("send");
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let body: Value = resp.json().await.expect("json");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains(fragment), "case {i}: {body}");
    }
    assert_eq!(count_tasks(&app).await, 0);
    // A team outside the customer's two is 403, with the upgrade path.
    let resp = submit(json!({"team": "business", "prompt": "Strategy"}), None).await.expect("send");
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "team_not_in_plan");

    let body =
        json!({"team": "code", "template": "bug_fix", "fields": {"repository": "api", "symptom": "500 on empty body"}});
    let first = submit(body.clone(), Some("retry-1")).await.expect("send");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let again = submit(body, Some("retry-1")).await.expect("send");
    assert_eq!(again.status(), 200, "a retried submit answers the first task");
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["task"]["id"], again["task"]["id"]);
    assert_eq!(again["replayed"], true);
    assert_eq!(count_tasks(&app).await, 1);
    let id = first["task"]["id"].as_str().expect("id").to_string();
    assert_eq!(first["task"]["state"], "queued");
    assert_eq!(first["task"]["title"], "Fix a bug");

    // A worker (as `serve` runs them) takes it through the team.
    let worker = j1msky_tasks::Worker::new(
        app.db.clone(),
        app.catalogue.clone(),
        app.gateway().clone(),
        Arc::new(app.clock.clone()),
        "w",
        j1msky_tasks::WorkerConfig::default(),
    );
    worker.run_once().await.expect("run").expect("a task");
    let shown: Value = http
        .get(app.url(&format!("/api/v1/tasks/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .expect("show")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["task"]["state"], "succeeded", "{shown}");
    let steps = shown["task"]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["role"], "lead");
    assert!(steps[1]["cost_micros"].as_i64().unwrap_or(0) > 0);
    let listed: Value = http
        .get(app.url("/api/v1/tasks?state=succeeded"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));

    // Done tasks cannot be cancelled; queued ones can.
    let resp =
        http.post(app.url(&format!("/api/v1/tasks/{id}/cancel"))).bearer_auth(&key).send().await.expect("cancel");
    assert_eq!(resp.status(), 409);
    let queued: Value =
        submit(json!({"team": "content", "prompt": "A post"}), None).await.expect("send").json().await.expect("json");
    let qid = queued["task"]["id"].as_str().expect("id");
    let resp =
        http.post(app.url(&format!("/api/v1/tasks/{qid}/cancel"))).bearer_auth(&key).send().await.expect("cancel");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["task"]["state"], "cancelled");

    // Another customer sees none of it.
    let (_, other) = app.customer_with_key("Other", "pro").await;
    let resp = http.get(app.url(&format!("/api/v1/tasks/{id}"))).bearer_auth(&other).send().await.expect("show");
    assert_eq!(resp.status(), 404);
    let resp = http.post(app.url(&format!("/api/v1/tasks/{qid}/cancel"))).bearer_auth(&other).send().await.expect("x");
    assert_eq!(resp.status(), 404);
    let listed: Value =
        http.get(app.url("/api/v1/tasks")).bearer_auth(&other).send().await.expect("list").json().await.expect("json");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0));

    // Templates are listed with their fields.
    let t: Value =
        http.get(app.url("/api/v1/templates")).bearer_auth(&key).send().await.expect("t").json().await.expect("json");
    let bug = t["data"].as_array().expect("data").iter().find(|x| x["id"] == "bug_fix").expect("bug_fix").clone();
    assert_eq!(bug["fields"], json!(["repository", "symptom"]));
}

#[tokio::test]
async fn customers_use_the_task_pages_and_the_operator_runs_the_queue() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let cid = app.customer_with_owner("Pagey", "owner@pagey.test").await;
    let browser = app.browser();
    app.login(&browser, "owner@pagey.test", common::PASSWORD).await;
    let html = browser.get(app.url("/app/tasks")).send().await.expect("tasks").text().await.expect("html");
    assert!(html.contains("New task") && html.contains("Fix a bug") && html.contains("name=\"field_symptom\""));
    let token = common::csrf_token(&html);

    // A template with its fields: the detail page follows.
    let resp = browser
        .post(app.url("/app/tasks"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("team", "code"),
            ("template", "bug_fix"),
            ("field_repository", "shop"),
            ("field_symptom", "cart empties"),
            ("priority", "normal"),
        ])
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 303);
    let detail_url = common::location(&resp);
    assert!(detail_url.starts_with("/app/tasks/tsk_"), "{detail_url}");
    // A bad one re-renders the form with the reason, and stores nothing.
    let resp = browser
        .post(app.url("/app/tasks"))
        .form(&[("csrf_token", token.as_str()), ("team", "code"), ("prompt", " "), ("priority", "normal")])
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.expect("html").contains("the prompt is empty"));
    assert_eq!(count_tasks(&app).await, 1);

    let worker = j1msky_tasks::Worker::new(
        app.db.clone(),
        app.catalogue.clone(),
        app.gateway().clone(),
        Arc::new(app.clock.clone()),
        "w",
        j1msky_tasks::WorkerConfig::default(),
    );
    worker.run_once().await.expect("run").expect("task");
    let html = browser.get(app.url(&detail_url)).send().await.expect("detail").text().await.expect("html");
    assert!(html.contains("succeeded") && html.contains("1. lead") && html.contains("2. review"), "{html}");
    assert!(html.contains("included in your plan"));

    // The operator's queue: a failing task shows with its error and can be retried.
    app.script_faults(json!({"fault": "400", "model": "kimi-k2.5", "times": 3})).await;
    let id = submit_direct(&app, &cid, "code", "Doomed").await;
    let (ran, _) = worker.run_once().await.expect("run").expect("task");
    assert_eq!(ran, id);
    let queued = submit_direct(&app, &cid, "research", "Later").await;
    let op = app.browser();
    app.login(&op, common::OPERATOR_EMAIL, common::PASSWORD).await;
    let html = op.get(app.url("/admin/queue")).send().await.expect("queue").text().await.expect("html");
    assert!(html.contains(&id) && html.contains("all models failed"), "the failure and its error");
    assert!(html.contains("<td>normal</td><td>research</td><td>1</td>"), "depth by priority and team: {html}");
    let token = common::csrf_token(&html);
    let resp = op
        .post(app.url(&format!("/admin/queue/{id}/retry")))
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .expect("retry");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.expect("html").contains("is queued again"));
    let resp = op
        .post(app.url(&format!("/admin/queue/{queued}/cancel")))
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .expect("cancel");
    assert_eq!(resp.status(), 200);
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT id, state FROM tasks ORDER BY queued_at, id").fetch_all(app.db.pool()).await.expect("s");
    assert!(states.contains(&(id.clone(), "queued".into())) && states.contains(&(queued, "cancelled".into())));
    // A customer cannot reach the operator's queue.
    assert_ne!(browser.get(app.url("/admin/queue")).send().await.expect("queue").status(), 200);
}

/// The operator's queue shows what waits under an SLA, and how many tasks are past it.
#[tokio::test]
async fn the_operator_s_queue_shows_tasks_past_their_sla() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let big = app.active_customer("Big Co", "enterprise").await.id;
    let small = app.active_customer("Small", "pro").await.id;
    let op = app.browser();
    app.login(&op, common::OPERATOR_EMAIL, common::PASSWORD).await;
    submit_direct(&app, &small, "code", "no SLA").await;
    let html = op.get(app.url("/admin/queue")).send().await.expect("queue").text().await.expect("html");
    assert!(!html.contains("Under an SLA"), "nothing queued under an SLA: no table");
    submit_direct(&app, &big, "code", "first").await;
    app.clock.advance_secs(4 * 60);
    submit_direct(&app, &big, "code", "second").await;
    app.clock.advance_secs(2 * 60);
    let html = op.get(app.url("/admin/queue")).send().await.expect("queue").text().await.expect("html");
    assert!(html.contains("Under an SLA"), "{html}");
    assert!(
        html.contains("<tr data-sla-past=\"1\"><td>Enterprise</td><td>2</td>"),
        "two queued, one past the 5 min: {html}"
    );
}

/// A customer on a plan of chosen teams who subscribed without choosing them (Starter at
/// Checkout) chooses them on `/app/tasks`, owner only; a chosen team stays chosen, the
/// plan's number holds, and one who moved down from every team runs the first chosen.
#[tokio::test]
async fn the_owner_chooses_the_teams_its_plan_leaves_open_and_no_more() {
    use j1msky_accounts::customers;
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let c = app.active_customer("Chooser", "starter").await;
    for (email, role) in [
        ("owner@chooser.test", j1msky_core::vocab::UserRole::Owner),
        ("member@chooser.test", j1msky_core::vocab::UserRole::Member),
    ] {
        app.user_of(&c.id, email, role).await;
    }
    let run = |team: &'static str| {
        let (db, catalogue, id, now) = (app.db.clone(), app.catalogue.clone(), c.id.clone(), app.now());
        async move {
            let input = j1msky_tasks::NewTask { team: team.into(), prompt: Some("x".into()), ..Default::default() };
            j1msky_tasks::submit(&db, &catalogue, &id, &input, None, now).await.map(|_| ()).map_err(|e| e.to_string())
        }
    };
    let refused = run("code").await.expect_err("no team chosen yet");
    assert!(refused.contains("choose the rest on /app/tasks"), "{refused}");

    let choose = |browser: reqwest::Client, teams: &'static [&'static str]| {
        let app = &app;
        async move {
            let token = app.page_token(&browser, "/app/tasks").await;
            let mut form: Vec<(String, String)> = vec![("csrf_token".into(), token)];
            form.extend(teams.iter().map(|t| (format!("team_{t}"), "on".to_string())));
            browser.post(app.url("/app/teams")).form(&form).send().await.expect("post")
        }
    };
    let member = app.browser();
    app.login(&member, "member@chooser.test", common::PASSWORD).await;
    assert_eq!(choose(member, &["code"]).await.status(), 403, "a member does not choose");
    let owner = app.browser();
    app.login(&owner, "owner@chooser.test", common::PASSWORD).await;
    let page = owner.get(app.url("/app/tasks")).send().await.expect("page").text().await.expect("body");
    assert!(page.contains("Choose 2 more team(s)"), "{page}");
    assert_eq!(choose(owner.clone(), &["code"]).await.status(), 303);
    run("code").await.expect("a chosen team runs");
    assert!(run("research").await.is_err());
    let swap = choose(owner.clone(), &["research"]).await;
    assert_eq!(swap.status(), 422);
    assert!(swap.text().await.expect("body").contains("stays chosen"));
    let three = choose(owner.clone(), &["code", "research", "content"]).await;
    assert_eq!(three.status(), 422, "the plan's two, no more");
    assert_eq!(choose(owner.clone(), &["code", "research"]).await.status(), 303);
    run("research").await.expect("the second chosen team runs");
    let page = owner.get(app.url("/app/tasks")).send().await.expect("page").text().await.expect("body");
    assert!(!page.contains("choose-teams"), "no slot left to choose");
    assert_eq!(customers::get(&app.db, &c.id).await.expect("customer").chosen_teams, ["code", "research"]);

    // Moved down from a plan of every team with four chosen: the first two run.
    sqlx::query("UPDATE customers SET chosen_teams = '[\"content\",\"business\",\"code\",\"research\"]'")
        .execute(app.db.pool())
        .await
        .expect("teams");
    run("business").await.expect("among the first two");
    let refused = run("code").await.expect_err("past the plan's two");
    assert!(refused.contains("content, business"), "{refused}");
}
