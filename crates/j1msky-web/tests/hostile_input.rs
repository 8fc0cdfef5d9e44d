//! What a client controls and must not be able to abuse: the forwarded address
//! chain, the `next` redirect after login, and text a database cannot store.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{csrf_token, spawn_app, spawn_app_with, OPERATOR_EMAIL, PASSWORD};
use sqlx::Row;

/// Logs the operator in with extra headers; answers the address the session records.
async fn login_address(app: &common::TestApp, forwarded_for: &[&str]) -> String {
    let browser = app.browser();
    let form = browser.get(app.url("/login")).send().await.unwrap();
    let token = csrf_token(&form.text().await.unwrap());
    let mut req = browser.post(app.url("/login")).form(&[
        ("csrf_token", token.as_str()),
        ("email", OPERATOR_EMAIL),
        ("password", PASSWORD),
    ]);
    for value in forwarded_for {
        req = req.header("x-forwarded-for", *value);
    }
    assert_eq!(req.send().await.unwrap().status(), 303);
    let row = sqlx::query("SELECT ip FROM sessions ORDER BY created_at DESC, token_hash LIMIT 1")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM sessions").execute(app.db.pool()).await.unwrap();
    row.try_get::<Option<String>, _>(0).unwrap().unwrap_or_default()
}

#[tokio::test]
async fn behind_trusted_proxies_the_client_is_the_right_most_untrusted_hop() {
    let one = spawn_app_with(j1msky_web::WebConfig { trust_proxy: true, ..Default::default() }).await;
    // The client wrote the left-most entries itself; the proxy appended what it saw.
    assert_eq!(login_address(&one, &["6.6.6.6, 203.0.113.9"]).await, "203.0.113.9");
    assert_eq!(login_address(&one, &["6.6.6.6", "7.7.7.7, 203.0.113.10"]).await, "203.0.113.10");
    assert_eq!(login_address(&one, &["203.0.113.11"]).await, "203.0.113.11");
    assert_eq!(login_address(&one, &["6.6.6.6, 203.0.113.13:4711"]).await, "203.0.113.13");
    assert_eq!(login_address(&one, &["6.6.6.6, [2001:db8::1]:443"]).await, "2001:db8::1");
    // Garbage where the proxy's entry should be: the socket peer, not the garbage.
    assert_eq!(login_address(&one, &["6.6.6.6, not-an-address"]).await, "127.0.0.1");

    let two =
        spawn_app_with(j1msky_web::WebConfig { trust_proxy: true, trusted_proxies: 2, ..Default::default() }).await;
    assert_eq!(login_address(&two, &["6.6.6.6, 203.0.113.9, 10.0.0.2"]).await, "203.0.113.9");
    assert_eq!(login_address(&two, &["203.0.113.12, 10.0.0.2"]).await, "203.0.113.12");

    let untrusted = spawn_app().await;
    assert_eq!(login_address(&untrusted, &["6.6.6.6, 203.0.113.9"]).await, "127.0.0.1");
}

#[tokio::test]
async fn a_client_cannot_dodge_the_address_limit_by_forging_forwarded_entries() {
    let app = spawn_app_with(j1msky_web::WebConfig { trust_proxy: true, ..Default::default() }).await;
    let browser = app.browser();
    let mut statuses = Vec::new();
    for i in 0..22 {
        // Twenty accounts, then the first one twice more, each time from a new forged entry.
        let email = format!("nobody{}@x.test", if i < 20 { i } else { 0 });
        let form = browser.get(app.url("/login")).send().await.unwrap();
        let token = csrf_token(&form.text().await.unwrap());
        let resp = browser
            .post(app.url("/login"))
            .header("x-forwarded-for", format!("10.{i}.0.1, 198.51.100.3"))
            .form(&[("csrf_token", token.as_str()), ("email", email.as_str()), ("password", "wrong password!")])
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    // The proxy-seen address passed its limit: one more try at an account, then 429.
    assert_eq!(&statuses[20..], &[401, 429], "{statuses:?}");
}

/// Logs the operator in with `next`; answers the status and where it sends the browser.
async fn login_with_next(app: &common::TestApp, next: &str) -> (u16, String) {
    let browser = app.browser();
    let form = browser.get(app.url("/login")).send().await.unwrap();
    let token = csrf_token(&form.text().await.unwrap());
    let resp = browser
        .post(app.url("/login"))
        .form(&[("csrf_token", token.as_str()), ("email", OPERATOR_EMAIL), ("password", PASSWORD), ("next", next)])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), common::location(&resp))
}

#[tokio::test]
async fn next_after_login_only_goes_to_same_site_paths() {
    let app = spawn_app().await;
    for next in ["/app/tasks?state=queued", "/admin/customers/cus_1", "/admin/queue#top", "/a/%2F%2Fb"] {
        assert_eq!(login_with_next(&app, next).await, (303, next.to_string()), "{next:?}");
    }
    let hostile = [
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\nSet-Cookie: j1msky_session=x",
        "/caf\u{e9}",
        "/ /evil.example",
        "/\u{7f}",
        "",
    ];
    for next in hostile {
        assert_eq!(login_with_next(&app, next).await, (303, "/admin".to_string()), "{next:?}");
        // The login page does not carry it forward either.
        let page = app.browser().get(app.url("/login")).query(&[("next", next)]).send().await.unwrap();
        assert_eq!(page.status(), 200, "{next:?}");
        assert!(!page.text().await.unwrap().contains("evil.example"), "{next:?}");
    }
}

/// Asserts a 400 whose message names `field`.
async fn assert_refused_naming(resp: reqwest::Response, field: &str, what: &str) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(status, 400, "{what}: {body}");
    assert_eq!(body["error"]["code"], "invalid_text", "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("`{field}`")), "{what}: {message}");
}

#[tokio::test]
async fn nul_bytes_get_a_400_naming_the_field_everywhere_and_nothing_is_stored() {
    let app = common::spawn_app_with_everything().await;
    let (_, key) = app.customer_with_key("Acme", "pro").await;
    let api = reqwest::Client::new();

    // The login form, each field.
    for (field, email, password, next) in [
        ("email", "op\0@agency.test", PASSWORD, "/admin"),
        ("password", OPERATOR_EMAIL, "correct horse\0", "/admin"),
        ("next", OPERATOR_EMAIL, PASSWORD, "/admin\0"),
    ] {
        let browser = app.browser();
        let form = browser.get(app.url("/login")).send().await.unwrap();
        let token = csrf_token(&form.text().await.unwrap());
        let resp = browser
            .post(app.url("/login"))
            .form(&[("csrf_token", token.as_str()), ("email", email), ("password", password), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_refused_naming(resp, field, "login").await;
    }

    // JSON: a top-level field, a nested one, and a key.
    let resp = api.post(app.url("/api/v1/keys")).bearer_auth(&key).json(&serde_json::json!({"name": "a\u{0}b"}));
    assert_refused_naming(resp.send().await.unwrap(), "name", "key name").await;
    let body = serde_json::json!({"team": "code", "prompt": "fine", "fields": {"goal": "x\u{0}"}});
    let resp = api.post(app.url("/api/v1/tasks")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_refused_naming(resp, "fields.goal", "task field").await;
    let body = serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi\u{0}"}]});
    let resp = api.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_refused_naming(resp, "messages[0].content", "chat message").await;
    let resp = api
        .post(app.url("/v1/messages"))
        .bearer_auth(&key)
        .body(r#"{"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "\u0000"}]}"#)
        .send()
        .await
        .unwrap();
    assert_refused_naming(resp, "messages[0].content", "chat message without a content type").await;
    let resp = api
        .post(app.url("/api/v1/tasks"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(r#"{"team": "code", "prompt": "x", "a\u0000": 1}"#)
        .send()
        .await
        .unwrap();
    assert_refused_naming(resp, "a\\u0000", "key").await;

    // Path and query.
    let resp = api.get(app.url("/api/v1/tasks/tsk_%00")).bearer_auth(&key).send().await.unwrap();
    assert_refused_naming(resp, "path", "path").await;
    let resp = api.get(app.url("/api/v1/tasks?state=%00")).bearer_auth(&key).send().await.unwrap();
    assert_refused_naming(resp, "state", "query").await;

    // A signed-in form.
    let operator = app.browser();
    assert_eq!(app.login(&operator, OPERATOR_EMAIL, PASSWORD).await.status(), 303);
    let token = app.page_token(&operator, "/admin").await;
    let resp = operator
        .post(app.url("/admin/customers"))
        .form(&[("csrf_token", token.as_str()), ("name", "Evil\0Corp")])
        .send()
        .await
        .unwrap();
    assert_refused_naming(resp, "name", "customer form").await;

    // Nothing of it was stored, and the store still works.
    let customers = j1msky_accounts::customers::list(&app.db, None, 10).await.unwrap();
    assert_eq!(customers.len(), 1, "only Acme");
    let keys: serde_json::Value =
        api.get(app.url("/api/v1/keys")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys["data"].as_array().map(Vec::len), Some(1), "{keys}");
    let tasks: serde_json::Value =
        api.get(app.url("/api/v1/tasks")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(tasks["data"].as_array().map(Vec::len), Some(0), "{tasks}");
}
