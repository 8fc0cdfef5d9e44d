//! Prices, offers and trials are the server's to decide: a form naming an offer or a
//! trial is refused, the free trial comes once per customer, the win-back discount is
//! granted once (or after its cool-down), and every grant records who granted it.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use std::time::Duration;

use common::{spawn_app_with_stripe, TestApp};
use j1msky_billing::{apply, offers, retention, webhook};
use j1msky_core::vocab::Stage;
use serde_json::{json, Value};

async fn control(fake: &j1msky_sim::stripe::RunningStripe, path: &str, body: Value) -> Value {
    let r =
        reqwest::Client::new().post(format!("{}/_sim/{path}", fake.base())).json(&body).send().await.expect("control");
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap_or_default());
    r.json().await.expect("json")
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(app.db.pool()).await.expect(sql);
    n
}

/// Every event the fake made is stored here and applied.
async fn settle(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe) {
    for _ in 0..500 {
        let s: Value =
            reqwest::get(format!("{}/_sim/state", fake.base())).await.expect("state").json().await.expect("json");
        let made = s["events"].as_i64().unwrap_or(0) - s["held"].as_i64().unwrap_or(0);
        if made > 0 && count(app, "SELECT COUNT(*) FROM stripe_events").await >= made {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.clock.advance_secs(1);
    let ctx = apply::Ctx { catalogue: &app.catalogue };
    while webhook::apply_pending(&app.db, &ctx, 100, app.now()).await.expect("apply") > 0 {}
    j1msky_accounts::reactions::catch_up(&app.db, &app.clock).await.expect("accounts reactions");
}

async fn signed_in_owner(app: &TestApp, name: &str) -> (String, reqwest::Client, String) {
    let email = format!("{}@offers.test", name.to_lowercase());
    let id = app.customer_with_owner(name, &email).await;
    let browser = app.browser();
    assert!(app.login(&browser, &email, common::PASSWORD).await.status().is_redirection());
    let token = app.page_token(&browser, "/app/billing").await;
    (id, browser, token)
}

/// Checkout through the billing page; the session id Stripe made.
async fn checkout(app: &TestApp, browser: &reqwest::Client, token: &str, plan: &str) -> String {
    let r = browser
        .post(app.url("/app/billing/checkout"))
        .form(&[("csrf_token", token), ("plan", plan)])
        .send()
        .await
        .expect("checkout");
    let to = common::location(&r);
    assert!(to.starts_with("https://checkout.stripe.test/c/pay/cs_test_"), "{} {to}", r.status());
    to.rsplit('/').next().expect("session id").to_string()
}

async fn sessions_made(fake: &j1msky_sim::stripe::RunningStripe) -> i64 {
    let s: Value =
        reqwest::get(format!("{}/_sim/state", fake.base())).await.expect("state").json().await.expect("json");
    s["objects"]["checkout.session"].as_i64().unwrap_or(0)
}

async fn status(app: &TestApp, id: &str) -> (String, Option<String>) {
    let m = j1msky_billing::changes::current(&app.db, id).await.expect("current").expect("a live subscription");
    (m.status, m.discount_coupon)
}

#[tokio::test]
async fn a_form_naming_an_offer_a_trial_or_a_coupon_is_refused_and_reaches_no_stripe() {
    let (app, fake, _stripe) = spawn_app_with_stripe().await;
    let (id, browser, token) = signed_in_owner(&app, "Cheater").await;
    for (field, value) in
        [("offer", "win_back"), ("trial", "1"), ("coupon", "j1msky_win_back_40pct_3m"), ("price", "1")]
    {
        let r = browser
            .post(app.url("/app/billing/checkout"))
            .form(&[("csrf_token", token.as_str()), ("plan", "pro"), (field, value)])
            .send()
            .await
            .expect("checkout");
        assert_eq!(r.status(), 400, "{field}");
        let body = r.text().await.expect("body");
        assert!(body.contains(field), "the error names `{field}`: {body}");
    }
    assert_eq!(sessions_made(&fake).await, 0, "no checkout was opened");

    // A live subscription: an upgrade or a resume naming an offer is refused the same way.
    let session = checkout(&app, &browser, &token, "starter").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    for action in ["upgrade", "resume"] {
        let r = browser
            .post(app.url("/app/billing/change"))
            .form(&[("csrf_token", token.as_str()), ("action", action), ("plan", "pro"), ("offer", "upgrade")])
            .send()
            .await
            .expect("change");
        assert_eq!(r.status(), 400, "{action}");
        assert!(r.text().await.expect("body").contains("offer"));
    }
    let m = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub");
    assert_eq!((m.plan.as_deref(), m.discount_coupon), (Some("starter"), None), "nothing changed");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM offer_grants WHERE offer <> 'trial'").await, 0);
}

#[tokio::test]
async fn the_free_trial_is_granted_once_per_customer_ever() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, browser, token) = signed_in_owner(&app, "Trier").await;

    // The first checkout carries the trial; an abandoned one does not use it up.
    let abandoned = checkout(&app, &browser, &token, "starter").await;
    app.clock.advance_secs(120);
    let session = checkout(&app, &browser, &token, "starter").await;
    // The trial lives in one open checkout at a time: the older one was expired at
    // Stripe, so completing both (two trials) is impossible.
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/checkout/{abandoned}/complete", fake.base()))
        .json(&json!({}))
        .send()
        .await
        .expect("complete the older checkout");
    assert!(!r.status().is_success(), "the older trial checkout can no longer be paid: {}", r.status());
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.0, "trialing");
    let by: Vec<(String, String)> = sqlx::query_as("SELECT offer, granted_by FROM offer_grants WHERE customer_id = $1")
        .bind(&id)
        .fetch_all(app.db.pool())
        .await
        .expect("grants");
    assert!(by.iter().all(|(o, b)| o == "trial" && b == "checkout") && !by.is_empty(), "{by:?}");

    // They cancel at once and churn; coming back, they pay from day one.
    let sub = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    j1msky_billing::changes::cancel(&app.db, &stripe, &id).await.expect("cancel");
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(j1msky_accounts::customers::get(&app.db, &id).await.expect("get").stage, Stage::Churned);
    app.clock.advance_secs(120);
    let session = checkout(&app, &browser, &token, "starter").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.0, "active", "no second trial");
}

/// The free trial ends and the first month is paid: a paying customer.
async fn first_month_paid(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe, id: &str) {
    let sub = j1msky_billing::changes::current(&app.db, id).await.expect("current").expect("sub").id;
    control(fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    settle(app, fake).await;
    assert_eq!(status(app, id).await.0, "active");
}

/// Renews until the subscription's coupon has run out.
async fn run_down_discount(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe, id: &str) {
    let sub = j1msky_billing::changes::current(&app.db, id).await.expect("current").expect("sub").id;
    for _ in 0..4 {
        control(fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
        settle(app, fake).await;
    }
    assert_eq!(status(app, id).await.1, None, "the coupon ran out");
}

#[tokio::test]
async fn the_win_back_discount_is_accepted_once_and_every_grant_records_who_granted_it() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let cat = &app.catalogue;
    let (id, browser, token) = signed_in_owner(&app, "Keeper").await;
    let session = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    first_month_paid(&app, &fake, &id).await;

    let survey = retention::start_cancel(&app.db, cat, &id, "missing_feature", "", app.now()).await.expect("survey");
    assert_eq!(survey.offer, Some(retention::Offer::Discount { offer: "win_back".into() }));
    retention::accept_offer(&app.db, &stripe, cat, &id, &survey.id, app.now()).await.expect("accept");
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.1.as_deref(), Some("j1msky_win_back_40pct_3m"));
    run_down_discount(&app, &fake, &id).await;

    // Once the discount has run out, leaving again is not met with it a second time.
    let again = retention::start_cancel(&app.db, cat, &id, "missing_feature", "", app.now()).await.expect("survey");
    assert!(!matches!(again.offer, Some(retention::Offer::Discount { .. })), "{:?}", again.offer);
    let err = offers::grant(&app.db, &stripe, cat, &id, "win_back", "cli", app.now()).await.expect_err("twice");
    assert!(err.to_string().contains("once per customer"), "{err}");
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.1, None, "no second discount at Stripe");

    let grants = offers::for_customer(&app.db, &id).await.expect("grants");
    let win_backs: Vec<&offers::Grant> = grants.iter().filter(|g| g.offer == "win_back").collect();
    assert_eq!(win_backs.len(), 1);
    assert_eq!(win_backs[0].granted_by, format!("retention:{}", survey.id));
    assert!(win_backs[0].subscription_id.is_some());
    assert_eq!(count(&app, "SELECT COUNT(*) FROM events WHERE kind = 'billing.offer_granted'").await, 1);
}

#[tokio::test]
async fn an_offer_with_a_cool_down_is_granted_again_only_after_it_and_concurrent_grants_give_one() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let mut cat = (*app.catalogue).clone();
    cat.stripe.offers.get_mut("we_miss_you").expect("offer").cooldown_days = Some(30);
    let (id, browser, token) = signed_in_owner(&app, "Returner").await;
    let session = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;

    let (a, b) = tokio::join!(
        offers::grant(&app.db, &stripe, &cat, &id, "we_miss_you", "cli", app.now()),
        offers::grant(&app.db, &stripe, &cat, &id, "we_miss_you", "user:usr_op", app.now()),
    );
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
    settle(&app, &fake).await;
    app.clock.advance_secs(29 * 86_400);
    let err = offers::grant(&app.db, &stripe, &cat, &id, "we_miss_you", "cli", app.now()).await.expect_err("cool-down");
    assert!(err.to_string().contains("30 days"), "{err}");
    app.clock.advance_secs(2 * 86_400);
    // While the first month's coupon is on the subscription, a second would replace it.
    let err = offers::grant(&app.db, &stripe, &cat, &id, "we_miss_you", "cli", app.now()).await.expect_err("on");
    assert!(err.to_string().contains("already has discount"), "{err}");
    // The first coupon taken off at Stripe (the operator, in its dashboard; Stripe's clock
    // moved with ours, so its signed notices are fresh): now it may.
    control(&fake, "clock", json!({"advance_secs": 31 * 86_400})).await;
    let sub = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    stripe.post(&format!("subscriptions/{sub}"), &json!({"coupon": ""}), "t-clear").await.expect("cleared");
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.1, None);
    offers::grant(&app.db, &stripe, &cat, &id, "we_miss_you", "cli", app.now()).await.expect("after the cool-down");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM offer_grants WHERE offer = 'we_miss_you'").await, 2);
    let err = offers::grant(&app.db, &stripe, &cat, &id, "half_price", "cli", app.now()).await.expect_err("unknown");
    assert!(err.to_string().contains("unknown offer"), "{err}");
}

#[tokio::test]
async fn an_offer_granted_to_a_churned_customer_rides_on_their_next_checkout_only() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let cat = &app.catalogue;
    let (id, browser, token) = signed_in_owner(&app, "Winback").await;
    let g = offers::grant(&app.db, &stripe, cat, &id, "win_back", "user:usr_op", app.now()).await.expect("grant");
    assert_eq!(g.subscription_id, None);
    let page = browser.get(app.url("/app/billing")).send().await.expect("page").text().await.expect("body");
    assert!(page.contains("Come back: 40% off"), "{page}");
    let session = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.1.as_deref(), Some("j1msky_win_back_40pct_3m"));

    // Cancelled and back again: the used grant does not ride a second time.
    let sub = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    j1msky_billing::changes::cancel(&app.db, &stripe, &id).await.expect("cancel");
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    settle(&app, &fake).await;
    app.clock.advance_secs(120);
    let session = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.1, None);
}

/// Cancelled at once and ended at Stripe, so the customer can check out again.
async fn churn(app: &TestApp, fake: &j1msky_sim::stripe::RunningStripe, stripe: &j1msky_billing::Stripe, id: &str) {
    let sub = j1msky_billing::changes::current(&app.db, id).await.expect("current").expect("sub").id;
    j1msky_billing::changes::cancel(&app.db, stripe, id).await.expect("cancel");
    control(fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    settle(app, fake).await;
    app.clock.advance_secs(120);
}

async fn session_status(stripe: &j1msky_billing::Stripe, session: &str) -> String {
    let s = stripe.get(&format!("checkout/sessions/{session}"), &Value::Null).await.expect("session");
    s["status"].as_str().expect("status").to_string()
}

#[tokio::test]
async fn an_offer_lives_in_one_open_checkout_so_an_unpaid_one_cannot_keep_it_for_later() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, browser, token) = signed_in_owner(&app, "Twoforms").await;
    offers::grant(&app.db, &stripe, &app.catalogue, &id, "win_back", "user:usr_op", app.now()).await.expect("grant");
    let first = checkout(&app, &browser, &token, "starter").await;
    app.clock.advance_secs(120);
    let second = checkout(&app, &browser, &token, "pro").await;
    assert_ne!(first, second);
    // The offer moved to the newer checkout: the older one can no longer be paid with it.
    assert_eq!(session_status(&stripe, &first).await, "expired");
    assert_eq!(session_status(&stripe, &second).await, "open");
    control(&fake, &format!("checkout/{second}/complete"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.1.as_deref(), Some("j1msky_win_back_40pct_3m"));
    churn(&app, &fake, &stripe, &id).await;
    let again = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{again}/complete"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.1, None, "the win-back discount rode a second checkout");
}

#[tokio::test]
async fn the_paid_checkout_spends_its_offer_even_when_another_session_was_recorded_last() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, browser, token) = signed_in_owner(&app, "Racer").await;
    let g = offers::grant(&app.db, &stripe, &app.catalogue, &id, "win_back", "user:usr_op", app.now())
        .await
        .expect("grant");
    let recorded = checkout(&app, &browser, &token, "starter").await;
    // A second checkout racing that one read the grant before the first was recorded, so
    // it expired nothing and the grant records only the first; it is this one that is paid.
    let o = &app.catalogue.stripe.offers["win_back"];
    let price = j1msky_billing::sync::stored_id(&app.db, "price:pro").await.expect("price").expect("synced");
    let racing = stripe
        .post(
            "checkout/sessions",
            &json!({"mode": "subscription", "line_items": [{"price": price, "quantity": 1}],
                    "client_reference_id": id, "success_url": "https://app.test/ok", "cancel_url": "https://app.test/no",
                    "metadata": {"j1msky_customer": id, "j1msky_plan": "pro", "j1msky_offer": "win_back",
                                 "j1msky_offer_grant": g.id},
                    "subscription_data": {"metadata": {"j1msky_customer": id}},
                    "discounts": [{"coupon": j1msky_billing::sync::coupon_id("win_back", o.percent_off, o.months)}]}),
            "test-racing-checkout",
        )
        .await
        .expect("racing session");
    let paid = racing["id"].as_str().expect("id").to_string();
    control(&fake, &format!("checkout/{paid}/complete"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.1.as_deref(), Some("j1msky_win_back_40pct_3m"));
    let (redeemed, on): (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT redeemed_at, checkout_session FROM offer_grants WHERE id = $1")
            .bind(&g.id)
            .fetch_one(app.db.pool())
            .await
            .expect("grant row");
    assert_eq!(on.as_deref(), Some(recorded.as_str()));
    assert!(redeemed.is_some(), "the paid checkout did not spend the grant");
    // Churned and back: the session left unpaid does not keep the discount alive.
    churn(&app, &fake, &stripe, &id).await;
    let again = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{again}/complete"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.1, None, "the win-back discount rode a second checkout");
}

async fn enterprise_owner(app: &TestApp, price: Option<&str>) -> (String, reqwest::Client, String) {
    let c = app.active_customer("Big Co", "enterprise").await;
    if let Some(p) = price {
        let contract = j1msky_accounts::customers::Contract {
            monthly_price: Some(p.parse().expect("money")),
            ..Default::default()
        };
        j1msky_accounts::customers::set_contract(
            &app.db,
            &app.catalogue,
            &j1msky_audit::Actor::cli(),
            &c.id,
            contract,
            app.now(),
        )
        .await
        .expect("contract");
    }
    app.user_of(&c.id, "owner@big.test", j1msky_core::vocab::UserRole::Owner).await;
    let browser = app.browser();
    assert!(app.login(&browser, "owner@big.test", common::PASSWORD).await.status().is_redirection());
    let token = app.page_token(&browser, "/app/billing").await;
    (c.id, browser, token)
}

#[tokio::test]
async fn enterprise_is_refused_without_a_contract_for_checkout_and_upgrade() {
    let (app, fake, _stripe) = spawn_app_with_stripe().await;
    let (_id, browser, token) = signed_in_owner(&app, "Smallco").await;
    let r = browser
        .post(app.url("/app/billing/checkout"))
        .form(&[("csrf_token", token.as_str()), ("plan", "enterprise")])
        .send()
        .await
        .expect("checkout");
    assert_eq!(r.status(), 422);
    assert!(r.text().await.expect("body").contains("contract"));
    assert_eq!(sessions_made(&fake).await, 0);
    let session = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    let r = browser
        .post(app.url("/app/billing/change"))
        .form(&[("csrf_token", token.as_str()), ("action", "upgrade"), ("plan", "enterprise")])
        .send()
        .await
        .expect("upgrade");
    assert_eq!(r.status(), 422);
    assert!(r.text().await.expect("body").contains("contract"));
}

#[tokio::test]
async fn a_contract_customer_checks_out_at_the_contract_price_on_their_own_stripe_price() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, browser, token) = enterprise_owner(&app, Some("1500.00")).await;
    let session = checkout(&app, &browser, &token, "enterprise").await;
    app.clock.advance_secs(120);
    let again = checkout(&app, &browser, &token, "enterprise").await;
    assert_ne!(again, session);
    // The newer checkout holds the trial now (the older one was expired): it is paid.
    control(&fake, &format!("checkout/{again}/complete"), json!({})).await;
    settle(&app, &fake).await;
    let prices = stripe.get("prices", &json!({"product": "j1msky_enterprise", "limit": 100})).await.expect("prices");
    let theirs: Vec<&Value> = prices["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|p| p["metadata"]["j1msky_customer"].as_str() == Some(id.as_str()))
        .collect();
    assert_eq!(theirs.len(), 1, "one price per customer, made once: {prices}");
    assert_eq!(theirs[0]["unit_amount"].as_i64(), Some(150_000));
    let m = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub");
    let remote = stripe.get(&format!("subscriptions/{}", m.id), &Value::Null).await.expect("sub");
    assert_eq!(remote["items"]["data"][0]["price"]["id"], theirs[0]["id"], "Stripe bills the contract price");
    assert_eq!(m.plan.as_deref(), Some("enterprise"));
}

#[tokio::test]
async fn a_changed_contract_price_is_what_stripe_bills_from_then_on() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, browser, token) = enterprise_owner(&app, Some("1500.00")).await;
    let session = checkout(&app, &browser, &token, "enterprise").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    let contract = j1msky_accounts::customers::Contract {
        monthly_price: Some("2000.00".parse().expect("money")),
        ..Default::default()
    };
    j1msky_accounts::customers::set_contract(
        &app.db,
        &app.catalogue,
        &j1msky_audit::Actor::cli(),
        &id,
        contract,
        app.now(),
    )
    .await
    .expect("contract");
    for _ in 0..2 {
        j1msky_billing::contracts::sync_live(&app.db, &stripe, &app.catalogue).await.expect("sync");
        settle(&app, &fake).await;
    }
    let sub = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    let remote = stripe.get(&format!("subscriptions/{sub}"), &Value::Null).await.expect("sub");
    assert_eq!(remote["items"]["data"][0]["price"]["unit_amount"].as_i64(), Some(200_000));
    let prices = stripe.get("prices", &json!({"product": "j1msky_enterprise", "limit": 100})).await.expect("prices");
    let theirs: Vec<(Option<i64>, Option<bool>)> = prices["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|p| p["metadata"]["j1msky_customer"].as_str() == Some(id.as_str()))
        .map(|p| (p["unit_amount"].as_i64(), p["active"].as_bool()))
        .collect();
    assert_eq!(theirs.len(), 2, "one new price, once: {theirs:?}");
    assert!(
        theirs.contains(&(Some(150_000), Some(false))) && theirs.contains(&(Some(200_000), Some(true))),
        "{theirs:?}"
    );
    assert_eq!(
        j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").plan.as_deref(),
        Some("enterprise")
    );
}

/// The contract price of `id`'s Stripe price (made at checkout), by its metadata.
async fn contract_price_id(stripe: &j1msky_billing::Stripe, id: &str) -> String {
    let prices = stripe.get("prices", &json!({"product": "j1msky_enterprise", "limit": 100})).await.expect("prices");
    let theirs: Vec<&Value> = prices["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|p| p["metadata"]["j1msky_customer"].as_str() == Some(id) && p["active"].as_bool() == Some(true))
        .collect();
    assert_eq!(theirs.len(), 1, "{prices}");
    theirs[0]["id"].as_str().expect("price id").to_string()
}

/// An Enterprise owner at a $1,500 contract, subscribed through Checkout: (customer,
/// signed-in browser, form token, the Stripe price of their contract).
async fn contract_subscriber(
    app: &TestApp,
    fake: &j1msky_sim::stripe::RunningStripe,
    stripe: &j1msky_billing::Stripe,
) -> (String, reqwest::Client, String, String) {
    let (id, browser, token) = enterprise_owner(app, Some("1500.00")).await;
    let session = checkout(app, &browser, &token, "enterprise").await;
    control(fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(app, fake).await;
    let theirs = contract_price_id(stripe, &id).await;
    (id, browser, token, theirs)
}

async fn change(app: &TestApp, browser: &reqwest::Client, token: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let mut all = vec![("csrf_token", token)];
    all.extend_from_slice(form);
    browser.post(app.url("/app/billing/change")).form(&all).send().await.expect("change")
}

/// A pause and a resume (the owner's, or the timer's on its date) returned a contract
/// customer to the catalogue's list price of the plan, far below the contract's: the
/// rest of the period was invoiced at it, and the contract price came back only from the
/// next invoice (the contract sync moves prices without proration).
#[tokio::test]
async fn a_paused_contract_subscription_resumes_at_the_contract_price() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, browser, token, theirs) = contract_subscriber(&app, &fake, &stripe).await;
    for round in 0..2 {
        // Stripe's clock moves on too: each change is an event later than the last.
        control(&fake, "clock", json!({"advance_secs": 60})).await;
        let r = change(&app, &browser, &token, &[("action", "pause"), ("resume_days", "30")]).await;
        assert!(r.status().is_redirection(), "pause {round}: {}", r.status());
        settle(&app, &fake).await;
        assert_eq!(status_plan(&app, &id).await, Some("paused".into()));
        control(&fake, "clock", json!({"advance_secs": 60})).await;
        if round == 0 {
            let r = change(&app, &browser, &token, &[("action", "resume")]).await;
            assert!(r.status().is_redirection(), "resume: {} {}", r.status(), r.text().await.unwrap_or_default());
        } else {
            // The timer's resume, on the date.
            app.clock.advance_secs(31 * 86_400);
            control(&fake, "clock", json!({"advance_secs": 31 * 86_400})).await;
            let now = app.now() / 1_000_000;
            let n = j1msky_billing::changes::resume_due(&app.db, &stripe, &app.catalogue, now).await.expect("due");
            assert_eq!(n, 1);
        }
        settle(&app, &fake).await;
        let m = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub");
        let remote = stripe.get(&format!("subscriptions/{}", m.id), &Value::Null).await.expect("sub");
        assert_eq!(m.plan.as_deref(), Some("enterprise"), "round {round}: {remote}");
        let remote = stripe.get(&format!("subscriptions/{}", m.id), &Value::Null).await.expect("sub");
        assert_eq!(remote["items"]["data"][0]["price"]["id"].as_str(), Some(theirs.as_str()), "round {round}");
        assert_eq!(remote["items"]["data"][0]["price"]["unit_amount"].as_i64(), Some(150_000), "round {round}");
    }
}

/// A contract customer moving down to a catalogue plan keeps paying the contract price
/// until the period ends: the schedule's first phase is the contract price, not the
/// plan's list price.
#[tokio::test]
async fn a_contract_customers_downgrade_keeps_the_contract_price_until_the_period_ends() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (id, browser, token, theirs) = contract_subscriber(&app, &fake, &stripe).await;
    let r = change(&app, &browser, &token, &[("action", "downgrade"), ("plan", "pro")]).await;
    assert!(r.status().is_redirection(), "downgrade: {} {}", r.status(), r.text().await.unwrap_or_default());
    settle(&app, &fake).await;
    let m = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub");
    let schedule = m.schedule_id.clone().expect("a schedule");
    let remote = stripe.get(&format!("subscription_schedules/{schedule}"), &Value::Null).await.expect("schedule");
    let first = &remote["phases"][0]["items"][0]["price"];
    let first = first["id"].as_str().or(first.as_str());
    assert_eq!(first, Some(theirs.as_str()), "{remote}");
    let sub = stripe.get(&format!("subscriptions/{}", m.id), &Value::Null).await.expect("sub");
    assert_eq!(sub["items"]["data"][0]["price"]["unit_amount"].as_i64(), Some(150_000), "{sub}");
}

/// The days of a pause are a whole number from 1 to 366; anything else is refused naming
/// the field, and no Stripe call is made (it was read as 30 days, or overflowed).
#[tokio::test]
async fn a_pause_of_an_impossible_number_of_days_is_refused_naming_the_field() {
    let (app, fake, _stripe) = spawn_app_with_stripe().await;
    let (id, browser, token) = signed_in_owner(&app, "Pauser").await;
    let session = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    for days in ["9223372036854775807", "-5", "0", "367", "thirty", "1.5"] {
        let r = change(&app, &browser, &token, &[("action", "pause"), ("resume_days", days)]).await;
        assert_eq!(r.status(), 422, "{days:?}");
        let body = r.text().await.expect("body");
        assert!(body.contains("resume_days"), "{days:?}: {body}");
    }
    settle(&app, &fake).await;
    assert_eq!(status_plan(&app, &id).await, Some("pro".into()), "never paused");
    // Left blank: the default, 30 days.
    let r = change(&app, &browser, &token, &[("action", "pause"), ("resume_days", " ")]).await;
    assert!(r.status().is_redirection(), "{}", r.status());
    settle(&app, &fake).await;
    let m = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub");
    assert_eq!((m.plan.as_deref(), m.resume_at), (Some("paused"), Some(app.now() / 1_000_000 - 1 + 30 * 86_400)));
}

async fn status_plan(app: &TestApp, id: &str) -> Option<String> {
    j1msky_billing::changes::current(&app.db, id).await.expect("current").expect("sub").plan
}

/// A trial the operator granted is the customer's one free trial whether or not its grant
/// reached billing's records: that grant is written after the trial's own transaction
/// (and only logged when it fails), so checkout then offered Stripe's trial on top.
#[tokio::test]
async fn a_granted_trial_without_its_grant_row_gets_no_stripe_trial() {
    let (app, _fake, stripe) = spawn_app_with_stripe().await;
    let lead = j1msky_accounts::customers::create(
        &app.db,
        &app.catalogue,
        &j1msky_audit::Actor::cli(),
        j1msky_accounts::customers::NewCustomer {
            name: "Granted Co".into(),
            stage: Some(Stage::Qualified),
            ..Default::default()
        },
        app.now(),
    )
    .await
    .expect("lead")
    .id;
    assert!(j1msky_billing::offers::trial_available(&app.db, &stripe, &lead).await.expect("available"));
    let trial = j1msky_accounts::trials::NewTrial {
        plan: "pro".into(),
        days: 14,
        tasks: 20,
        owner_email: "owner@granted.test".into(),
        owner_name: "Owner".into(),
    };
    let mut tx = app.db.begin().await.expect("tx");
    j1msky_accounts::trials::start_in(
        &mut tx,
        app.db.backend(),
        &app.catalogue,
        &j1msky_audit::Actor::cli(),
        &lead,
        &trial,
        app.now(),
    )
    .await
    .expect("trial");
    tx.commit().await.expect("commit");
    // No offer_grants row (its write failed): the trial itself says it was had.
    assert!(!j1msky_billing::offers::trial_available(&app.db, &stripe, &lead).await.expect("available"));
}

#[tokio::test]
async fn the_billing_page_tells_an_owner_whose_card_declines_an_upgrade_and_changes_nothing() {
    let (app, fake, _stripe) = spawn_app_with_stripe().await;
    let (id, browser, token) = signed_in_owner(&app, "Decliner").await;
    let session = checkout(&app, &browser, &token, "starter").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    // The trial ends and the first month is paid; then the card starts declining.
    let sub = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    control(&fake, &format!("subscriptions/{sub}/renew"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.0, "active");
    let sc = j1msky_accounts::customers::get(&app.db, &id).await.expect("customer").stripe_customer_id.expect("sc");
    control(&fake, &format!("customers/{sc}/card"), json!({"declines": true})).await;

    let r = change(&app, &browser, &token, &[("action", "upgrade"), ("plan", "pro")]).await;
    assert_eq!(r.status(), 402);
    assert_eq!(r.headers()["x-error-code"], "card_declined");
    let page = r.text().await.expect("body");
    assert!(page.contains("declined") && page.contains("Manage billing"), "{page}");
    settle(&app, &fake).await;
    assert_eq!(status_plan(&app, &id).await.as_deref(), Some("starter"));
    assert_eq!(status(&app, &id).await.0, "active");
}

/// A customer who cancelled (in the Customer Portal, to end at the period end) is not
/// kept by an automatic discount: a journey's or an operator's grant is refused and the
/// cancellation stands at Stripe. Only the customer's own "stay" in the exit survey
/// takes it off; a survey already decided cannot then cancel behind its back.
#[tokio::test]
async fn a_discount_never_undoes_a_cancellation_the_customer_made() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let cat = &app.catalogue;
    let (id, browser, token) = signed_in_owner(&app, "Leaver").await;
    let session = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    first_month_paid(&app, &fake, &id).await;
    let sub = j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").id;
    control(&fake, &format!("subscriptions/{sub}/portal_cancel"), json!({"at_period_end": true})).await;
    settle(&app, &fake).await;
    assert!(j1msky_billing::changes::current(&app.db, &id).await.expect("current").expect("sub").cancel_at_period_end);

    for by in ["journey:enr_1", "cli"] {
        let err =
            offers::grant(&app.db, &stripe, cat, &id, "we_miss_you", by, app.now()).await.expect_err("cancelling");
        assert!(err.to_string().contains("set to end at its period end"), "{err}");
    }
    let at_stripe = stripe.get(&format!("subscriptions/{sub}"), &Value::Null).await.expect("sub");
    assert_eq!(at_stripe["cancel_at_period_end"], true, "the cancellation stands");
    assert!(at_stripe["discount"].is_null(), "{at_stripe}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM offer_grants WHERE offer = 'we_miss_you'").await, 0);

    // The customer's own choice in the exit survey: the discount, and they stay.
    let survey = retention::start_cancel(&app.db, cat, &id, "missing_feature", "", app.now()).await.expect("survey");
    assert_eq!(survey.offer, Some(retention::Offer::Discount { offer: "win_back".into() }));
    retention::accept_offer(&app.db, &stripe, cat, &id, &survey.id, app.now()).await.expect("accept");
    let at_stripe = stripe.get(&format!("subscriptions/{sub}"), &Value::Null).await.expect("sub");
    assert_eq!(at_stripe["cancel_at_period_end"], false, "staying takes the cancellation off");
    let err = retention::confirm_cancel(&app.db, &stripe, &id, &survey.id, app.now()).await.expect_err("decided");
    assert!(err.to_string().contains("already decided"), "{err}");
    let at_stripe = stripe.get(&format!("subscriptions/{sub}"), &Value::Null).await.expect("sub");
    assert_eq!(at_stripe["cancel_at_period_end"], false, "the decided survey cancelled nothing");
}

/// The win-back discount keeps a paying customer: one still in its free trial is offered
/// a pause or a cheaper plan instead.
#[tokio::test]
async fn a_customer_in_its_free_trial_is_not_offered_the_win_back_discount() {
    let (app, fake, _stripe) = spawn_app_with_stripe().await;
    let cat = &app.catalogue;
    let (id, browser, token) = signed_in_owner(&app, "Trialist").await;
    let session = checkout(&app, &browser, &token, "pro").await;
    control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
    settle(&app, &fake).await;
    assert_eq!(status(&app, &id).await.0, "trialing");
    for reason in ["missing_feature", "other", "switching"] {
        let survey = retention::start_cancel(&app.db, cat, &id, reason, "", app.now()).await.expect("survey");
        assert!(!matches!(survey.offer, Some(retention::Offer::Discount { .. })), "{reason}: {:?}", survey.offer);
    }
}

/// An offer Stripe applied but whose answer was lost (a timeout) stays granted, so it is
/// not applied a second time on a retry; one Stripe refused is taken back and may be
/// granted again.
#[tokio::test]
async fn an_offer_whose_answer_was_lost_stays_granted_and_one_refused_does_not() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let cat = &app.catalogue;
    let mut customers = Vec::new();
    for name in ["Lostreply", "Refused"] {
        let (id, browser, token) = signed_in_owner(&app, name).await;
        let session = checkout(&app, &browser, &token, "pro").await;
        control(&fake, &format!("checkout/{session}/complete"), json!({})).await;
        settle(&app, &fake).await;
        first_month_paid(&app, &fake, &id).await;
        customers.push(id);
    }
    let grants = |id: String| {
        let db = app.db.clone();
        async move {
            let (n,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM offer_grants WHERE customer_id = $1 AND offer = 'we_miss_you'")
                    .bind(&id)
                    .fetch_one(db.pool())
                    .await
                    .expect("count");
            n
        }
    };
    control(&fake, "fail", json!({"times": 0, "lose": 1})).await;
    offers::grant(&app.db, &stripe, cat, &customers[0], "we_miss_you", "cli", app.now()).await.expect("applied");
    assert_eq!(grants(customers[0].clone()).await, 1);
    settle(&app, &fake).await;
    assert_eq!(status(&app, &customers[0]).await.1.as_deref(), Some("j1msky_we_miss_you_20pct_1m"));

    control(&fake, "fail", json!({"times": 1, "status": 400})).await;
    offers::grant(&app.db, &stripe, cat, &customers[1], "we_miss_you", "cli", app.now()).await.expect_err("refused");
    assert_eq!(grants(customers[1].clone()).await, 0, "not applied, not granted");
    offers::grant(&app.db, &stripe, cat, &customers[1], "we_miss_you", "cli", app.now()).await.expect("again");
    assert_eq!(grants(customers[1].clone()).await, 1);
}
