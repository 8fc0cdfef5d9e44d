// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The upgrade prompt's coupon, end to end over HTTP with the fake Stripe: a plan limit
//! hit makes the lifecycle trigger hold the `upgrade` offer; the prompt's link lands on
//! `/app/upgrade-offer`, whose POST upgrades with that coupon. The coupon reaches Stripe
//! once; the form cannot name another one; it cannot be used twice, after it expired,
//! or by another customer.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{spawn_app_with_stripe, TestApp};
use j1msky_billing::{apply, webhook};
use serde_json::{json, Value};

const DAY_SECS: i64 = 86_400;

async fn control(fake: &j1msky_sim::stripe::RunningStripe, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{}/_sim/{path}", fake.base())).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap_or_default());
    r.json().await.unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(app.db.pool()).await.expect(sql);
    n
}

async fn settle(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe) {
    for _ in 0..500 {
        let s: Value = reqwest::get(format!("{}/_sim/state", fake.base())).await.unwrap().json().await.unwrap();
        let made = s["events"].as_i64().unwrap_or(0) - s["held"].as_i64().unwrap_or(0);
        if made > 0 && count(app, "SELECT COUNT(*) FROM stripe_events").await >= made {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.clock.advance_secs(1);
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    while webhook::apply_pending(&app.db, &ctx, 100, app.now()).await.unwrap() > 0 {}
    j1msky_accounts::reactions::catch_up(&app.db, &app.clock).await.unwrap();
}

/// A signed-in owner on the Starter plan.
async fn starter_owner(
    app: &TestApp,
    fake: &j1msky_sim::stripe::RunningStripe,
    name: &str,
) -> (String, reqwest::Client, String) {
    let email = format!("{}@upgrade.test", name.to_lowercase());
    let id = app.customer_with_owner(name, &email).await;
    let browser = app.browser();
    assert!(app.login(&browser, &email, common::PASSWORD).await.status().is_redirection());
    let token = app.page_token(&browser, "/app/billing").await;
    let r = browser
        .post(app.url("/app/billing/checkout"))
        .form(&[("csrf_token", token.as_str()), ("plan", "starter")])
        .send()
        .await
        .unwrap();
    let session = common::location(&r).rsplit('/').next().unwrap().to_string();
    control(fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(app, fake).await;
    (id, browser, token)
}

/// A plan limit hit, handled by the lifecycle triggers' consumer.
async fn limit_hit(app: &TestApp, customer: &str) {
    j1msky_accounts::activity::limit_hit(&app.db, customer, "hourly_cap", "60 calls an hour", app.now()).await;
    let ctx = j1msky_lifecycle::Ctx {
        db: app.db.clone(),
        catalogue: app.catalogue.clone().into(),
        clock: Arc::new(j1msky_core::clock::ManualClock::new(app.now())),
        transport: Arc::new(j1msky_lifecycle::transport::Recording::default()),
        stripe: None,
        base_url: app.base.clone(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    };
    let all = j1msky_lifecycle::triggers::consumers(&ctx);
    let runner = j1msky_db::consumers::Runner::new("test");
    while j1msky_db::consumers::run_once(&app.db, &runner, &all, &app.clock).await.unwrap().handled > 0 {}
}

async fn accept(app: &TestApp, browser: &reqwest::Client, token: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("csrf_token", token), ("plan", "pro")];
    form.extend_from_slice(extra);
    browser.post(app.url("/app/upgrade-offer")).form(&form).send().await.unwrap()
}

fn coupon(app: &TestApp) -> String {
    let o = &app.catalogue.stripe.offers["upgrade"];
    j1msky_billing::sync::coupon_id("upgrade", o.percent_off, o.months)
}

async fn current(app: &TestApp, id: &str) -> (Option<String>, Option<String>) {
    let m = j1msky_billing::changes::current(&app.db, id).await.unwrap().unwrap();
    (m.plan, m.discount_coupon)
}

#[tokio::test]
async fn the_upgrade_prompt_applies_the_servers_coupon_once() {
    let (app, fake, _stripe) = spawn_app_with_stripe().await;
    let (id, browser, token) = starter_owner(&app, &fake, "Growing").await;

    // Before any limit hit: nothing is held, and accepting is refused.
    let page = browser.get(app.url("/app/upgrade-offer")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("No upgrade offer is open"), "{page}");
    assert_eq!(accept(&app, &browser, &token, &[]).await.status(), 422);

    limit_hit(&app, &id).await;
    let page = browser.get(app.url("/app/upgrade-offer")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&app.catalogue.stripe.offers["upgrade"].name), "{page}");
    assert!(page.contains("value=\"pro\""), "{page}");

    // The form cannot pick the coupon, nor another offer.
    for (field, value) in [("coupon", "j1msky_win_back_40pct_3m"), ("offer", "win_back")] {
        let r = accept(&app, &browser, &token, &[(field, value)]).await;
        assert_eq!(r.status(), 400, "{field}");
    }
    // Without the CSRF token: refused.
    let r = browser.post(app.url("/app/upgrade-offer")).form(&[("plan", "pro")]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(current(&app, &id).await, (Some("starter".into()), None), "nothing reached Stripe yet");

    let r = accept(&app, &browser, &token, &[]).await;
    assert!(r.status().is_redirection(), "{}", r.status());
    settle(&app, &fake).await;
    assert_eq!(current(&app, &id).await, (Some("pro".into()), Some(coupon(&app))));

    // Twice: refused, and Stripe saw one discount.
    let r = accept(&app, &browser, &token, &[]).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("no upgrade offer is open"));
    settle(&app, &fake).await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM stripe_events WHERE type = 'customer.discount.created'").await, 1);
    let grants = j1msky_billing::offers::for_customer(&app.db, &id).await.unwrap();
    let upgrades: Vec<_> = grants.iter().filter(|g| g.offer == "upgrade").collect();
    assert_eq!(upgrades.len(), 1);
    assert!(upgrades[0].granted_by.starts_with("trigger:limit_hit:"), "{}", upgrades[0].granted_by);

    // Another limit hit later: the offer is once per customer, so no second coupon.
    limit_hit(&app, &id).await;
    assert!(j1msky_billing::offers::held_for_upgrade(&app.db, &id, app.now()).await.unwrap().is_none());
}

#[tokio::test]
async fn an_expired_or_someone_elses_upgrade_coupon_cannot_be_used() {
    let (app, fake, _stripe) = spawn_app_with_stripe().await;
    let (late, _, _) = starter_owner(&app, &fake, "Late").await;
    let (other, other_browser, other_token) = starter_owner(&app, &fake, "Other").await;
    limit_hit(&app, &late).await;

    // Another customer's held coupon is not theirs to use.
    assert_eq!(accept(&app, &other_browser, &other_token, &[]).await.status(), 422);
    assert_eq!(current(&app, &other).await, (Some("starter".into()), None));

    // Past its 14 days: gone.
    app.clock.advance_secs(15 * DAY_SECS);
    // (Signed in afresh: the earlier session has expired meanwhile.)
    let late_browser = app.browser();
    assert!(app.login(&late_browser, "late@upgrade.test", common::PASSWORD).await.status().is_redirection());
    let late_token = app.page_token(&late_browser, "/app/billing").await;
    let page = late_browser.get(app.url("/app/upgrade-offer")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("No upgrade offer is open"), "{page}");
    assert_eq!(accept(&app, &late_browser, &late_token, &[]).await.status(), 422);
    settle(&app, &fake).await;
    assert_eq!(current(&app, &late).await, (Some("starter".into()), None));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM stripe_events WHERE type = 'customer.discount.created'").await, 0);

    // An expired, unused hold does not use the offer up: the next limit hit holds it again.
    limit_hit(&app, &late).await;
    assert!(j1msky_billing::offers::held_for_upgrade(&app.db, &late, app.now()).await.unwrap().is_some());
}
