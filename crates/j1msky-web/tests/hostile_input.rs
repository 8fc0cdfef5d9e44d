//! What a client controls and must not be able to abuse: the forwarded address
//! chain, the `next` redirect after login, and text a database cannot store.

mod common;

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
