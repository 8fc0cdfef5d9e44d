//! The operator's customer list (`/admin/customers`) at any number of customers: the
//! counts by stage are every customer's (the page used to count the 100,000 newest), the
//! list pages newest first through a cursor of creation time and id, ties included, and
//! a malformed stage or cursor is refused with the field it was in.

// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{operator, spawn_app, TestApp};
use j1msky_accounts::customers::{self, Cursor};
use j1msky_core::vocab::Stage;

async fn get(browser: &reqwest::Client, app: &TestApp, path: &str) -> (u16, String) {
    let resp = browser.get(app.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    // Links as a browser reads them (the templates escape `/` and `&` in attributes).
    (status, resp.text().await.unwrap().replace("&#x2f;", "/").replace("&amp;", "&"))
}

/// Adds customers `first..=last` straight into the table (a generated series, the same
/// SQL on both engines): id `cus_{prefix}{i}`, name `{Prefix} {i}`, stage and creation
/// time from SQL expressions of `i`.
async fn bulk(app: &TestApp, prefix: &str, first: i64, last: i64, stage: &str, created_at: &str) {
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last})
         INSERT INTO customers (id, name, stage, created_at, updated_at, stage_changed_at)
         SELECT 'cus_{prefix}' || i, '{prefix} ' || i, {stage}, {created_at}, {created_at}, {created_at} FROM n"
    );
    sqlx::query(&sql).execute(app.db.pool()).await.unwrap();
    // Rows written here, not through accounts: their search keys are filled as the binary
    // fills those of customers stored before the keys existed.
    customers::fill_search_keys(&app.db).await.unwrap();
}

fn next_link(html: &str) -> Option<String> {
    let at = html.find("rel=\"next\" href=\"")? + "rel=\"next\" href=\"".len();
    Some(html[at..at + html[at..].find('"').unwrap()].to_string())
}

#[tokio::test]
async fn counts_and_pages_cover_every_customer_past_a_hundred_thousand() {
    let app = spawn_app().await;
    // 100,002 leads created at 1..=100,002 µs and one active customer older than all.
    bulk(&app, "Bulk", 1, 100_002, "'lead'", "i").await;
    bulk(&app, "Old", 0, 0, "'active'", "0").await;
    let op = operator(&app).await;

    let (status, html) = get(&op, &app, "/admin/customers").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("lead 100002</span>"), "every lead counted");
    assert!(html.contains("active 1</span>"), "the oldest customer counted");
    assert!(html.contains("100003 customers, newest first."));
    // The newest 500, then a link to the next page.
    assert!(html.contains(">Bulk 100002</a>") && html.contains(">Bulk 99503</a>"));
    assert!(!html.contains(">Bulk 99502</a>"));
    let next = next_link(&html).expect("a link to older customers");
    assert_eq!(next, "/admin/customers?after=99503.cus_Bulk99503");

    let (status, html) = get(&op, &app, &next).await;
    assert_eq!(status, 200);
    assert!(html.contains(">Bulk 99502</a>") && html.contains(">Bulk 99003</a>"));
    assert!(!html.contains(">Bulk 99503</a>") && !html.contains(">Bulk 99002</a>"));
    assert!(html.contains("back to the newest"));
    assert!(html.contains("lead 100002</span>"), "the counts stay every customer's on later pages");

    // One stage: its count, its customers, no further page.
    let (status, html) = get(&op, &app, "/admin/customers?stage=active").await;
    assert_eq!(status, 200);
    assert!(html.contains("1 customer in active, newest first."));
    assert!(html.contains(">Old 0</a>") && !html.contains(">Bulk 1</a>"));
    assert!(next_link(&html).is_none());
    // The last page of leads ends with the oldest lead and offers nothing further.
    let (status, html) = get(&op, &app, "/admin/customers?stage=lead&after=201.cus_Bulk201").await;
    assert_eq!(status, 200);
    assert!(html.contains(">Bulk 200</a>") && html.contains(">Bulk 1</a>") && !html.contains(">Bulk 201</a>"));
    assert!(!html.contains(">Old 0</a>"));
    assert_eq!(next_link(&html), None);
}

#[tokio::test]
async fn a_malformed_stage_or_cursor_is_refused_with_its_field() {
    let app = spawn_app().await;
    let op = operator(&app).await;
    for (query, field, says) in [
        ("stage=vip", "stage", "vip"),
        ("after=nonsense", "after", "nonsense"),
        ("after=12x.cus_a", "after", "12x"),
        ("after=12.cus%20a", "after", "cus a"),
        ("after=12.", "after", "is not a customer id"),
    ] {
        let (status, html) = get(&op, &app, &format!("/admin/customers?{query}")).await;
        assert_eq!(status, 422, "{query}");
        assert!(html.contains(&format!("{field}:")) && html.contains(says), "{query}: {html}");
    }
}

#[tokio::test]
async fn pages_walk_every_customer_once_in_order_with_ties_at_their_edges() {
    let app = spawn_app().await;
    // 1,000 customers, three at each creation time, half leads and half trials: pages of 7
    // end inside runs of equal times.
    bulk(&app, "T", 1, 1000, "CASE WHEN i % 2 = 0 THEN 'lead' ELSE 'trial' END", "i / 3").await;
    for stage in [None, Some(Stage::Trial)] {
        let mut seen: Vec<(i64, String)> = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let page = customers::list_after(&app.db, stage, after.as_ref(), 7).await.unwrap();
            assert!(page.len() <= 7);
            if page.is_empty() {
                break;
            }
            assert!(page.iter().all(|c| stage.is_none_or(|s| c.stage == s)));
            seen.extend(page.iter().map(|c| (c.created_at, c.id.clone())));
            after = page.last().map(Cursor::after);
        }
        assert_eq!(seen.len(), if stage.is_some() { 500 } else { 1000 }, "{stage:?}");
        assert!(seen.windows(2).all(|w| w[0] > w[1]), "strictly newest first, each once: {stage:?}");
        // The same order as one unpaged read.
        let whole = customers::list_after(&app.db, stage, None, 2000).await.unwrap();
        assert_eq!(whole.iter().map(|c| (c.created_at, c.id.clone())).collect::<Vec<_>>(), seen);
    }
    let counts = customers::count_by_stage(&app.db).await.unwrap();
    assert_eq!(counts.len(), Stage::ALL.len());
    for (stage, n) in counts {
        let want = match stage {
            Stage::Lead | Stage::Trial => 500,
            _ => 0,
        };
        assert_eq!(n, want, "{stage:?}");
    }
}

#[tokio::test]
async fn the_operator_finds_customers_by_name_email_or_id_and_the_search_is_text() {
    let app = spawn_app().await;
    // 150 customers whose names start "Bulk", one trial among them, and one with an email.
    bulk(&app, "Bulk", 1, 150, "CASE WHEN i = 7 THEN 'trial' ELSE 'lead' END", "i").await;
    bulk(&app, "Other", 1, 1, "'active'", "0").await;
    sqlx::query("UPDATE customers SET contact_email = 'Ops@Other.test', search_email = 'ops@other.test' WHERE id = 'cus_Other1'")
        .execute(app.db.pool())
        .await
        .unwrap();
    let op = operator(&app).await;

    // The start of a name in any case: by name, the first 100 of 150, told to narrow it.
    let (status, html) = get(&op, &app, "/admin/customers?q=bULK").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("The first 100 customers matching “bULK”, by name: type more"), "{html}");
    assert!(html.contains(">Bulk 1</a>") && html.contains(">Bulk 10</a>") && html.contains(">Bulk 100</a>"));
    assert!(!html.contains(">Other 1</a>") && next_link(&html).is_none(), "no pages while searching");
    assert!(html.contains("value=\"bULK\""), "the search is kept in its box");
    let (_, html) = get(&op, &app, "/admin/customers?q=bulk%2012").await;
    assert!(html.contains("11 customers matching “bulk 12”"), "{html}");
    // Within the stage the list shows.
    let (_, html) = get(&op, &app, "/admin/customers?q=bulk&stage=trial").await;
    assert!(html.contains("1 customer matching “bulk” in trial") && html.contains(">Bulk 7</a>"), "{html}");
    // The start of an email, and an id exactly.
    for q in ["ops%40other", "cus_Other1"] {
        let (_, html) = get(&op, &app, &format!("/admin/customers?q={q}")).await;
        assert!(html.contains("1 customer matching") && html.contains(">Other 1</a>"), "{q}: {html}");
    }
    // What is typed is text, shown escaped, never a pattern or markup.
    let (status, html) = get(&op, &app, "/admin/customers?q=%25").await;
    assert_eq!(status, 200);
    assert!(html.contains("0 customers matching “%”") && html.contains("No customer matches."), "{html}");
    let (status, html) = get(&op, &app, "/admin/customers?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert_eq!(status, 200);
    assert!(!html.contains("<script>alert(1)") && html.contains("&lt;script&gt;"), "{html}");
    // Too long, or a control character: refused with the field (a NUL already by the
    // guard every request passes, with 400).
    for (q, status_wanted, field) in
        [("a".repeat(201), 422, "search:"), ("a%01b".into(), 422, "search:"), ("a%00b".into(), 400, "q")]
    {
        let (status, html) = get(&op, &app, &format!("/admin/customers?q={q}")).await;
        assert_eq!(status, status_wanted, "{q}");
        assert!(html.contains(field), "{q}: {html}");
    }
    // A blank search is the whole list.
    let (_, html) = get(&op, &app, "/admin/customers?q=%20%20").await;
    assert!(html.contains("151 customers, newest first."), "{html}");
}

/// The newsletter reaches only customers who turned it on, and `/app/mail` is where an
/// owner does (there was no way to opt in); a member sees the choices but cannot change
/// them, and a form naming another choice stores nothing.
#[tokio::test]
async fn an_owner_turns_the_newsletter_on_and_account_care_off_on_the_mail_page() {
    use j1msky_lifecycle::delivery::{self, Category};
    let app = common::spawn_app().await;
    let id = app.customer_with_owner("Reader", "owner@reader.test").await;
    assert!(!delivery::consents(&app.db, &id, Category::Marketing).await.unwrap(), "off until turned on");
    assert!(delivery::consents(&app.db, &id, Category::Retention).await.unwrap());
    let owner = app.browser();
    app.login(&owner, "owner@reader.test", common::PASSWORD).await;
    let token = app.page_token(&owner, "/app/mail").await;
    let post = |form: Vec<(&'static str, String)>| owner.post(app.url("/app/mail")).form(&form).send();
    let bad = post(vec![("csrf_token", token.clone()), ("mail_transactional", "on".into())]).await.unwrap();
    assert_eq!(bad.status(), 422, "transactional mail is not a choice");
    assert!(!delivery::consents(&app.db, &id, Category::Marketing).await.unwrap());
    let done =
        post(vec![("csrf_token", token.clone()), ("mail_onboarding", "on".into()), ("mail_marketing", "on".into())])
            .await
            .unwrap();
    assert_eq!(done.status(), 303);
    assert!(delivery::consents(&app.db, &id, Category::Marketing).await.unwrap(), "newsletter on");
    assert!(!delivery::consents(&app.db, &id, Category::Retention).await.unwrap(), "a box left out is off");
    assert!(delivery::consents(&app.db, &id, Category::Onboarding).await.unwrap());
    let page = owner.get(app.url("/app/mail")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("name=\"mail_marketing\" checked"), "{page}");
}
