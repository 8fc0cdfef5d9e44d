//! A backup restored more than a day after it was taken, on the engine the test run
//! selects, against the fake Stripe (which forgets idempotency keys after 24 hours, as
//! Stripe does): the charges the restore unmarked, and the one written again for a task
//! that was running at the backup, are found at Stripe and adopted (as is a Stripe
//! customer made after the backup); no invoice item is sent twice and every task is
//! billed once.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::Path;

use j1msky_billing::{usage, Stripe, StripeConfig};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::{Clock, ManualClock};
use j1msky_db::testing::{fresh_url, TestDb};
use j1msky_db::Db;
use j1msky_ops::backup::{self, Kind, Options, Quiet, RestoreOptions};
use serde_json::{json, Value};

/// 2026-11-25T00:00:00Z.
const DAY_START: i64 = 1_795_564_800_000_000;

async fn task(db: &Db, customer: &str, id: &str, state: &str, now: i64) {
    sqlx::query(
        "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, attempts, failures,
             not_before, queued_at) VALUES ($1, $2, 'code', 'code', 't', 'p', 0, $3, 1, 0, $4, $4)",
    )
    .bind(id)
    .bind(customer)
    .bind(state)
    .bind(now)
    .execute(db.pool())
    .await
    .expect("task");
}

/// The task's success and its charge, as the worker writes them.
async fn charged(db: &Db, customer: &str, task: &str, charge: &str, now: i64) {
    sqlx::query("UPDATE tasks SET state = 'succeeded', finished_at = $1 WHERE id = $2")
        .bind(now)
        .bind(task)
        .execute(db.pool())
        .await
        .expect("succeeded");
    sqlx::query(
        "INSERT INTO usage_charges (id, customer_id, task_id, tier, amount_micros, created_at)
         VALUES ($1, $2, $3, 'simple', 1500000, $4)",
    )
    .bind(charge)
    .bind(customer)
    .bind(task)
    .bind(now)
    .execute(db.pool())
    .await
    .expect("charge");
}

async fn control(fake: String, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{fake}/_sim/{path}")).json(&body).send().await.expect("control");
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap_or_default());
    r.json().await.expect("json")
}

/// The fake Stripe's invoice items: task → how many items bill it.
async fn items_per_task(stripe: &Stripe, customer: &str) -> BTreeMap<String, usize> {
    let list = stripe.get("invoiceitems", &json!({"customer": customer, "limit": 100})).await.expect("list");
    assert_eq!(list["has_more"], false);
    let mut per = BTreeMap::new();
    for item in list["data"].as_array().expect("data") {
        *per.entry(item["metadata"]["j1msky_task"].as_str().expect("task").to_string()).or_insert(0) += 1;
    }
    per
}

async fn reported_item(db: &Db, task: &str) -> Option<String> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT stripe_item_id FROM usage_charges WHERE task_id = $1 AND reported_at IS NOT NULL")
            .bind(task)
            .fetch_optional(db.pool())
            .await
            .expect("charge");
    row.and_then(|r| r.0)
}

#[tokio::test]
async fn a_backup_restored_a_day_and_more_later_sends_no_invoice_item_twice() {
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    let clock = ManualClock::new(DAY_START);
    let fake = j1msky_sim::stripe::spawn_stripe(j1msky_sim::stripe::FakeStripeConfig {
        now: Some(clock.now_micros() / 1_000_000),
        ..Default::default()
    })
    .await
    .expect("fake stripe");
    let stripe = Stripe::new(StripeConfig {
        base_url: fake.base(),
        secret_key: "sk_test_j1msky".into(),
        api_version: catalogue.stripe.api_version.clone(),
        allow_live: false,
    })
    .expect("client");
    let later = |secs: i64| {
        clock.advance_secs(secs);
        control(fake.base(), "clock", json!({"advance_secs": secs}))
    };

    let a = TestDb::new().await;
    let cli = j1msky_audit::Actor::cli();
    let new_customer = |name: &'static str| {
        j1msky_accounts::customers::create(
            &a.db,
            &catalogue,
            &cli,
            j1msky_accounts::customers::NewCustomer { name: name.into(), ..Default::default() },
            clock.now_micros(),
        )
    };
    let walk_in = new_customer("Walk-in").await.expect("customer").id;
    // Known to Stripe only after the backup: its first charge makes its Stripe customer.
    let late = new_customer("Late").await.expect("customer").id;
    task(&a.db, &late, "tsk_late", "running", clock.now_micros()).await;
    // Before the backup: one task billed and reported, one billed and not yet reported,
    // one running.
    task(&a.db, &walk_in, "tsk_reported", "running", clock.now_micros()).await;
    charged(&a.db, &walk_in, "tsk_reported", "uch_reported", clock.now_micros()).await;
    assert_eq!(usage::report(&a.db, &stripe, &catalogue, 100, clock.now_micros()).await.expect("report"), 1);
    task(&a.db, &walk_in, "tsk_waiting", "running", clock.now_micros()).await;
    charged(&a.db, &walk_in, "tsk_waiting", "uch_waiting", clock.now_micros()).await;
    task(&a.db, &walk_in, "tsk_running", "running", clock.now_micros()).await;
    later(3_600).await;

    let dir = tempfile::tempdir().expect("dir");
    let opts = Options { dir: dir.path().to_path_buf(), copy_to: None, kind: Kind::Manual };
    let b = backup::take(&a.db, &a.url, &opts, &clock, &Quiet).await.expect("backup");

    // After the backup, on the database about to be lost: the running task ends and is
    // billed, a new one too, and all is reported to Stripe.
    later(600).await;
    charged(&a.db, &walk_in, "tsk_running", "uch_running_a", clock.now_micros()).await;
    task(&a.db, &walk_in, "tsk_after", "running", clock.now_micros()).await;
    charged(&a.db, &walk_in, "tsk_after", "uch_after", clock.now_micros()).await;
    charged(&a.db, &late, "tsk_late", "uch_late_a", clock.now_micros()).await;
    assert_eq!(usage::report(&a.db, &stripe, &catalogue, 100, clock.now_micros()).await.expect("report A"), 4);
    let mut at_a = BTreeMap::new();
    for t in ["tsk_reported", "tsk_waiting", "tsk_running", "tsk_after", "tsk_late"] {
        at_a.insert(t, reported_item(&a.db, t).await.expect("reported from A"));
    }
    let linked = |id: String| {
        let db = a.db.clone();
        async move {
            let (sc,): (Option<String>,) = sqlx::query_as("SELECT stripe_customer_id FROM customers WHERE id = $1")
                .bind(id)
                .fetch_one(db.pool())
                .await
                .expect("customer");
            sc
        }
    };
    let sc = linked(walk_in.clone()).await.expect("linked to Stripe");
    let late_sc = linked(late.clone()).await.expect("linked after the backup");
    drop(a);

    // A day and more later (Stripe has forgotten every key), the backup is restored.
    later(30 * 3_600).await;
    let (url_b, _dir_b) = fresh_url().await;
    backup::restore(Path::new(&b.path), &url_b, &RestoreOptions::default(), &clock, &Quiet).await.expect("restore");
    let db_b = Db::connect(&url_b).await.expect("restored");
    backup::reconcile_after_restore(&db_b, &stripe, &catalogue, clock.now_micros())
        .await
        .expect("reconcile")
        .expect("a restore to reconcile");
    assert_eq!(reported_item(&db_b, "tsk_waiting").await, None, "its mark was made after the backup");
    // The task running at the backup runs again on the restored database: a new charge row.
    charged(&db_b, &walk_in, "tsk_running", "uch_running_b", clock.now_micros()).await;
    charged(&db_b, &late, "tsk_late", "uch_late_b", clock.now_micros()).await;
    // And new work after the restore.
    task(&db_b, &walk_in, "tsk_new", "running", clock.now_micros()).await;
    charged(&db_b, &walk_in, "tsk_new", "uch_new", clock.now_micros()).await;

    assert_eq!(usage::report(&db_b, &stripe, &catalogue, 100, clock.now_micros()).await.expect("report B"), 4);
    assert_eq!(usage::report(&db_b, &stripe, &catalogue, 100, clock.now_micros()).await.expect("nothing left"), 0);
    let per_task = items_per_task(&stripe, &sc).await;
    let once: BTreeMap<String, usize> = ["tsk_after", "tsk_new", "tsk_reported", "tsk_running", "tsk_waiting"]
        .iter()
        .map(|t| (t.to_string(), 1))
        .collect();
    assert_eq!(per_task, once, "every task billed once at Stripe");
    let late_items = items_per_task(&stripe, &late_sc).await;
    assert_eq!(late_items, BTreeMap::from([("tsk_late".to_string(), 1)]), "on the Stripe customer made before");
    let (customers,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM customers WHERE stripe_customer_id = $1")
        .bind(&late_sc)
        .fetch_one(db_b.pool())
        .await
        .expect("count");
    assert_eq!(customers, 1, "linked again to the Stripe customer made after the backup");
    for t in ["tsk_reported", "tsk_waiting", "tsk_running", "tsk_late"] {
        assert_eq!(reported_item(&db_b, t).await.as_deref(), Some(at_a[t].as_str()), "{t}: the item A reported");
    }
    let (unreported,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM usage_charges WHERE reported_at IS NULL")
        .fetch_one(db_b.pool())
        .await
        .expect("count");
    assert_eq!(unreported, 0);
    db_b.close().await;
}
