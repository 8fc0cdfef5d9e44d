// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! One mapping per domain error: the JSON API and the browser pages answer the same
//! error with the same status and code (the page carries it in `x-error-code` and on the
//! error page), and an internal failure is 500 `internal` on both without its details.

use crate::common;

use common::{spawn_app_with_gateway, TestApp, OPERATOR_EMAIL, PASSWORD};
use j1msky_audit::Actor;
use j1msky_sim::SimConfig;
use serde_json::{json, Value};

/// The status and code of a JSON error answer.
async fn json_error(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json error body");
    let code = body["error"]["code"].as_str().expect("error.code").to_string();
    let message = body["error"]["message"].as_str().expect("error.message").to_string();
    (status, code, message)
}

/// The status and code of a page answer, and its HTML.
async fn page_error(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let code = resp.headers().get("x-error-code").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let html = resp.text().await.expect("html");
    (status, code, html)
}

/// A signed-in browser of `email` and a CSRF token of its pages.
async fn signed_in(app: &TestApp, email: &str, page: &str) -> (reqwest::Client, String) {
    let browser = app.browser();
    let r = app.login(&browser, email, PASSWORD).await;
    assert_eq!(r.status(), 303, "login of {email}");
    let token = app.page_token(&browser, page).await;
    (browser, token)
}

#[tokio::test]
async fn the_api_and_the_pages_answer_each_domain_error_alike() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let cid = app.customer_with_owner("Same Answer Co", "owner@same.test").await;
    let (_, key) = j1msky_accounts::api_keys::create(&app.db, &Actor::cli(), &cid, "k", app.now()).await.expect("key");
    let (other, _) = app.customer_with_key("Someone Else", "pro").await;
    let api = reqwest::Client::new();
    let (browser, token) = signed_in(&app, "owner@same.test", "/app/tasks").await;

    // Tasks: missing, or another customer's (indistinguishable) → 404 not_found.
    let theirs = j1msky_tasks::submit(
        &app.db,
        &app.catalogue,
        &other,
        &j1msky_tasks::NewTask { team: "content".into(), prompt: Some("x".into()), ..Default::default() },
        None,
        app.now(),
    )
    .await
    .expect("their task")
    .task
    .id;
    for id in ["tsk_missing", theirs.as_str()] {
        let (js, jc, _) =
            json_error(api.get(app.url(&format!("/api/v1/tasks/{id}"))).bearer_auth(&key).send().await.expect("api"))
                .await;
        let (ps, pc, html) =
            page_error(browser.get(app.url(&format!("/app/tasks/{id}"))).send().await.expect("page")).await;
        assert_eq!((js, jc.as_str()), (404, "not_found"), "api, task {id}");
        assert_eq!((ps, pc.as_str()), (404, "not_found"), "page, task {id}");
        assert!(html.contains("<code>not_found</code>"), "the error page shows the code");
        assert!(!html.contains(&theirs), "nothing of the other customer's task is shown");
    }

    // Tasks: refused input → 422 invalid, with the same message (the form shows it again).
    let (js, jc, jm) = json_error(
        api.post(app.url("/api/v1/tasks"))
            .bearer_auth(&key)
            .json(&json!({"team": "nope", "prompt": "x"}))
            .send()
            .await
            .expect("api"),
    )
    .await;
    let (ps, pc, html) = page_error(
        browser
            .post(app.url("/app/tasks"))
            .form(&[("csrf_token", token.as_str()), ("team", "nope"), ("prompt", "x")])
            .send()
            .await
            .expect("page"),
    )
    .await;
    assert_eq!((js, jc.as_str()), (422, "invalid"));
    assert_eq!((ps, pc.as_str()), (422, "invalid"));
    assert!(jm.contains("unknown team `nope`"), "{jm}");
    assert!(html.contains("unknown team `nope`"), "the form shows the same message");

    // Tasks: cancelling a task that is already over → 409 conflict.
    let mine = j1msky_tasks::submit(
        &app.db,
        &app.catalogue,
        &cid,
        &j1msky_tasks::NewTask { team: "content".into(), prompt: Some("x".into()), ..Default::default() },
        None,
        app.now(),
    )
    .await
    .expect("my task")
    .task
    .id;
    j1msky_tasks::cancel(&app.db, &mine, Some(&cid), "test", app.now()).await.expect("cancel once");
    let (js, jc, _) = json_error(
        api.post(app.url(&format!("/api/v1/tasks/{mine}/cancel"))).bearer_auth(&key).send().await.expect("api"),
    )
    .await;
    let (ps, pc, _) = page_error(
        browser
            .post(app.url(&format!("/app/tasks/{mine}/cancel")))
            .form(&[("csrf_token", token.as_str())])
            .send()
            .await
            .expect("page"),
    )
    .await;
    assert_eq!((js, jc.as_str()), (409, "conflict"));
    assert_eq!((ps, pc.as_str()), (409, "conflict"));

    // Accounts: revoking a key that is not the customer's → 404 not_found on both.
    let (js, jc, _) =
        json_error(api.delete(app.url("/api/v1/keys/key_not_theirs")).bearer_auth(&key).send().await.expect("api"))
            .await;
    let (ps, pc, _) = page_error(
        browser
            .post(app.url("/app/keys/key_not_theirs/revoke"))
            .form(&[("csrf_token", token.as_str())])
            .send()
            .await
            .expect("page"),
    )
    .await;
    assert_eq!((js, jc.as_str()), (404, "not_found"));
    assert_eq!((ps, pc.as_str()), (404, "not_found"));

    // Accounts: a key name the domain refuses → 422 invalid on both.
    let (js, jc, _) = json_error(
        browser
            .post(app.url("/api/v1/keys"))
            .header("x-csrf-token", token.as_str())
            .json(&json!({"name": "x".repeat(500)}))
            .send()
            .await
            .expect("api"),
    )
    .await;
    let long = "x".repeat(500);
    let (ps, pc, _) = page_error(
        browser
            .post(app.url("/app/keys"))
            .form(&[("csrf_token", token.as_str()), ("name", long.as_str())])
            .send()
            .await
            .expect("page"),
    )
    .await;
    assert_eq!((ps, pc.as_str()), (js, jc.as_str()), "same answer for a refused key name");
    assert_eq!((js, jc.as_str()), (422, "invalid"));

    // Gateway controls (pages and CLI only): a refused cap is 422 invalid, the form
    // shown again with the message.
    let (op, op_token) = signed_in(&app, OPERATOR_EMAIL, "/admin/gateway").await;
    let (ps, pc, html) = page_error(
        op.post(app.url("/admin/gateway/caps"))
            .form(&[("csrf_token", op_token.as_str()), ("scope", "customer:nobody"), ("cap", "many")])
            .send()
            .await
            .expect("page"),
    )
    .await;
    assert_eq!((ps, pc.as_str()), (422, "invalid"), "{html}");

    // Internal: the tasks table gone (a broken database) → 500 internal on both, and
    // nothing of the database's own message reaches the caller.
    sqlx::query("ALTER TABLE tasks RENAME TO tasks_gone").execute(app.db.pool()).await.expect("break the table");
    let resp = api.get(app.url("/api/v1/tasks")).bearer_auth(&key).send().await.expect("api");
    let (js, jc, jm) = json_error(resp).await;
    let (ps, pc, html) = page_error(browser.get(app.url("/app/tasks")).send().await.expect("page")).await;
    assert_eq!((js, jc.as_str()), (500, "internal"));
    assert_eq!((ps, pc.as_str()), (500, "internal"));
    assert_eq!(jm, "internal error; it has been logged");
    assert!(html.contains("internal error; it has been logged"));
    for text in [jm.as_str(), html.as_str()] {
        for detail in ["no such table", "does not exist", "tasks_gone", "sqlx", "error returned from database"] {
            assert!(!text.contains(detail), "`{detail}` leaked: {text}");
        }
    }
}

#[tokio::test]
async fn billing_errors_keep_their_status_and_code_on_the_pages_and_the_webhook() {
    let (app, _fake, _stripe) = common::spawn_app_with_stripe().await;
    app.customer_with_owner("Billing Errors Co", "owner@billing-errors.test").await;
    let (browser, token) = signed_in(&app, "owner@billing-errors.test", "/app/billing").await;

    // A plan the catalogue does not sell: refused input, 422 invalid.
    let (ps, pc, html) = page_error(
        browser
            .post(app.url("/app/billing/checkout"))
            .form(&[("csrf_token", token.as_str()), ("plan", "platinum-forever")])
            .send()
            .await
            .expect("page"),
    )
    .await;
    assert_eq!((ps, pc.as_str()), (422, "invalid"), "{html}");
    assert!(html.contains("<code>invalid</code>"));

    // The webhook (JSON): a forged signature, 400 bad_signature, nothing stored.
    let (js, jc, jm) = json_error(
        reqwest::Client::new()
            .post(app.url("/webhooks/stripe"))
            .header("stripe-signature", "t=1,v1=00")
            .body("{}")
            .send()
            .await
            .expect("webhook"),
    )
    .await;
    assert_eq!((js, jc.as_str()), (400, "bad_signature"), "{jm}");
}
