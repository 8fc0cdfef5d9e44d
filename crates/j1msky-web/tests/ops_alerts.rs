//! `/admin/alerts` over real HTTP: the list by status with each channel's delivery, and
//! acknowledge / resolve (operator only, CSRF, audited); the morning review then lists
//! only the alerts nobody acknowledged.

// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{csrf_token, operator, spawn_app, TestApp};
use j1msky_audit::{alerts, Actor};

async fn get(browser: &reqwest::Client, app: &TestApp, path: &str) -> (u16, String) {
    let resp = browser.get(app.url(path)).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap().replace("&#x2f;", "/"))
}

async fn post(browser: &reqwest::Client, app: &TestApp, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let resp = browser.post(app.url(path)).form(form).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn operators_acknowledge_and_resolve_alerts_and_the_morning_review_shows_only_open_ones() {
    let app = spawn_app().await;
    let now = app.now();
    for (id, kind, message) in [
        ("alr_a", "budget_level", "daily spend crossed 80%"),
        ("alr_b", "circuit_open", "provider sim keeps <failing>"),
    ] {
        alerts::raise(&app.db, id, kind, message, &serde_json::json!({}), now).await.unwrap();
    }

    // Not for customers or anonymous visitors.
    let anon = app.browser();
    let (status, _) = get(&anon, &app, "/admin/alerts").await;
    assert!(status == 303 || status == 401 || status == 403, "{status}");

    let op = operator(&app).await;
    let (status, page) = get(&op, &app, "/admin/alerts").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("daily spend crossed 80%"), "{page}");
    assert!(page.contains("provider sim keeps &lt;failing&gt;"), "escaped: {page}");
    assert!(page.contains("action=\"/admin/alerts/alr_a/ack\""), "{page}");
    let token = csrf_token(&page);
    let (_, review) = get(&op, &app, "/admin/review/morning").await;
    assert!(review.contains("daily spend crossed 80%"), "{review}");

    // A form without its CSRF token changes nothing.
    let (status, _) = post(&op, &app, "/admin/alerts/alr_a/ack", &[]).await;
    assert_eq!(status, 403);
    assert_eq!(alerts::get(&app.db, "alr_a").await.unwrap().unwrap().status(), "open");

    let ack = op.post(app.url("/admin/alerts/alr_a/ack")).form(&[("csrf_token", &token)]).send().await.unwrap();
    assert_eq!(ack.status().as_u16(), 303);
    assert_eq!(common::location(&ack), "/admin/alerts?status=acknowledged#alert-alr_a");
    let a = alerts::get(&app.db, "alr_a").await.unwrap().unwrap();
    assert_eq!(a.status(), "acknowledged");
    assert!(a.acknowledged_by.unwrap().starts_with("user:"));
    let (status, _) = post(&op, &app, "/admin/alerts/alr_b/resolve", &[("csrf_token", &token)]).await;
    assert_eq!(status, 303);
    let b = alerts::get(&app.db, "alr_b").await.unwrap().unwrap();
    assert_eq!(b.status(), "resolved");
    assert!(b.acknowledged_at.is_some(), "resolving acknowledges too");

    // Each list shows its own; both changes are audited.
    let (_, open) = get(&op, &app, "/admin/alerts").await;
    assert!(open.contains("No open alert."), "{open}");
    let (_, acked) = get(&op, &app, "/admin/alerts?status=acknowledged").await;
    assert!(acked.contains("daily spend crossed 80%") && acked.contains("action=\"/admin/alerts/alr_a/resolve\""));
    assert!(!acked.contains("/admin/alerts/alr_a/ack"), "{acked}");
    let (_, resolved) = get(&op, &app, "/admin/alerts?status=resolved").await;
    assert!(resolved.contains("provider sim keeps") && !resolved.contains("/admin/alerts/alr_b/resolve"));
    let audit = j1msky_audit::audit::list(&app.db, None, 50).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "alert.acknowledged" && e.subject == "alr_a"));
    assert!(audit.iter().any(|e| e.action == "alert.resolved" && e.subject == "alr_b"));

    // The morning review lists only the unacknowledged.
    let (_, review) = get(&op, &app, "/admin/review/morning").await;
    assert!(!review.contains("daily spend crossed 80%") && !review.contains("provider sim keeps"), "{review}");

    // Bad input: an unknown alert, an unknown status.
    let (status, page) = post(&op, &app, "/admin/alerts/alr_nope/ack", &[("csrf_token", &token)]).await;
    assert_eq!(status, 404);
    assert!(page.contains("alert `alr_nope` not found"), "{page}");
    let (status, page) = get(&op, &app, "/admin/alerts?status=later").await;
    assert_eq!(status, 400);
    assert!(page.contains("`later` is not one of open, acknowledged, resolved, all"), "{page}");

    // Resolving again keeps the first resolution.
    let first = b.resolved_at;
    alerts::resolve(&app.db, &Actor::cli(), "alr_b", now + 5).await.unwrap();
    assert_eq!(alerts::get(&app.db, "alr_b").await.unwrap().unwrap().resolved_at, first);
}
