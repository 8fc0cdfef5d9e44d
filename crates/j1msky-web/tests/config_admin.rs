//! `/admin/config`: the history of the catalogue and the operator settings, a diff view
//! and rollback, over HTTP with a signed-in operator (CSRF, confirmation, reason).
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{spawn_app, OPERATOR_EMAIL, PASSWORD};
use j1msky_audit::Actor;
use j1msky_core::catalogue::SHIPPED;
use j1msky_ops::config_history as ch;

/// The shipped catalogue with the Pro plan at another price.
fn pro_at(price: &str) -> String {
    let mut c: serde_json::Value = serde_json::from_str(SHIPPED).unwrap();
    c["plans"]["pro"]["monthly_price"] = price.into();
    serde_json::to_string_pretty(&c).unwrap()
}

#[tokio::test]
async fn the_page_shows_every_change_with_its_reason_and_rolls_back_with_confirmation() {
    let app = spawn_app().await;
    let cli = Actor::cli();
    ch::apply(&app.db, &cli, SHIPPED, "config/business.json", "first", None, app.now()).await.unwrap();
    let v2 = ch::apply(&app.db, &cli, &pro_at("129.00"), "pro.json", "Pro goes up", None, app.now() + 1).await.unwrap();
    assert_eq!(v2.version, 2);

    // One cap change from the dashboard's form, one from the CLI's function.
    let operator = app.browser();
    app.login(&operator, OPERATOR_EMAIL, PASSWORD).await;
    let token = app.page_token(&operator, "/admin/gateway").await;
    let form = [("csrf_token", token.as_str()), ("scope", "global"), ("cap", "300"), ("reason", "")];
    let resp = operator.post(app.url("/admin/gateway/caps")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 422, "the form asks for a reason");
    assert!(resp.text().await.unwrap().contains("reason: say why"));
    let form = [("csrf_token", token.as_str()), ("scope", "global"), ("cap", "300"), ("reason", "webinar traffic")];
    let resp = operator.post(app.url("/admin/gateway/caps")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    j1msky_gateway::controls::set_cap_text(
        &app.db,
        &app.catalogue,
        &cli,
        "global",
        "450",
        "cli: more room",
        app.now() + 2,
    )
    .await
    .unwrap();

    let page = operator.get(app.url("/admin/config")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for expected in ["webinar traffic", "cli: more room", "catalogue v2", "Pro goes up", "300 → 450", "(unset) → 300"]
    {
        assert!(html.contains(expected), "`{expected}` not on the page");
    }
    let changes = j1msky_audit::settings::changes(&app.db, "gateway.cap.global", None, 10).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(changes[1].changed_by.starts_with("user:"), "{:?}", changes[1]);
    assert_eq!(changes[1].reason.as_deref(), Some("webinar traffic"));
    assert_eq!((changes[0].changed_by.as_str(), changes[0].reason.as_deref()), ("cli", Some("cli: more room")));

    // The diff view names the path with both values.
    let diff = operator.get(app.url("/admin/config/diff?a=1&b=2")).send().await.unwrap();
    assert_eq!(diff.status(), 200);
    let html = diff.text().await.unwrap();
    assert!(html.contains("plans.pro.monthly_price") && html.contains("129.00") && html.contains("99.00"), "{html}");

    // Rollback: refused without the CSRF token, the tick or a reason; nothing stored.
    let token = app.page_token(&operator, "/admin/config").await;
    let no_csrf = operator
        .post(app.url("/admin/config/rollback"))
        .form(&[("target", "1"), ("reason", "too dear"), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    let unticked = [("csrf_token", token.as_str()), ("target", "1"), ("reason", "too dear")];
    let resp = operator.post(app.url("/admin/config/rollback")).form(&unticked).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let no_reason = [("csrf_token", token.as_str()), ("target", "1"), ("reason", ""), ("confirm", "yes")];
    let resp = operator.post(app.url("/admin/config/rollback")).form(&no_reason).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let unknown = [("csrf_token", token.as_str()), ("target", "9"), ("reason", "x"), ("confirm", "yes")];
    let resp = operator.post(app.url("/admin/config/rollback")).form(&unknown).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(ch::versions(&app.db, None, 10).await.unwrap().len(), 2, "refused rollbacks store nothing");

    let ok = [("csrf_token", token.as_str()), ("target", "1"), ("reason", "too dear"), ("confirm", "yes")];
    let resp = operator.post(app.url("/admin/config/rollback")).form(&ok).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let versions = ch::versions(&app.db, None, 10).await.unwrap();
    assert_eq!(versions.len(), 3);
    let (v3, v1) = (&versions[0], &versions[2]);
    assert_eq!((v3.version, v3.source.as_str(), v3.reason.as_str()), (3, "rollback to v1", "too dear"));
    assert!(v3.created_by.starts_with("user:"));
    assert_eq!(v3.sha256, v1.sha256, "the rollback stores version 1's text again");
    let html = operator.get(app.url("/admin/config")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("v3 in force"), "this server serves the rolled-back version at once");
    let (audited,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'config.catalogue_applied' AND actor LIKE 'user:%'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(audited, 1, "the rollback is audited under the operator");

    // Undo a setting change from the page: the cap is back to 300.
    let target = changes[0].id.clone();
    let undo =
        [("csrf_token", token.as_str()), ("target", target.as_str()), ("reason", "webinar over"), ("confirm", "yes")];
    let resp = operator.post(app.url("/admin/config/rollback")).form(&undo).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let controls = j1msky_gateway::controls::load(&app.db).await.unwrap();
    assert_eq!(controls.caps.get("global"), Some(&300));

    // Customers and strangers never see it.
    let stranger = app.browser();
    let resp = stranger.get(app.url("/admin/config")).send().await.unwrap();
    assert_ne!(resp.status(), 200);
}

/// The customer's monthly budget from the dashboard: a reason is required (422 naming
/// the field, nothing stored), each change keeps who, when, the old and new amounts and
/// why, `/admin/config` lists it with the rest, and a rollback puts the old amount back.
#[tokio::test]
async fn a_customer_budget_from_the_dashboard_keeps_its_reason_and_rolls_back() {
    let app = spawn_app().await;
    let customer = app.customer_with_owner("Budget Co", "owner@budget.test").await;
    let operator = app.browser();
    app.login(&operator, OPERATOR_EMAIL, PASSWORD).await;
    let token = app.page_token(&operator, "/admin/gateway").await;
    let budget = |amount: &'static str, reason: Option<&'static str>| {
        let mut form = vec![("csrf_token", token.clone()), ("customer", customer.clone()), ("amount", amount.into())];
        if let Some(r) = reason {
            form.push(("reason", r.into()));
        }
        operator.post(app.url("/admin/gateway/customer-budget")).form(&form).send()
    };
    let stored = || async {
        let (micros,): (Option<i64>,) = sqlx::query_as("SELECT monthly_budget_micros FROM customers WHERE id = $1")
            .bind(&customer)
            .fetch_one(app.db.pool())
            .await
            .unwrap();
        micros
    };

    for reason in [None, Some(""), Some("   ")] {
        let resp = budget("50", reason).await.unwrap();
        assert_eq!(resp.status(), 422, "reason {reason:?}");
        assert!(resp.text().await.unwrap().contains("reason: say why"), "the field is named");
    }
    let unknown = operator
        .post(app.url("/admin/gateway/customer-budget"))
        .form(&[("csrf_token", token.as_str()), ("customer", "cus_nobody"), ("amount", "5"), ("reason", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 422);
    let no_csrf = operator
        .post(app.url("/admin/gateway/customer-budget"))
        .form(&[("customer", customer.as_str()), ("amount", "5"), ("reason", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    assert_eq!(stored().await, None, "refused changes store nothing");
    let key = j1msky_accounts::customer_links::budget_history_key(&customer);
    assert!(j1msky_audit::settings::history(&app.db, &key, 10).await.unwrap().is_empty());

    assert_eq!(budget("50", Some("pilot agreed at 50")).await.unwrap().status(), 303);
    assert_eq!(budget("80", Some("raised after the call")).await.unwrap().status(), 303);
    assert_eq!(stored().await, Some(80_000_000));
    let changes = j1msky_audit::settings::history(&app.db, &key, 10).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|c| c.changed_by.starts_with("user:")), "{changes:?}");
    assert_eq!(
        (changes[0].previous.as_deref(), changes[0].value.as_deref(), changes[0].reason.as_deref()),
        (Some("$50.00"), Some("$80.00"), Some("raised after the call"))
    );

    let html = operator.get(app.url("/admin/config")).send().await.unwrap().text().await.unwrap();
    for expected in [key.as_str(), "(unset) → $50.00", "$50.00 → $80.00", "pilot agreed at 50", "raised after the call"]
    {
        assert!(html.contains(expected), "`{expected}` not on the page");
    }

    // Undo the raise from the history page.
    let token = app.page_token(&operator, "/admin/config").await;
    let undo = [
        ("csrf_token", token.as_str()),
        ("target", changes[0].id.as_str()),
        ("reason", "the call was misheard"),
        ("confirm", "yes"),
    ];
    let resp = operator.post(app.url("/admin/config/rollback")).form(&undo).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(stored().await, Some(50_000_000));
    let latest = &j1msky_audit::settings::history(&app.db, &key, 1).await.unwrap()[0];
    assert_eq!(
        latest.reason.as_deref(),
        Some(format!("rollback of {}: the call was misheard", changes[0].id).as_str())
    );

    // The cost mode from the dashboard needs a reason too.
    let token = app.page_token(&operator, "/admin/gateway").await;
    let resp = operator
        .post(app.url("/admin/gateway/mode"))
        .form(&[("csrf_token", token.as_str()), ("mode", "cheap_only"), ("reason", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("reason: say why"));
    assert_eq!(j1msky_gateway::controls::load(&app.db).await.unwrap().mode, j1msky_gateway::policy::Mode::Normal);
}
