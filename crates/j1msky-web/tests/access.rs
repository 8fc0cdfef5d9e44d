//! Access rules over HTTP: CSRF, login throttling, sessions, body limits, bad JSON,
//! health, readiness and metrics.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{location, session_cookie, spawn_app, spawn_app_with, OPERATOR_EMAIL, PASSWORD};
use serde_json::Value;

#[tokio::test]
async fn form_posts_without_a_valid_csrf_token_are_refused() {
    let app = spawn_app().await;
    let browser = app.browser();
    // Login form without the token (the pre-login cookie is set, the field missing).
    browser.get(app.url("/login")).send().await.unwrap();
    let resp = browser
        .post(app.url("/login"))
        .form(&[("email", OPERATOR_EMAIL), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf");

    assert_eq!(app.login(&browser, OPERATOR_EMAIL, PASSWORD).await.status(), 303);
    for token in [None, Some("forged-token")] {
        let mut form = vec![("name", "Sneaky")];
        if let Some(t) = token {
            form.push(("csrf_token", t));
        }
        let resp = browser.post(app.url("/admin/customers")).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), 403, "token {token:?}");
        let resp = browser.post(app.url("/logout")).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), 403, "logout with token {token:?}");
    }
    // A cookie-carrying request that is neither a form nor JSON is refused too.
    let resp = browser
        .post(app.url("/api/v1/keys"))
        .header("content-type", "text/plain")
        .body("{\"name\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(j1msky_accounts::customers::list(&app.db, None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled_per_account_then_released() {
    let app = spawn_app().await;
    app.customer_with_owner("T", "t@t.test").await;
    let browser = app.browser();
    for _ in 0..5 {
        assert_eq!(app.login(&browser, "t@t.test", "wrong password!").await.status(), 401);
    }
    // Locked: even the right password is refused, with Retry-After.
    let resp = app.login(&browser, "t@t.test", PASSWORD).await;
    assert_eq!(resp.status(), 429);
    let retry: i64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    // Another account from the same address is not locked by this one.
    assert_eq!(app.login(&app.browser(), OPERATOR_EMAIL, PASSWORD).await.status(), 303);

    app.clock.advance_secs(901);
    assert_eq!(app.login(&browser, "t@t.test", PASSWORD).await.status(), 303);
}

#[tokio::test]
async fn a_browser_that_logged_in_before_is_not_locked_out_by_failures_from_another() {
    let app = spawn_app().await;
    app.customer_with_owner("T", "t@t.test").await;
    let owner = app.browser();
    let first = app.login(&owner, "t@t.test", PASSWORD).await;
    assert_eq!(first.status(), 303);
    let set: Vec<_> = first.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect();
    let device = set.iter().find(|c| c.starts_with("j1msky_device=")).expect("a known-browser cookie");
    assert!(device.contains("HttpOnly") && device.contains("Max-Age=7776000"), "{device}");
    let token = app.page_token(&owner, "/app").await;
    let out = owner.post(app.url("/logout")).form(&[("csrf_token", token.as_str())]).send().await.unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(owner.get(app.url("/app")).send().await.unwrap().status(), 303, "signed out");

    let other = app.browser();
    for _ in 0..5 {
        assert_eq!(app.login(&other, "t@t.test", "wrong password!").await.status(), 401);
    }
    assert_eq!(app.login(&other, "t@t.test", PASSWORD).await.status(), 429, "the account is locked");
    assert_eq!(app.login(&owner, "t@t.test", PASSWORD).await.status(), 303, "but not for its known browser");
    assert_eq!(owner.get(app.url("/app")).send().await.unwrap().status(), 200);
    assert_eq!(app.login(&other, "t@t.test", PASSWORD).await.status(), 429, "and still for others");
}

#[tokio::test]
async fn many_failures_from_one_address_slow_it_down_without_locking_out_others_there() {
    let app = spawn_app().await;
    app.customer_with_owner("T", "t@t.test").await;
    let browser = app.browser();
    for i in 0..20 {
        let resp = app.login(&browser, &format!("nobody{i}@x.test"), "wrong password!").await;
        assert_eq!(resp.status(), 401, "attempt {i}");
    }
    // Past its limit the address has one try per account: a second one is refused.
    assert_eq!(app.login(&browser, "nobody0@x.test", "wrong password!").await.status(), 401);
    let resp = app.login(&browser, "nobody0@x.test", "wrong password!").await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // Others behind the same address still get into their own accounts.
    assert_eq!(app.login(&app.browser(), OPERATOR_EMAIL, PASSWORD).await.status(), 303);
    assert_eq!(app.login(&app.browser(), "t@t.test", PASSWORD).await.status(), 303);
}

#[tokio::test]
async fn sessions_end_on_logout_and_expiry() {
    let app = spawn_app().await;
    let browser = app.browser();
    app.login(&browser, OPERATOR_EMAIL, PASSWORD).await;
    assert_eq!(browser.get(app.url("/admin")).send().await.unwrap().status(), 200);
    let token = app.page_token(&browser, "/admin").await;
    let resp = browser.post(app.url("/logout")).form(&[("csrf_token", token.as_str())]).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let resp = browser.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/login?next=%2Fadmin");

    app.login(&browser, OPERATOR_EMAIL, PASSWORD).await;
    assert_eq!(browser.get(app.url("/admin")).send().await.unwrap().status(), 200);
    app.clock.advance_secs(8 * 86_400);
    assert_eq!(browser.get(app.url("/admin")).send().await.unwrap().status(), 303);
}

#[tokio::test]
async fn secure_cookies_behind_https() {
    let app = spawn_app_with(j1msky_web::WebConfig { secure_cookies: true, ..Default::default() }).await;
    let resp = app.login(&app.browser(), OPERATOR_EMAIL, PASSWORD).await;
    // The cookie store will not send a Secure cookie over http, but the flag must be set.
    let cookie = session_cookie(&resp);
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
}

#[tokio::test]
async fn bad_json_is_400_and_oversized_bodies_are_413() {
    let app = spawn_app().await;
    app.customer_with_owner("J", "j@j.test").await;
    let owner = app.browser();
    app.login(&owner, "j@j.test", PASSWORD).await;
    // A signed-in script sends the session's CSRF token in a header.
    let token = app.page_token(&owner, "/app").await;

    let resp = owner
        .post(app.url("/api/v1/keys"))
        .header("x-csrf-token", &token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_json");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());

    let resp = owner
        .post(app.url("/api/v1/keys"))
        .header("x-csrf-token", &token)
        .json(&serde_json::json!({"nom": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let resp =
        owner.post(app.url("/api/v1/keys")).header("x-csrf-token", &token).header("content-type", "application/json");
    let resp = resp.body(huge).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let listed: Value = owner.get(app.url("/api/v1/keys")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 0, "nothing stored");

    let resp = owner
        .post(app.url("/api/v1/keys"))
        .header("x-csrf-token", &token)
        .json(&serde_json::json!({"name": "good"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // The secret is shown this once: no cache, browser or proxy, keeps a copy.
    assert_eq!(resp.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let created: Value = resp.json().await.unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("jk_"));
    assert!(created["key"].get("secret").is_none());
    // The page that shows it once, likewise.
    let token = app.page_token(&owner, "/app").await;
    let resp = owner.post(app.url("/app/keys")).form(&[("csrf_token", token.as_str()), ("name", "page")]).send().await;
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    assert!(resp.text().await.unwrap().contains("jk_"), "the page shows the secret");
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_routes() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let resp = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client.get(app.url("/api/v1/nothing")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "not_found");

    let metrics = client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("http_request_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("db_pool_connections"), "{metrics}");

    app.db.close().await;
    let resp = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
}
