// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Staff to-dos, surveys and the newsletter over real HTTP: the to-do counts on every
//! admin page, one answer per survey link (forged and reused links refused), testimonial
//! approval, the newsletter's preview, confirmation and exactly-once queueing, and every
//! form refusing bad input with a message naming it.

use crate::common;

use std::sync::Arc;

use common::{csrf_token, location, spawn_app, spawn_app_with_mail, TestApp, OPERATOR_EMAIL, PASSWORD};
use j1msky_accounts::customers;
use j1msky_audit::Actor;
use j1msky_lifecycle::surveys::{self, SurveyKind};
use j1msky_lifecycle::{newsletter, transport::Recording, Ctx};
use sqlx::Row;

async fn operator(app: &TestApp) -> (reqwest::Client, String) {
    let op = app.browser();
    assert_eq!(app.login(&op, OPERATOR_EMAIL, PASSWORD).await.status(), 303);
    let token = app.page_token(&op, "/admin/todos").await;
    (op, token)
}

async fn get(client: &reqwest::Client, app: &TestApp, path: &str) -> (u16, String) {
    let r = client.get(app.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post(client: &reqwest::Client, app: &TestApp, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
    let r = client.post(app.url(path)).form(form).send().await.unwrap();
    let loc = if r.status().is_redirection() { location(&r) } else { String::new() };
    (r.status().as_u16(), loc, r.text().await.unwrap())
}

async fn todo_ids(app: &TestApp) -> Vec<String> {
    sqlx::query("SELECT id FROM lifecycle_todos ORDER BY created_at, id")
        .fetch_all(app.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn todos_are_opened_assigned_and_done_with_counts_on_every_admin_page() {
    let app = spawn_app().await;
    let cus = app.customer_with_owner("Acme", "owner@acme.test").await;
    let (op, token) = operator(&app).await;
    let (_, html) = get(&op, &app, "/admin").await;
    assert!(html.contains("To-dos: 0 open · 0 overdue"), "{html}");

    // No CSRF token: refused, nothing opened.
    let (status, _, _) = post(&op, &app, "/admin/todos", &[("reason", "x")]).await;
    assert_eq!(status, 403);
    // Bad input: named, nothing opened.
    for (form, says) in [
        (vec![("reason", "  "), ("due", "")], "reason: a to-do needs a reason"),
        (vec![("reason", "call"), ("due", "31/12/2026")], "is not a date (YYYY-MM-DD)"),
        (vec![("reason", "call"), ("customer", "cus_nope")], "customer: no customer cus_nope"),
    ] {
        let mut form = form;
        form.push(("csrf_token", &token));
        let (status, _, body) = post(&op, &app, "/admin/todos", &form).await;
        assert_eq!(status, 422, "{form:?}");
        assert!(body.contains(says), "{says} missing: {body}");
    }
    assert!(todo_ids(&app).await.is_empty());

    let (status, loc, _) = post(
        &op,
        &app,
        "/admin/todos",
        &[("csrf_token", &token), ("reason", "Call about onboarding"), ("customer", &cus)],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/admin/todos"));
    // One already overdue (due yesterday in the business zone).
    let yesterday = j1msky_core::clock::format_utc(app.now() - 86_400_000_000)[..10].to_string();
    post(&op, &app, "/admin/todos", &[("csrf_token", &token), ("reason", "Late one"), ("due", &yesterday)]).await;
    let ids = todo_ids(&app).await;
    assert_eq!(ids.len(), 2);

    // The counts are in the header of every admin page.
    for page in ["/admin", "/admin/events", "/admin/gateway", "/admin/todos"] {
        let (status, html) = get(&op, &app, page).await;
        assert_eq!(status, 200, "{page}");
        assert!(html.contains("To-dos: 2 open · 1 overdue"), "{page}: {html}");
    }
    let (_, page) = get(&op, &app, "/admin/todos").await;
    assert!(page.contains("Call about onboarding") && page.contains(&format!("/admin/customers/{cus}")), "{page}");
    let (_, overdue) = get(&op, &app, "/admin/todos?filter=overdue").await;
    assert!(overdue.contains("Late one") && !overdue.contains("Call about onboarding"), "{overdue}");
    let (status, body) = get(&op, &app, "/admin/todos?filter=nonsense").await;
    assert!(status == 400 && body.contains("nonsense"), "{body}");

    // Assign: only to an operator.
    let assign = format!("/admin/todos/{}/assign", ids[0]);
    let (status, _, body) = post(&op, &app, &assign, &[("csrf_token", &token), ("to", "owner@acme.test")]).await;
    assert!(status == 422 && body.contains("not an active operator"), "{status} {body}");
    let (status, _, _) = post(&op, &app, &assign, &[("csrf_token", &token), ("to", OPERATOR_EMAIL)]).await;
    assert_eq!(status, 303);
    // Done, twice: the second says so.
    let done = format!("/admin/todos/{}/done", ids[1]);
    assert_eq!(post(&op, &app, &done, &[("csrf_token", &token)]).await.0, 303);
    let (status, _, body) = post(&op, &app, &done, &[("csrf_token", &token)]).await;
    assert!(status == 409 && body.contains("already done"), "{body}");
    let (_, html) = get(&op, &app, "/admin").await;
    assert!(html.contains("To-dos: 1 open · 0 overdue"), "{html}");
    let (_, done_page) = get(&op, &app, "/admin/todos?filter=done").await;
    assert!(done_page.contains("Late one") && done_page.contains(&format!("by {OPERATOR_EMAIL}")), "{done_page}");
    let (_, open_page) = get(&op, &app, "/admin/todos").await;
    assert!(open_page.contains(OPERATOR_EMAIL), "assignee shown: {open_page}");
    // Reopen.
    assert_eq!(post(&op, &app, &format!("/admin/todos/{}/reopen", ids[1]), &[("csrf_token", &token)]).await.0, 303);
    let (_, html) = get(&op, &app, "/admin").await;
    assert!(html.contains("To-dos: 2 open"), "{html}");
    assert_eq!(post(&op, &app, "/admin/todos/todo_nope/done", &[("csrf_token", &token)]).await.0, 404);

    // A customer's user sees neither the page nor the counts.
    let owner = app.browser();
    app.login(&owner, "owner@acme.test", PASSWORD).await;
    let (status, body) = get(&owner, &app, "/admin/todos").await;
    assert_ne!(status, 200);
    assert!(!body.contains("To-dos:"), "{body}");
    let (_, home) = get(&owner, &app, "/app").await;
    assert!(!home.contains("To-dos:"), "{home}");
}

async fn survey_link(app: &TestApp, cus: &str, kind: SurveyKind) -> surveys::Link {
    let mut tx = app.db.begin().await.unwrap();
    let link = surveys::create(&mut tx, cus, kind, app.now()).await.unwrap();
    tx.commit().await.unwrap();
    link
}

#[tokio::test]
async fn an_nps_link_is_answered_once_without_login_and_forged_links_are_404() {
    let app = spawn_app().await;
    let cus = app.customer_with_owner("Acme", "owner@acme.test").await;
    let link = survey_link(&app, &cus, SurveyKind::Nps).await;
    let path = format!("/s/{}", link.token);
    let visitor = app.browser();
    let (status, html) = get(&visitor, &app, &path).await;
    assert_eq!(status, 200);
    assert!(html.contains("How likely are you to recommend"), "{html}");
    let token = csrf_token(&html);

    // The form needs its CSRF token (the double-submit cookie the page set).
    assert_eq!(post(&visitor, &app, &path, &[("score", "9")]).await.0, 403);
    assert_eq!(post(&app.browser(), &app, &path, &[("score", "9"), ("csrf_token", &token)]).await.0, 403);
    for (score, says) in [
        ("", "score: pick a score from 0 to 10"),
        ("11", "is not a score from 0 to 10"),
        ("nine", "is not a score from 0 to 10"),
    ] {
        let (status, _, body) = post(&visitor, &app, &path, &[("score", score), ("csrf_token", &token)]).await;
        assert_eq!(status, 422, "{score}");
        assert!(body.contains(says), "{says}: {body}");
    }
    let (status, _, body) = post(
        &visitor,
        &app,
        &path,
        &[
            ("score", "10"),
            ("comment", "Saves us hours"),
            ("testimonial", "Our support runs itself"),
            ("consent", "1"),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("Thank you"), "{body}");
    // Answered once: a second answer is refused clearly; the page says it was answered.
    let (status, _, body) = post(&visitor, &app, &path, &[("score", "0"), ("csrf_token", &token)]).await;
    assert!(status == 409 && body.contains("already been answered"), "{status} {body}");
    let (_, again) = get(&visitor, &app, &path).await;
    assert!(again.contains("Thank you"), "{again}");
    let events: Vec<(String, String)> =
        sqlx::query("SELECT kind, payload FROM events WHERE kind LIKE 'survey.%' ORDER BY id")
            .fetch_all(app.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    let mut kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["survey.nps_answered", "survey.testimonial_given"]);
    assert!(events.iter().any(|e| e.0 == "survey.nps_answered" && e.1.contains("\"score\":10")), "{events:?}");

    // Forged tokens: 404, and the one answer stands.
    let mut forged = link.token.clone().into_bytes();
    forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(get(&visitor, &app, &format!("/s/{forged}")).await.0, 404);
    assert_eq!(post(&visitor, &app, &format!("/s/{forged}"), &[("score", "1"), ("csrf_token", &token)]).await.0, 404);
    assert_eq!(get(&visitor, &app, "/s/short").await.0, 404);

    // The testimonial waits for the operator, who approves it.
    let (op, op_token) = operator(&app).await;
    let (_, admin) = get(&op, &app, "/admin/lifecycle/surveys").await;
    assert!(admin.contains("Our support runs itself") && admin.contains("Approve for publishing"), "{admin}");
    let approve = format!("/admin/lifecycle/surveys/{}/approve", link.survey_id);
    assert_eq!(post(&op, &app, &approve, &[]).await.0, 403);
    assert_eq!(post(&op, &app, &approve, &[("csrf_token", &op_token)]).await.0, 303);
    let (status, _, body) = post(&op, &app, &approve, &[("csrf_token", &op_token)]).await;
    assert!(status == 409 && body.contains("approved already"), "{body}");
    let (_, admin) = get(&op, &app, "/admin/lifecycle/surveys").await;
    assert!(admin.contains("No testimonial waits") && admin.contains("approved"), "{admin}");
    // A customer cannot approve.
    let owner = app.browser();
    app.login(&owner, "owner@acme.test", PASSWORD).await;
    let owner_token = app.page_token(&owner, "/app").await;
    assert_ne!(post(&owner, &app, &approve, &[("csrf_token", &owner_token)]).await.0, 303);
}

#[tokio::test]
async fn guessing_survey_links_is_throttled_per_address() {
    let app = spawn_app().await;
    let guesser = app.browser();
    let mut last = 0;
    for i in 0..25 {
        last = get(&guesser, &app, &format!("/s/{:0>43}", i)).await.0;
    }
    assert_eq!(last, 429);
}

async fn lifecycle_ctx(app: &TestApp) -> Ctx {
    Ctx {
        db: app.db.clone(),
        catalogue: app.catalogue.clone().into(),
        clock: Arc::new(app.clock.clone()),
        transport: Arc::new(Recording::default()),
        stripe: None,
        base_url: app.base.clone(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    }
}

#[tokio::test]
async fn the_operator_composes_previews_and_sends_a_newsletter_queued_once_per_recipient() {
    let app = spawn_app_with_mail().await;
    let mut recipients = Vec::new();
    for i in 0..3 {
        let input = customers::NewCustomer {
            name: format!("C{i}"),
            contact_email: Some(format!("c{i}@x.test")),
            ..Default::default()
        };
        recipients.push(customers::create(&app.db, &app.catalogue, &Actor::cli(), input, app.now()).await.unwrap().id);
    }
    let (op, token) = operator(&app).await;
    let list = "/admin/lifecycle/newsletter";
    let (status, page) = get(&op, &app, list).await;
    assert!(status == 200 && page.contains("Goes to 3 customer(s)"), "{page}");

    for (subject, body, says) in
        [("", "b", "subject: a newsletter needs a subject"), ("s", "", "body: a newsletter needs a body")]
    {
        let (status, _, html) =
            post(&op, &app, list, &[("csrf_token", &token), ("subject", subject), ("body", body)]).await;
        assert!(status == 422 && html.contains(says), "{says}: {html}");
    }
    let long = "x".repeat(201);
    let (status, _, html) = post(&op, &app, list, &[("csrf_token", &token), ("subject", &long), ("body", "b")]).await;
    assert!(status == 422 && html.contains("at most 200"), "{html}");

    let body =
        "# Case study\n\nHow **Acme** answers tickets: [read it](https://example.com/acme).\n\n<script>x</script>";
    let (status, loc, _) =
        post(&op, &app, list, &[("csrf_token", &token), ("subject", "November news"), ("body", body)]).await;
    assert_eq!(status, 303);
    let id = loc.rsplit('/').next().unwrap().to_string();
    let (_, preview) = get(&op, &app, &loc).await;
    assert!(preview.contains("<h2>Case study</h2>") && preview.contains("<strong>Acme</strong>"), "{preview}");
    assert!(preview.contains("&lt;script&gt;") && !preview.contains("<script>x"), "{preview}");
    assert!(preview.contains("Office hours:") && preview.contains("meet.example.com"), "{preview}");
    assert!(preview.contains("Send this to 3 customer(s)"), "{preview}");

    // A test send: to one address (checked), nothing queued.
    let test = format!("{loc}/send-test");
    let (status, _, html) = post(&op, &app, &test, &[("csrf_token", &token), ("to", "not an address")]).await;
    assert!(status == 422 && html.contains("is not an email address"), "{html}");
    let (status, _) = (post(&op, &app, &test, &[("to", "op@agency.test")]).await.0, ());
    assert_eq!(status, 403, "the test send needs the CSRF token");
    let (status, _, html) = post(&op, &app, &test, &[("csrf_token", &token), ("to", "op@agency.test")]).await;
    assert!(status == 200 && html.contains("test sent to op@agency.test"), "{html}");
    let none: i64 =
        sqlx::query("SELECT COUNT(*) FROM lifecycle_messages").fetch_one(app.db.pool()).await.unwrap().get(0);
    assert_eq!(none, 0);

    // Send needs the confirmation.
    let send = format!("{loc}/send");
    let (status, _, html) = post(&op, &app, &send, &[("csrf_token", &token)]).await;
    assert!(status == 422 && html.contains("confirm: tick the box"), "{html}");
    assert_eq!(post(&op, &app, &send, &[("csrf_token", &token), ("confirm", "yes")]).await.0, 303);
    let (status, _, html) = post(&op, &app, &send, &[("csrf_token", &token), ("confirm", "yes")]).await;
    assert!(status == 409 && html.contains("sent already"), "{html}");

    // The timer queues the batches; a second run queues nothing more.
    let ctx = lifecycle_ctx(&app).await;
    let handlers = j1msky_lifecycle::timer_handlers(&ctx);
    j1msky_db::timers::run_due_once(&app.db, &handlers, app.now()).await.unwrap();
    j1msky_db::timers::run_due_once(&app.db, &handlers, app.now()).await.unwrap();
    newsletter::queue_batch(&ctx, &id, app.now(), None).await.unwrap();
    let queued: Vec<(String, String)> =
        sqlx::query("SELECT customer_id, body_html FROM lifecycle_messages WHERE source = $1 ORDER BY customer_id")
            .bind(format!("newsletter:{id}"))
            .fetch_all(app.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    recipients.sort();
    assert_eq!(queued.iter().map(|q| q.0.clone()).collect::<Vec<_>>(), recipients);
    assert!(queued[0].1.contains("<strong>Acme</strong>") && queued[0].1.contains("Office hours:"));
    let (_, progress) = get(&op, &app, &loc).await;
    assert!(progress.contains("3 queued · 0 sent") && !progress.contains("Send this to"), "{progress}");
    let (_, list_page) = get(&op, &app, list).await;
    assert!(list_page.contains("November news"), "{list_page}");
}

#[tokio::test]
async fn without_mail_the_newsletter_page_says_it_cannot_preview_or_send() {
    let app = spawn_app().await;
    let (op, token) = operator(&app).await;
    let (status, loc, _) = post(
        &op,
        &app,
        "/admin/lifecycle/newsletter",
        &[("csrf_token", &token), ("subject", "News"), ("body", "Hello")],
    )
    .await;
    assert_eq!(status, 303);
    let (_, page) = get(&op, &app, &loc).await;
    assert!(page.contains("mail is not configured on this server") && !page.contains("Send this to"), "{page}");
}
