//! One domain function per action: whichever door an action comes through (admin form,
//! API, dashboard, the domain call the CLI makes), it has the same effect.

mod common;

use common::{spawn_app, OPERATOR_EMAIL, PASSWORD};
use j1msky_audit::Actor;

#[tokio::test]
async fn a_taken_owner_email_leaves_no_customer_behind() {
    let app = spawn_app().await;
    app.customer_with_owner("Existing", "taken@example.test").await;
    let operator = app.browser();
    app.login(&operator, OPERATOR_EMAIL, PASSWORD).await;
    let token = app.page_token(&operator, "/admin").await;
    let resp = operator
        .post(app.url("/admin/customers"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("name", "Second Co"),
            ("plan", "starter"),
            ("owner_email", "Taken@example.test"),
            ("owner_password", "a long enough password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let html = resp.text().await.unwrap();
    assert!(html.contains("already exists"), "the page says why");
    let names: Vec<String> =
        j1msky_accounts::customers::list(&app.db, None, 50).await.unwrap().into_iter().map(|c| c.name).collect();
    assert!(!names.iter().any(|n| n == "Second Co"), "no customer without its owner: {names:?}");
}

/// The key answers 200 on /api/v1, then `revoke` runs, then it must fail on /api/v1 and
/// /v1 at once: the cache may have just seen it valid.
async fn revoked_at_once(app: &common::TestApp, secret: &str, revoke: impl std::future::Future<Output = ()>) {
    let client = reqwest::Client::new();
    let me = || client.get(app.url("/api/v1/me")).bearer_auth(secret).send();
    assert_eq!(me().await.unwrap().status(), 200, "valid (and now cached) before the revocation");
    revoke.await;
    assert_eq!(me().await.unwrap().status(), 401, "/api/v1 refuses the revoked key at once");
    let v1 = client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(secret)
        .json(&serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), 401, "/v1 refuses the revoked key at once");
}

#[tokio::test]
async fn a_key_revoked_by_the_domain_function_alone_stops_at_once() {
    let app = spawn_app().await;
    let (cid, secret) = app.customer_with_key("Keyed", "pro").await;
    let key = j1msky_accounts::api_keys::list(&app.db, &cid).await.unwrap().remove(0);
    // What the CLI calls: nothing but the domain function, no cache in reach.
    let revoke = async {
        j1msky_accounts::api_keys::revoke(&app.db, &Actor::cli(), &key.id, None, app.now()).await.unwrap();
    };
    revoked_at_once(&app, &secret, revoke).await;
}

#[tokio::test]
async fn a_key_revoked_through_the_api_or_the_dashboard_stops_at_once() {
    let app = spawn_app().await;
    let cid = app.customer_with_owner("Owned", "owner@owned.test").await;
    let owner = app.browser();
    app.login(&owner, "owner@owned.test", PASSWORD).await;
    for via_api in [true, false] {
        let (key, secret) =
            j1msky_accounts::api_keys::create(&app.db, &Actor::cli(), &cid, "k", app.now()).await.unwrap();
        let token = app.page_token(&owner, "/app").await;
        let revoke = async {
            let resp = if via_api {
                owner.delete(app.url(&format!("/api/v1/keys/{}", key.id))).header("x-csrf-token", &token).send()
            } else {
                owner.post(app.url(&format!("/app/keys/{}/revoke", key.id))).form(&[("csrf_token", &token)]).send()
            }
            .await
            .unwrap();
            assert!(resp.status().is_success() || resp.status().is_redirection(), "revoked: {}", resp.status());
        };
        revoked_at_once(&app, &secret, revoke).await;
    }
}
