//! One domain function per action: whichever door an action comes through (admin form,
//! API, dashboard, the domain call the CLI makes), it has the same effect.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

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
    // A conflict, as the API would answer it (one mapping per domain error).
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.headers()["x-error-code"], "conflict");
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

/// The dashboard hands the operator's text to the same gateway function the CLI calls,
/// so a bad value is refused with the same words, and nothing is stored.
#[tokio::test]
async fn bad_caps_and_budgets_get_the_domains_error_on_the_dashboard() {
    let app = spawn_app().await;
    let operator = app.browser();
    app.login(&operator, OPERATOR_EMAIL, PASSWORD).await;
    for (path, scope, value) in [
        ("/admin/gateway/caps", "global", "-4"),
        ("/admin/gateway/caps", "global", "lots"),
        ("/admin/gateway/caps", "budget:daily", "5"),
        ("/admin/gateway/budget", "", "0"),
    ] {
        let expected = if path.ends_with("caps") {
            j1msky_gateway::controls::set_cap_text(
                &app.db,
                &app.catalogue,
                &Actor::cli(),
                scope,
                value,
                "test",
                app.now(),
            )
            .await
            .expect_err("refused")
        } else {
            j1msky_gateway::controls::set_daily_budget_text(&app.db, &Actor::cli(), value, "test", app.now())
                .await
                .expect_err("refused")
        };
        assert!(matches!(expected, j1msky_gateway::controls::ControlError::Rule { .. }), "{expected:?}");
        let token = app.page_token(&operator, "/admin/gateway").await;
        let form =
            [("csrf_token", token.as_str()), ("scope", scope), ("cap", value), ("amount", value), ("reason", "test")];
        let resp = operator.post(app.url(path)).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), 422, "{path} {value}");
        let html = resp.text().await.unwrap();
        let shown = expected.to_string().replace('`', "&#x60;");
        assert!(html.contains(&shown) || html.contains(&expected.to_string()), "{path}: `{expected}` not in the page");
    }
    let controls = j1msky_gateway::controls::load(&app.db).await.unwrap();
    assert!(controls.caps.is_empty(), "nothing stored: {:?}", controls.caps);
}

#[tokio::test]
async fn a_setting_keeps_its_previous_value_and_who_changed_it() {
    let app = spawn_app().await;
    let controls = j1msky_gateway::controls::set_cap;
    controls(&app.db, &app.catalogue, &Actor::cli(), "global", Some(10), "test", app.now()).await.unwrap();
    controls(&app.db, &app.catalogue, &Actor::user("usr_ann"), "global", Some(20), "test", app.now() + 1)
        .await
        .unwrap();
    controls(&app.db, &app.catalogue, &Actor::system(), "global", None, "test", app.now() + 2).await.unwrap();
    let history = j1msky_audit::settings::history(&app.db, "gateway.cap.global", 10).await.unwrap();
    let seen: Vec<(Option<&str>, Option<&str>, &str)> =
        history.iter().map(|c| (c.previous.as_deref(), c.value.as_deref(), c.changed_by.as_str())).collect();
    assert_eq!(
        seen,
        vec![(Some("20"), None, "system"), (Some("10"), Some("20"), "user:usr_ann"), (None, Some("10"), "cli")]
    );
}
