//! The operator's view of event consumers: cursors, lag and leases on /admin/events
//! and in /metrics, parked events with a retry button.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{spawn_app, TestApp, OPERATOR_EMAIL, PASSWORD};
use j1msky_accounts::reactions::{self, SUBSCRIPTION_STATE};
use j1msky_db::{consumers, outbox};

/// A state accounts cannot apply (an unknown stage): the blocking consumer parks it.
async fn park_a_bad_state(app: &TestApp, customer: &str) -> i64 {
    let mut tx = app.db.begin().await.expect("begin");
    let state = j1msky_core::events::CustomerSubscriptionState {
        plan: None,
        stage: Some("royalty".into()),
        billing_status: None,
        at: app.now(),
        subscription_status: None,
        trial: None,
        period: None,
        period_budget_micros: None,
    };
    outbox::emit_typed(&mut tx, app.db.backend(), state, Some(customer), app.now()).await.expect("emit");
    tx.commit().await.expect("commit");
    for _ in 0..consumers::DEFAULT_MAX_ATTEMPTS {
        reactions::catch_up(&app.db, &app.clock).await.expect("consumers");
        app.clock.advance_secs(3_600);
    }
    let parked = consumers::failures(&app.db, true, 10).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(parked[0].last_error.contains("royalty"), "{:?}", parked[0].last_error);
    parked[0].seq
}

#[tokio::test]
async fn the_operator_sees_consumer_lag_and_retries_a_parked_event() {
    let app = spawn_app().await;
    let cid = app.customer_with_owner("Lag", "lag@lag.test").await;
    let seq = park_a_bad_state(&app, &cid).await;
    let lag = consumers::status(&app.db).await.expect("status")[0].lag;
    assert!(lag >= 1, "blocked behind the parked event");

    let metrics = reqwest::get(app.url("/metrics")).await.expect("metrics").text().await.expect("body");
    let line = format!("event_consumer_lag{{consumer=\"{SUBSCRIPTION_STATE}\"}} {lag}");
    assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");

    let op = app.browser();
    assert_eq!(app.login(&op, OPERATOR_EMAIL, PASSWORD).await.status(), 303);
    let page = op.get(app.url("/admin/events")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("body");
    assert!(html.contains(SUBSCRIPTION_STATE) && html.contains("royalty"), "{html}");
    assert!(html.contains(&format!("/admin/events/{SUBSCRIPTION_STATE}/{seq}/retry")), "{html}");

    // A customer is not let in.
    let owner = app.browser();
    assert_eq!(app.login(&owner, "lag@lag.test", PASSWORD).await.status(), 303);
    let refused = owner.get(app.url("/admin/events")).send().await.expect("page");
    assert!(refused.status().is_client_error() || refused.status().is_redirection(), "{}", refused.status());

    // Retry needs the CSRF token; with it the event is due again with fresh attempts.
    let retry = app.url(&format!("/admin/events/{SUBSCRIPTION_STATE}/{seq}/retry"));
    assert_eq!(op.post(&retry).send().await.expect("post").status(), 403);
    assert_eq!(consumers::failures(&app.db, true, 10).await.expect("parked").len(), 1);
    let token = app.page_token(&op, "/admin/events").await;
    let done = op.post(&retry).form(&[("csrf_token", token.as_str())]).send().await.expect("post");
    assert_eq!(done.status(), 200);
    assert!(done.text().await.expect("body").contains("retried"));
    let failing = consumers::failures(&app.db, false, 10).await.expect("failures");
    assert_eq!((failing.len(), failing[0].parked, failing[0].attempts), (1, false, 0));
    // A retry of what is not parked says so.
    let again = op.post(&retry).form(&[("csrf_token", token.as_str())]).send().await.expect("post");
    assert_eq!(again.status(), 404);
}
