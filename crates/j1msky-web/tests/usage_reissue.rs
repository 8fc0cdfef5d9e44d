//! No invoice item is sent twice once Stripe has forgotten its idempotency key (24 hours
//! on the fake's clock, as at Stripe): a charge whose report mark was lost (a restore
//! from before it, or a POST whose answer never came) and is reported again past the
//! window is found at Stripe by its metadata and adopted, never posted again; a recent
//! charge still costs one POST.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;
use crate::support;

use common::{spawn_app_with_stripe, TestApp};
use j1msky_billing::usage;
use j1msky_sim::stripe::RunningStripe;
use serde_json::{json, Value};
use support::*;

/// Past Stripe's window, on both clocks: ours and the fake Stripe's.
async fn a_day_and_more_later(app: &TestApp, fake: &RunningStripe) {
    let secs = 25 * 3_600;
    app.clock.advance_secs(secs);
    control(fake, "clock", json!({"advance_secs": secs})).await;
}

/// What a restore from a backup taken before the reports leaves: the charges unmarked.
async fn lose_marks(app: &TestApp, customer: &str) {
    sqlx::query("UPDATE usage_charges SET reported_at = NULL, stripe_item_id = NULL WHERE customer_id = $1")
        .bind(customer)
        .execute(app.db.pool())
        .await
        .expect("unmark");
}

async fn item_of(app: &TestApp, charge: &str) -> Option<String> {
    let (item,): (Option<String>,) = sqlx::query_as("SELECT stripe_item_id FROM usage_charges WHERE id = $1")
        .bind(charge)
        .fetch_one(app.db.pool())
        .await
        .expect("charge");
    item
}

async fn items_at_stripe(fake: &RunningStripe) -> i64 {
    fake_state(fake).await["objects"]["invoiceitem"].as_i64().unwrap_or(0)
}

/// `GET /v1/invoiceitems` at the fake, as a Stripe client calls it.
async fn list(fake: &RunningStripe, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/invoiceitems?{query}", fake.base()))
        .bearer_auth("sk_test_j1msky")
        .send()
        .await
        .expect("list");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn a_charge_whose_mark_was_lost_is_adopted_not_sent_again_after_the_window() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let id = customer(&app, "Restored Late").await;
    charged_task(&app, &id, "tsk_late", 2_000_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 1);
    let first = item_of(&app, "uch_tsk_late").await.expect("reported with its item");

    lose_marks(&app, &id).await;
    a_day_and_more_later(&app, &fake).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("again"), 1);
    assert_eq!(items_at_stripe(&fake).await, 1, "Stripe holds the task's item once");
    assert_eq!(item_of(&app, "uch_tsk_late").await.as_deref(), Some(first.as_str()), "marked with Stripe's item");
    let reported = count(&app, "SELECT COUNT(*) FROM events WHERE kind = 'usage.reported'").await;
    assert_eq!(reported, 2, "the adoption is announced like a report (the first announcement was the lost one's)");

    // The task ran again on the restored database: a new row for the same work.
    sqlx::query("DELETE FROM usage_charges WHERE task_id = 'tsk_late'").execute(app.db.pool()).await.expect("gone");
    charge(&app, &id, "uch_rewritten", "tsk_late", 2_000_000).await;
    a_day_and_more_later(&app, &fake).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("rewritten"), 1);
    assert_eq!(items_at_stripe(&fake).await, 1);
    assert_eq!(item_of(&app, "uch_rewritten").await.as_deref(), Some(first.as_str()));
}

#[tokio::test]
async fn an_adopted_item_stripe_already_invoiced_is_marked_on_its_invoice() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let id = customer(&app, "Invoiced Before Restore").await;
    charged_task(&app, &id, "tsk_inv", 1_500_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 1);
    assert_eq!(usage::invoice_pay_per_task(&app.db, &stripe, "2026-11", app.now()).await.expect("invoice"), 1);
    sqlx::query("UPDATE usage_charges SET reported_at = NULL, stripe_item_id = NULL, stripe_invoice_id = NULL")
        .execute(app.db.pool())
        .await
        .expect("unmark");
    a_day_and_more_later(&app, &fake).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("again"), 1);
    let (invoice,): (Option<String>,) =
        sqlx::query_as("SELECT stripe_invoice_id FROM usage_charges WHERE id = 'uch_tsk_inv'")
            .fetch_one(app.db.pool())
            .await
            .expect("charge");
    assert!(invoice.is_some_and(|i| i.starts_with("in_")), "on the invoice Stripe put it on");
    assert_eq!(items_at_stripe(&fake).await, 1);
    assert_eq!(fake_state(&fake).await["objects"]["invoice"], 1, "and not invoiced again");
}

#[tokio::test]
async fn many_lost_marks_are_found_across_pages_of_stripes_list() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let id = customer(&app, "Busy").await;
    for n in 0..230 {
        charged_task(&app, &id, &format!("tsk_busy{n:03}"), 100_000).await;
    }
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 1000, app.now()).await.expect("report"), 230);
    let before: Vec<(String, String)> = sqlx::query_as("SELECT id, stripe_item_id FROM usage_charges ORDER BY id")
        .fetch_all(app.db.pool())
        .await
        .expect("rows");

    lose_marks(&app, &id).await;
    a_day_and_more_later(&app, &fake).await;
    // One task more, after the restore: recent, so it is simply posted.
    charged_task(&app, &id, "tsk_busy_new", 100_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 1000, app.now()).await.expect("again"), 231);
    assert_eq!(items_at_stripe(&fake).await, 231, "three pages of 100 read; nothing sent twice");
    let after: Vec<(String, String)> =
        sqlx::query_as("SELECT id, stripe_item_id FROM usage_charges WHERE task_id <> 'tsk_busy_new' ORDER BY id")
            .fetch_all(app.db.pool())
            .await
            .expect("rows");
    assert_eq!(after, before, "each charge marked with its own first item");
}

#[tokio::test]
async fn a_day_of_api_calls_is_looked_up_and_adopted_too() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let id = customer(&app, "API Caller").await;
    sqlx::query(
        "INSERT INTO usage_charges (id, customer_id, api_day, tier, amount_micros, created_at)
         VALUES ('uch_day1', $1, '2026-11-18', 'api', 3000000, $2)",
    )
    .bind(&id)
    .bind(app.now())
    .execute(app.db.pool())
    .await
    .expect("day charge");
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 1);
    let first = item_of(&app, "uch_day1").await.expect("item");
    // The day's charge is written again with a new id (the meter ran again after a restore).
    sqlx::query("DELETE FROM usage_charges WHERE id = 'uch_day1'").execute(app.db.pool()).await.expect("gone");
    a_day_and_more_later(&app, &fake).await;
    sqlx::query(
        "INSERT INTO usage_charges (id, customer_id, api_day, tier, amount_micros, created_at)
         VALUES ('uch_day1_again', $1, '2026-11-18', 'api', 3000000, $2)",
    )
    .bind(&id)
    .bind(app.now())
    .execute(app.db.pool())
    .await
    .expect("day charge again");
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("again"), 1);
    assert_eq!(items_at_stripe(&fake).await, 1);
    assert_eq!(item_of(&app, "uch_day1_again").await, Some(first));
}

#[tokio::test]
async fn a_recent_charge_costs_one_post_and_an_old_one_a_lookup_first() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let id = customer(&app, "Fast Path").await;
    charged_task(&app, &id, "tsk_first", 1_000_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("linked"), 1);

    // One call is let through, the next fails: a report needing two calls fails.
    charged_task(&app, &id, "tsk_recent", 1_000_000).await;
    control(&fake, "fail", json!({"after": 1, "times": 1})).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("one POST"), 1);
    // The armed failure is still waiting: it takes the next call.
    charged_task(&app, &id, "tsk_burn", 1_000_000).await;
    usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect_err("the armed failure");
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("retried"), 1);

    charged_task(&app, &id, "tsk_old", 1_000_000).await;
    a_day_and_more_later(&app, &fake).await;
    control(&fake, "fail", json!({"after": 1, "times": 1})).await;
    let err = usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect_err("list, then POST");
    assert!(err.to_string().contains("invoiceitems"), "the POST after the list failed: {err}");
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("retried"), 1);
    assert_eq!(items_at_stripe(&fake).await, 4);
}

#[tokio::test]
async fn the_fake_lists_invoice_items_as_stripe_does() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let (a, b) = (customer(&app, "Lister A").await, customer(&app, "Lister B").await);
    for n in 0..5 {
        charged_task(&app, &a, &format!("tsk_la{n}"), 100_000).await;
    }
    charged_task(&app, &b, "tsk_lb", 100_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 6);
    let sc = usage::ensure_stripe_customer(&app.db, &stripe, &a, app.now()).await.expect("sc");

    let (status, all) = list(&fake, &format!("customer={sc}&limit=100")).await;
    assert_eq!(status, 200);
    assert_eq!(all["object"], "list");
    assert_eq!(all["url"], "/v1/invoiceitems");
    let ids: Vec<&str> = all["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5, "only that customer's");
    let mut newest_first = ids.clone();
    newest_first.sort_by(|x, y| y.cmp(x));
    assert_eq!(ids, newest_first, "newest first");

    let (_, page) = list(&fake, &format!("customer={sc}&limit=2")).await;
    assert_eq!((page["data"].as_array().unwrap().len(), page["has_more"].as_bool()), (2, Some(true)));
    let (_, next) = list(&fake, &format!("customer={sc}&limit=2&starting_after={}", ids[1])).await;
    assert_eq!(next["data"][0]["id"], ids[2]);
    let (_, last) = list(&fake, &format!("customer={sc}&limit=2&starting_after={}", ids[3])).await;
    assert_eq!((last["data"].as_array().unwrap().len(), last["has_more"].as_bool()), (1, Some(false)));
    let (_, back) = list(&fake, &format!("customer={sc}&limit=2&ending_before={}", ids[3])).await;
    assert_eq!(back["data"][0]["id"], ids[1], "the page just before the cursor");
    assert_eq!(back["has_more"], true);

    let later = fake_state(&fake).await["now"].as_i64().unwrap() + 10;
    let (_, none) = list(&fake, &format!("customer={sc}&created[gte]={later}")).await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0, "created[gte] filters");
    let (_, pending) = list(&fake, &format!("customer={sc}&pending=false")).await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 0, "none invoiced yet");

    let (status, err) = list(&fake, "limit=101").await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("limit")));
    let (status, err) = list(&fake, "starting_after=ii_nope").await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("resource_missing")));
}

#[tokio::test]
async fn a_stripe_customer_whose_link_was_lost_is_found_not_made_again() {
    let (app, fake, stripe) = spawn_app_with_stripe().await;
    let id = customer(&app, "Linked Before Restore").await;
    charged_task(&app, &id, "tsk_linked", 1_000_000).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("report"), 1);
    let first = usage::ensure_stripe_customer(&app.db, &stripe, &id, app.now()).await.expect("linked");

    // A restore from before the link: ours has no Stripe customer, its charge no mark.
    sqlx::query("UPDATE customers SET stripe_customer_id = NULL WHERE id = $1")
        .bind(&id)
        .execute(app.db.pool())
        .await
        .expect("unlink");
    lose_marks(&app, &id).await;
    a_day_and_more_later(&app, &fake).await;
    assert_eq!(usage::report(&app.db, &stripe, &app.catalogue, 100, app.now()).await.expect("again"), 1);
    let again = usage::ensure_stripe_customer(&app.db, &stripe, &id, app.now()).await.expect("linked again");
    assert_eq!(again, first, "the Stripe customer made before, found by its metadata");
    let state = fake_state(&fake).await;
    assert_eq!((state["objects"]["customer"].as_i64(), items_at_stripe(&fake).await), (Some(1), 1));
}
