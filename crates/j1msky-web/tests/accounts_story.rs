//! The foundation story over HTTP: operator creates a customer and owner, the owner
//! logs in, creates a key and calls the API; isolation between customers.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{location, session_cookie, spawn_app, OPERATOR_EMAIL, PASSWORD};
use j1msky_accounts::users;
use j1msky_audit::audit;
use serde_json::Value;

#[tokio::test]
async fn operator_onboards_a_customer_whose_owner_calls_the_api_with_a_key() {
    let app = spawn_app().await;

    let operator = app.browser();
    let resp = app.login(&operator, OPERATOR_EMAIL, PASSWORD).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/admin");

    let token = app.page_token(&operator, "/admin").await;
    let resp = operator
        .post(app.url("/admin/customers"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("name", "Acme Robotics"),
            ("contact_email", "ops@acme.test"),
            ("stage", "trial"),
            ("use_case", "code"),
            ("plan", "starter"),
            ("teams", "code, research"),
            ("expected_monthly_tasks", "80"),
            ("time_zone", "Europe/Berlin"),
            ("owner_email", "Ann@Acme.test"),
            ("owner_password", "ann's long password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{:?}", resp.text().await);
    let detail = location(&resp);
    assert!(detail.starts_with("/admin/customers/cus_"), "{detail}");
    let customer_id = detail.trim_start_matches("/admin/customers/").to_string();
    let page = operator.get(app.url(&detail)).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Acme Robotics") && page.contains("Ann@Acme.test") && page.contains("Europe&#x2f;Berlin"),
        "{page}"
    );

    // The owner logs in with the email in another case.
    let owner = app.browser();
    let resp = app.login(&owner, "ann@acme.TEST", "ann's long password").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/app");
    let cookie = session_cookie(&resp);
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http must not set Secure: {cookie}");

    let token = app.page_token(&owner, "/app").await;
    let resp =
        owner.post(app.url("/app/keys")).form(&[("csrf_token", token.as_str()), ("name", "ci")]).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    let start = html.find("id=\"new-secret\">").unwrap() + "id=\"new-secret\">".len();
    let secret = html[start..start + html[start..].find('<').unwrap()].to_string();
    assert!(secret.starts_with("jk_"), "{secret}");
    // Shown once: the next visit lists the key by prefix only.
    let again = owner.get(app.url("/app")).send().await.unwrap().text().await.unwrap();
    assert!(!again.contains(&secret) && again.contains(&secret[..11]));

    let me: Value = reqwest::Client::new()
        .get(app.url("/api/v1/me"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["auth"], "api_key");
    assert_eq!(me["customer"]["id"], customer_id.as_str());
    assert_eq!(me["customer"]["plan"], "starter");
    assert_eq!(me["customer"]["chosen_teams"], serde_json::json!(["code", "research"]));

    // The session works on the JSON API too.
    let me: Value = owner.get(app.url("/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["user"]["email"], "Ann@Acme.test");

    // Last login recorded, and the changes audited.
    let ann = users::find_by_email(&app.db, "ann@acme.test").await.unwrap();
    assert_eq!(ann.last_login_at, Some(app.now()));
    let actions: Vec<String> =
        audit::list(&app.db, Some(&customer_id), 50).await.unwrap().into_iter().map(|a| a.action).collect();
    for expected in ["customer.created", "user.created", "api_key.created"] {
        assert!(actions.iter().any(|a| a == expected), "{expected} missing from {actions:?}");
    }
}

#[tokio::test]
async fn another_customers_objects_answer_404_like_missing_ones() {
    let app = spawn_app().await;
    let _a = app.customer_with_owner("A", "a@a.test").await;
    let b = app.customer_with_owner("B", "b@b.test").await;
    let (b_key, b_secret) =
        j1msky_accounts::api_keys::create(&app.db, &j1msky_audit::Actor::cli(), &b, "b", app.now()).await.unwrap();

    let a_owner = app.browser();
    app.login(&a_owner, "a@a.test", PASSWORD).await;
    let token = app.page_token(&a_owner, "/app").await;
    let resp = a_owner
        .delete(app.url(&format!("/api/v1/keys/{}", b_key.id)))
        .header("x-csrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let foreign: Value = resp.json().await.unwrap();
    let resp = a_owner
        .delete(app.url("/api/v1/keys/key_01jzzzzzzzzzzzzzzzzzzzzzzz"))
        .header("x-csrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let missing: Value = resp.json().await.unwrap();
    assert_eq!(foreign, missing, "a foreign key must look exactly like a missing one");

    // The page route too.
    let resp = a_owner
        .post(app.url(&format!("/app/keys/{}/revoke", b_key.id)))
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // A's listing does not show B's key; B's key still works.
    let listed: Value = a_owner.get(app.url("/api/v1/keys")).send().await.unwrap().json().await.unwrap();
    assert!(!listed.to_string().contains(&b_key.id));
    let resp = reqwest::Client::new().get(app.url("/api/v1/me")).bearer_auth(&b_secret).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // The operator area is closed to customers.
    let resp = a_owner.get(app.url(&format!("/admin/customers/{b}"))).send().await.unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn revoked_and_unknown_keys_answer_401() {
    let app = spawn_app().await;
    let c = app.customer_with_owner("C", "c@c.test").await;
    let (key, secret) =
        j1msky_accounts::api_keys::create(&app.db, &j1msky_audit::Actor::cli(), &c, "k", app.now()).await.unwrap();
    let client = reqwest::Client::new();
    assert_eq!(client.get(app.url("/api/v1/me")).bearer_auth(&secret).send().await.unwrap().status(), 200);

    let owner = app.browser();
    app.login(&owner, "c@c.test", PASSWORD).await;
    let token = app.page_token(&owner, "/app").await;
    let resp =
        owner.delete(app.url(&format!("/api/v1/keys/{}", key.id))).header("x-csrf-token", &token).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let resp = client.get(app.url("/api/v1/me")).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let resp = client.get(app.url("/api/v1/me")).bearer_auth("jk_not-a-key").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn admin_form_with_bad_input_says_what_is_wrong_and_stores_nothing() {
    let app = spawn_app().await;
    let operator = app.browser();
    app.login(&operator, OPERATOR_EMAIL, PASSWORD).await;
    let token = app.page_token(&operator, "/admin").await;
    for (field, value, says) in [
        ("plan", "platinum", "unknown plan `platinum`"),
        ("time_zone", "Mars/Olympus", "not an IANA time zone"),
        ("teams", "code, content, research", "allows 2 chosen team(s)"),
        ("stage", "vip", "not a valid stage"),
        ("expected_monthly_tasks", "lots", "not a whole number"),
    ] {
        let mut form = vec![("csrf_token", token.as_str()), ("name", "Bad Co"), ("plan", "starter")];
        form.retain(|(k, _)| *k != field);
        form.push((field, value));
        let resp = operator.post(app.url("/admin/customers")).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), 422, "{field}");
        let html = resp.text().await.unwrap();
        assert!(html.contains(&says.replace('`', "&#x60;")) || html.contains(says), "{field}: {says} not in page");
    }
    assert!(j1msky_accounts::customers::list(&app.db, None, 10).await.unwrap().is_empty());
}
