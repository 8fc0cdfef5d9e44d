// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! `/admin/spend` over real HTTP on loopback: an operator lists, enters and corrects a
//! month's acquisition spend (stored, audited, exported as CSV); bad input is shown
//! again with 422 naming the field and stores nothing; a customer cannot see or post
//! it; a post without the CSRF token is refused.

use crate::common;

use common::{location, spawn_app, OPERATOR_EMAIL, PASSWORD};
use j1msky_insights::people;

#[tokio::test]
async fn the_operator_enters_spend_and_everyone_else_is_refused() {
    let app = spawn_app().await;
    let ctx = j1msky_web::AppState::new(
        app.db.clone(),
        app.catalogue.clone(),
        std::sync::Arc::new(app.clock.clone()),
        j1msky_web::WebConfig::default(),
    )
    .insights();
    let this_month = ctx.this_month();
    let last_month = this_month.prev().to_string();
    let op = app.browser();
    app.login(&op, OPERATOR_EMAIL, PASSWORD).await;

    let page = op.get(app.url("/admin/spend")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("No spend entered yet."), "{html}");
    assert!(html.contains(&format!("value=\"{this_month}\"")), "the form proposes this month");
    let token = common::csrf_token(&html);

    let post = |fields: Vec<(&'static str, String)>| {
        let mut form: Vec<(&str, String)> = vec![("csrf_token", token.clone())];
        form.extend(fields);
        op.post(app.url("/admin/spend")).form(&form).send()
    };
    let r = post(vec![("month", last_month.clone()), ("amount", "1,200".into())]).await.unwrap();
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/admin/spend".to_string()));
    let r = post(vec![("month", last_month.clone()), ("amount", "$1500.50".into())]).await.unwrap();
    assert_eq!(r.status(), 303);
    let r = post(vec![("month", this_month.to_string()), ("amount", "99".into())]).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(people::spend(&ctx).await.unwrap(), vec![(this_month, 9_900), (this_month.prev(), 150_050)]);
    let html = op.get(app.url("/admin/spend")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<td data-value=\"150050\">1500.50</td>"), "{html}");

    // Bad input: the form again, 422, the field named, the typed value kept, nothing stored.
    let next = this_month.next().to_string();
    for (month, amount, field) in [
        (last_month.as_str(), "-5", "amount"),
        (last_month.as_str(), "12.345", "amount"),
        (last_month.as_str(), "", "amount"),
        (last_month.as_str(), "999999999", "amount"),
        ("2026-13", "10", "month"),
        ("March", "10", "month"),
        (next.as_str(), "10", "month"),
        (last_month.as_str(), "1500                                         x", "amount"),
    ] {
        let r = post(vec![("month", month.into()), ("amount", amount.into())]).await.unwrap();
        assert_eq!(r.status(), 422, "{month} {amount}");
        assert_eq!(r.headers()["x-error-code"], "invalid");
        let html = r.text().await.unwrap();
        assert!(html.contains(&format!("<strong>{field}:")), "{month} {amount}: {html}");
        assert!(html.contains(&format!("value=\"{month}\"")), "the typed month is kept");
    }
    // Megabytes of junk: refused, quoted back only in part.
    let junk = "9".repeat(1_000_000);
    for (month, amount, field) in [(last_month.clone(), junk.clone(), "amount"), (junk.clone(), "1".into(), "month")] {
        let r = post(vec![("month", month), ("amount", amount)]).await.unwrap();
        assert_eq!(r.status(), 422);
        let html = r.text().await.unwrap();
        assert!(html.contains(&format!("<strong>{field}: too long")), "{}", &html[..2000.min(html.len())]);
        assert!(html.len() < 100_000, "the page quotes a bounded excerpt");
    }
    assert_eq!(people::spend(&ctx).await.unwrap(), vec![(this_month, 9_900), (this_month.prev(), 150_050)]);

    // The change is audited with the figure it replaced.
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'insights.spend_set' AND subject = $1 ORDER BY at DESC, id DESC",
    )
    .bind(&last_month)
    .fetch_all(app.db.pool())
    .await
    .unwrap()
    .into_iter()
    .find(|d: &String| d.contains("150050"))
    .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["from_cents"], 120_000);

    // The CSV export: the same table, newest first.
    let r = op.get(app.url("/admin/spend?format=csv")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(
        r.text().await.unwrap(),
        format!("month,spend_cents,spend\n{this_month},9900,99.00\n{last_month},150050,1500.50\n")
    );

    // Without the CSRF token: refused, nothing stored.
    let r =
        op.post(app.url("/admin/spend")).form(&[("month", last_month.as_str()), ("amount", "1")]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = op
        .post(app.url("/admin/spend"))
        .form(&[("csrf_token", "forged"), ("month", last_month.as_str()), ("amount", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A customer's owner: no page, no CSV, no post (with its own valid token).
    app.customer_with_owner("Acme", "owner@acme.test").await;
    let owner = app.browser();
    app.login(&owner, "owner@acme.test", PASSWORD).await;
    for path in ["/admin/spend", "/admin/spend?format=csv"] {
        let r = owner.get(app.url(path)).send().await.unwrap();
        assert!(matches!(r.status().as_u16(), 403 | 404), "{path}: {}", r.status());
        assert!(!r.text().await.unwrap().contains("150050"));
    }
    let own_token = app.page_token(&owner, "/app").await;
    let r = owner
        .post(app.url("/admin/spend"))
        .form(&[("csrf_token", own_token.as_str()), ("month", last_month.as_str()), ("amount", "1")])
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 403 | 404), "{}", r.status());
    // Signed out: sent to the login page.
    let r = app.browser().get(app.url("/admin/spend")).send().await.unwrap();
    assert!(r.status().is_redirection() || r.status() == 401, "{}", r.status());
    assert_eq!(people::spend(&ctx).await.unwrap(), vec![(this_month, 9_900), (this_month.prev(), 150_050)]);
}
