// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! `/admin/lifecycle/messages` (filters, bodies shown escaped, the `.eml` the file
//! transport wrote), `/admin/lifecycle/suppressions` (add/remove, CSRF, audit) and the
//! public one-click unsubscribe `/u/{token}` (GET changes nothing, POST works without a
//! cookie or CSRF token, forged tokens are 404 and throttled), over real HTTP on loopback.

use std::sync::Arc;

use j1msky_accounts::users;
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::UserRole;
use j1msky_core::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_lifecycle::delivery::{self, Category, NewMessage};
use j1msky_lifecycle::templates::Rendered;
use j1msky_lifecycle::transport::Files;
use j1msky_web::{AppState, WebConfig};

const PASSWORD: &str = "correct horse battery";

struct App {
    base: String,
    db: j1msky_db::Db,
    ctx: j1msky_lifecycle::Ctx,
    customer: String,
    mail_dir: tempfile::TempDir,
    _db: TestDb,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn() -> App {
    let t = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let clock = ManualClock::new(1_795_000_000_000_000);
    let mail_dir = tempfile::tempdir().unwrap();
    let ctx = j1msky_lifecycle::Ctx {
        db: t.db.clone(),
        catalogue: catalogue.clone().into(),
        clock: Arc::new(clock.clone()),
        transport: Arc::new(Files::new(mail_dir.path().join("mail"))),
        stripe: None,
        base_url: "https://app.example.com".into(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    };
    let state = AppState::new(t.db.clone(), catalogue.clone(), Arc::new(clock.clone()), WebConfig::default())
        .with_lifecycle(ctx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = j1msky_web::serve(listener, state, async move {
            let _ = rx.await;
        })
        .await;
    });
    let input = j1msky_accounts::customers::NewCustomer {
        name: "Acme".into(),
        contact_email: Some("billing@acme.test".into()),
        ..Default::default()
    };
    let customer = j1msky_accounts::customers::create(&t.db, &catalogue, &Actor::cli(), input, 1).await.unwrap().id;
    for (email, role, customer_id) in
        [("op@agency.test", UserRole::Operator, None), ("cust@acme.test", UserRole::Owner, Some(customer.clone()))]
    {
        let user = users::NewUser {
            email: email.into(),
            display_name: "U".into(),
            password: PASSWORD.into(),
            role,
            customer_id,
        };
        users::create(&t.db, &Actor::cli(), user, 2).await.unwrap();
    }
    App { base: format!("http://{addr}"), db: t.db.clone(), ctx, customer, mail_dir, _db: t, _stop: tx }
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn login(&self, email: &str) -> reqwest::Client {
        let c =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let page = c.get(self.url("/login")).send().await.unwrap().text().await.unwrap();
        let token = csrf_token(&page);
        let r = c
            .post(self.url("/login"))
            .form(&[("email", email), ("password", PASSWORD), ("csrf_token", &token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "login of {email}");
        c
    }

    async fn get(&self, c: &reqwest::Client, path: &str) -> (u16, String) {
        let r = c.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, c: &reqwest::Client, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = c.post(self.url(path)).form(form).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Queues one message and lets the sender write it to the mail dir.
    async fn sent_message(&self, subject: &str, html: &str) -> String {
        let rendered = Rendered { subject: subject.into(), text: format!("Text of {subject}"), html: html.into() };
        let mut conn = self.db.pool().acquire().await.unwrap();
        let id = delivery::enqueue(
            &mut conn,
            self.db.backend(),
            &NewMessage {
                customer_id: &self.customer,
                source: &format!("test:{subject}"),
                step: "only",
                occurrence: 0,
                category: Category::Transactional,
                template: "welcome",
                rendered: &rendered,
                not_before: 0,
                stale_at: None,
            },
            10,
        )
        .await
        .unwrap()
        .unwrap();
        drop(conn);
        let pass = delivery::send_due_once(&self.ctx, "test", j1msky_core::Clock::now_micros(&*self.ctx.clock), 10)
            .await
            .unwrap();
        assert_eq!(pass.sent, 1, "{pass:?}");
        id
    }

    async fn consents(&self, category: Category) -> bool {
        delivery::consents(&self.db, &self.customer, category).await.unwrap()
    }
}

fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).map(|i| i + marker.len()).expect("page has a csrf_token field");
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_string()
}

#[tokio::test]
async fn the_operator_sees_messages_filtered_with_bodies_escaped_and_the_eml_file() {
    let app = spawn().await;
    let id = app.sent_message("Welcome aboard", "<html><body><p>Hi</p><script>alert(1)</script></body></html>").await;
    // A second one still queued (due in the future).
    let rendered = Rendered { subject: "Later one".into(), text: "t".into(), html: "<p>h</p>".into() };
    let mut conn = app.db.pool().acquire().await.unwrap();
    delivery::enqueue(
        &mut conn,
        app.db.backend(),
        &NewMessage {
            customer_id: &app.customer,
            source: "test:later",
            step: "only",
            occurrence: 0,
            category: Category::Onboarding,
            template: "welcome",
            rendered: &rendered,
            not_before: i64::MAX / 2,
            stale_at: None,
        },
        20,
    )
    .await
    .unwrap()
    .unwrap();
    drop(conn);

    let op = app.login("op@agency.test").await;
    let (status, list) = app.get(&op, "/admin/lifecycle/messages").await;
    assert_eq!(status, 200);
    assert!(list.contains("Welcome aboard") && list.contains("Later one"), "{list}");
    assert!(list.contains(&format!("/admin/lifecycle/messages/{id}")), "{list}");
    let (_, sent) = app.get(&op, "/admin/lifecycle/messages?state=sent").await;
    assert!(sent.contains("Welcome aboard") && !sent.contains("Later one"), "{sent}");
    let (_, queued) = app.get(&op, "/admin/lifecycle/messages?state=queued").await;
    assert!(!queued.contains("Welcome aboard") && queued.contains("Later one"), "{queued}");
    let (_, other) = app.get(&op, "/admin/lifecycle/messages?customer=cus_nobody").await;
    assert!(!other.contains("Welcome aboard") && other.contains("No message"), "{other}");
    let (_, mine) = app.get(&op, &format!("/admin/lifecycle/messages?customer={}", app.customer)).await;
    assert!(mine.contains("Welcome aboard"), "{mine}");
    let (status, bad) = app.get(&op, "/admin/lifecycle/messages?state=%3Cnonsense%3E").await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad.contains("state: `&lt;nonsense&gt;` is not one of"), "{bad}");

    // One message: the bodies are escaped (never injected), the .eml is shown.
    let (status, page) = app.get(&op, &format!("/admin/lifecycle/messages/{id}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(!page.contains("<script>alert(1)</script>"), "raw HTML injected: {page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;") || page.contains("&lt;script&gt;alert(1)"));
    assert!(page.contains("sandbox=\"\""), "{page}");
    assert!(page.contains("Text of Welcome aboard"), "{page}");
    let message = delivery::get(&app.db, &id).await.unwrap().message;
    assert_eq!(message.state, "sent");
    assert!(page.contains(&message.message_id), "{page}");
    let file = app.mail_dir.path().join("mail").join(Files::file_name(&message.message_id));
    assert!(file.exists(), "{file:?}");
    let shown = file.display().to_string().replace('/', "&#x2f;");
    assert!(page.contains(&shown), "the .eml path is shown: {page}");
    assert!(page.contains("Subject: Welcome aboard"), "the .eml text is shown: {page}");
    let (status, _) = app.get(&op, "/admin/lifecycle/messages/msg_nope").await;
    assert_eq!(status, 404);

    // The nav's Lifecycle pages link to each other, and each link works.
    let (_, journeys) = app.get(&op, "/admin/lifecycle").await;
    for link in [
        "/admin/lifecycle/messages",
        "/admin/lifecycle/suppressions",
        "/admin/lifecycle/surveys",
        "/admin/lifecycle/newsletter",
        "/admin/todos",
    ] {
        assert!(journeys.contains(&format!("href=\"{link}\"")), "{link} missing on /admin/lifecycle");
        assert_eq!(app.get(&op, link).await.0, 200, "{link}");
    }

    // Not an operator: no message is shown.
    let cust = app.login("cust@acme.test").await;
    let (status, body) = app.get(&cust, &format!("/admin/lifecycle/messages/{id}")).await;
    assert!(status == 403 || status == 404, "{status}");
    assert!(!body.contains("Welcome aboard"));
    let anon = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (status, body) = app.get(&anon, "/admin/lifecycle/messages").await;
    assert!(status == 303 || status == 401 || status == 403, "{status}");
    assert!(!body.contains("Welcome aboard"));
}

#[tokio::test]
async fn suppressions_are_added_and_removed_with_csrf_and_audit() {
    let app = spawn().await;
    let op = app.login("op@agency.test").await;
    let (status, page) = app.get(&op, "/admin/lifecycle/suppressions").await;
    assert_eq!(status, 200);
    assert!(page.contains("No address is suppressed"), "{page}");
    let token = csrf_token(&page);

    // No CSRF token: refused, nothing stored.
    let (status, _) = app.post(&op, "/admin/lifecycle/suppressions", &[("email", "x@y.test")]).await;
    assert_eq!(status, 403);
    let (status, _) =
        app.post(&op, "/admin/lifecycle/suppressions", &[("email", "x@y.test"), ("csrf_token", "forged")]).await;
    assert_eq!(status, 403);
    // Bad input named.
    let (status, body) =
        app.post(&op, "/admin/lifecycle/suppressions", &[("email", "not-an-address"), ("csrf_token", &token)]).await;
    assert_eq!(status, 422);
    assert!(body.contains("email: `not-an-address` is not an email address"), "{body}");
    let long = "d".repeat(501);
    let (status, body) = app
        .post(&op, "/admin/lifecycle/suppressions", &[("email", "x@y.test"), ("detail", &long), ("csrf_token", &token)])
        .await;
    assert!(status == 422 && body.contains("detail: at most 500"), "{body}");
    assert!(delivery::suppressions(&app.db, 10).await.unwrap().is_empty());

    let (status, _) = app
        .post(
            &op,
            "/admin/lifecycle/suppressions",
            &[("email", "Bounce@Acme.test"), ("detail", "asked by phone"), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(status, 303);
    assert!(delivery::is_suppressed(&app.db, "bounce@acme.test").await.unwrap());
    let (_, page) = app.get(&op, "/admin/lifecycle/suppressions").await;
    assert!(page.contains("bounce@acme.test") && page.contains("asked by phone"), "{page}");

    // Remove: without the token refused; then removed; a second removal says it is not there.
    let (status, _) = app.post(&op, "/admin/lifecycle/suppressions/remove", &[("email", "bounce@acme.test")]).await;
    assert_eq!(status, 403);
    assert!(delivery::is_suppressed(&app.db, "bounce@acme.test").await.unwrap());
    let form = [("email", "bounce@acme.test"), ("csrf_token", token.as_str())];
    assert_eq!(app.post(&op, "/admin/lifecycle/suppressions/remove", &form).await.0, 303);
    assert!(!delivery::is_suppressed(&app.db, "bounce@acme.test").await.unwrap());
    let (status, body) = app.post(&op, "/admin/lifecycle/suppressions/remove", &form).await;
    assert!(status == 404 && body.contains("not on the suppression list"), "{body}");

    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'lifecycle.%suppress' ORDER BY action")
            .fetch_all(app.db.pool())
            .await
            .unwrap();
    assert_eq!(actions, vec!["lifecycle.suppress", "lifecycle.unsuppress"]);

    // A customer cannot touch the list.
    let cust = app.login("cust@acme.test").await;
    let (_, home) = app.get(&cust, "/app").await;
    let ctoken = if home.contains("csrf_token") { csrf_token(&home) } else { String::new() };
    let (status, _) =
        app.post(&cust, "/admin/lifecycle/suppressions", &[("email", "z@z.test"), ("csrf_token", &ctoken)]).await;
    assert!(status == 403 || status == 404, "{status}");
    assert!(!delivery::is_suppressed(&app.db, "z@z.test").await.unwrap());
}

#[tokio::test]
async fn one_click_unsubscribe_needs_a_post_takes_no_cookie_and_refuses_forged_links() {
    let app = spawn().await;
    let token = delivery::unsubscribe_token(&app.db, &app.customer, Category::Onboarding, 5).await.unwrap();
    let path = format!("/u/{token}");
    // A mail client: no cookies, no CSRF token.
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // GET (what a link scanner does) shows a confirm button and changes nothing.
    for _ in 0..2 {
        let (status, page) = app.get(&client, &path).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains(&format!("action=\"{path}\"")) && page.contains("onboarding"), "{page}");
    }
    assert!(app.consents(Category::Onboarding).await);

    // The RFC 8058 one-click POST.
    let r = client
        .post(app.url(&path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("You are unsubscribed"));
    assert!(!app.consents(Category::Onboarding).await);
    assert!(app.consents(Category::Retention).await, "only the token's category");
    let audited: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'lifecycle.unsubscribe'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(audited, 1);

    // Transactional mail cannot be unsubscribed from; a forged or garbled token is a bare 404.
    let transactional = delivery::unsubscribe_token(&app.db, &app.customer, Category::Transactional, 5).await.unwrap();
    let (payload, _) = token.split_once('.').unwrap();
    let other_customer = format!("{}.{}", payload, "A".repeat(24));
    for bad in [transactional.as_str(), other_customer.as_str(), "garbage", "a.b"] {
        let (status, body) = app.get(&client, &format!("/u/{bad}")).await;
        assert_eq!(status, 404, "{bad}");
        assert!(body.contains("This link is not valid.") && !body.contains(&app.customer), "{body}");
        let r = client.post(app.url(&format!("/u/{bad}"))).form(&[("List-Unsubscribe", "One-Click")]).send().await;
        assert_eq!(r.unwrap().status(), 404, "{bad}");
    }
    assert!(app.consents(Category::Retention).await);

    // The exemption is exactly /u/{token}: any other form POST without a token is refused.
    let r = client.post(app.url("/u/a/b")).form(&[("x", "y")]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = client.post(app.url("/admin/lifecycle/suppressions")).form(&[("email", "a@b.test")]).send().await.unwrap();
    assert_eq!(r.status(), 403);

    // Guessing is throttled per client address: after 20 bad tokens even a good link waits.
    for i in 0..20 {
        let (status, _) = app.get(&client, &format!("/u/guess{i}.x")).await;
        assert!(status == 404 || status == 429, "{status}");
    }
    let (status, body) = app.get(&client, &path).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Too many invalid links"), "{body}");
}

#[tokio::test]
async fn the_operator_requeues_an_unknown_message_after_confirming_it_may_arrive_twice() {
    let app = spawn().await;
    let sent = app.sent_message("Already sent", "<p>h</p>").await;
    let unknown = app.sent_message("Maybe arrived", "<p>h</p>").await;
    sqlx::query("UPDATE lifecycle_messages SET state = 'unknown', last_error = 'connection lost' WHERE id = $1")
        .bind(&unknown)
        .execute(app.db.pool())
        .await
        .unwrap();
    let state = |id: String| {
        let db = app.db.clone();
        async move { delivery::get(&db, &id).await.unwrap().message.state }
    };
    let path = format!("/admin/lifecycle/messages/{unknown}/requeue");

    // A customer cannot, and the form needs its CSRF token.
    let cust = app.login("cust@acme.test").await;
    let (_, any) = app.get(&cust, "/app").await;
    let (status, _) = app.post(&cust, &path, &[("csrf_token", &csrf_token(&any)), ("confirm", "yes")]).await;
    assert!(status == 403 || status == 404, "{status}");
    let op = app.login("op@agency.test").await;
    let (status, _) = app.post(&op, &path, &[("confirm", "yes")]).await;
    assert_eq!(status, 403);
    assert_eq!(state(unknown.clone()).await, "unknown");

    // The button is on the unknown row only, with the warning; without the box ticked, nothing.
    let (_, list) = app.get(&op, "/admin/lifecycle/messages").await;
    assert!(list.contains(&format!("action=\"{path}\"")), "{list}");
    assert!(!list.contains(&format!("/admin/lifecycle/messages/{sent}/requeue")), "{list}");
    assert!(list.contains("may already have received this message"), "{list}");
    let (_, one) = app.get(&op, &format!("/admin/lifecycle/messages/{unknown}")).await;
    assert!(one.contains(&format!("action=\"{path}\"")), "{one}");
    let (_, other) = app.get(&op, &format!("/admin/lifecycle/messages/{sent}")).await;
    assert!(!other.contains("/requeue"), "{other}");
    let token = csrf_token(&list);
    let (status, page) = app.post(&op, &path, &[("csrf_token", &token)]).await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("may get this message twice"), "{page}");
    assert_eq!(state(unknown.clone()).await, "unknown");

    let (status, _) = app.post(&op, &path, &[("csrf_token", &token), ("confirm", "yes")]).await;
    assert_eq!(status, 303);
    assert_eq!(state(unknown.clone()).await, "queued");
    let audit = j1msky_audit::audit::list(&app.db, Some(&app.customer), 50).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "lifecycle.message_requeue" && a.subject == unknown));

    // A sent message is refused, and stays sent.
    let (status, page) = app
        .post(&op, &format!("/admin/lifecycle/messages/{sent}/requeue"), &[("csrf_token", &token), ("confirm", "yes")])
        .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("only unknown or failed messages can be requeued"), "{page}");
    assert_eq!(state(sent).await, "sent");
}

/// The pages a catalogue mail link may name by path (`lifecycle.delivery.links`,
/// checked by `config check`) are really served to a signed-in customer.
#[tokio::test]
async fn every_path_a_mail_link_may_name_is_served() {
    let app = spawn().await;
    let cust = app.login("cust@acme.test").await;
    for path in j1msky_core::catalogue::lifecycle::SERVED_PATHS {
        let r = cust.get(app.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        assert!(status != 404 && status != 405 && status < 500 || status == 503, "{path}: {status}");
        if status == 303 {
            let to = r.headers()["location"].to_str().unwrap().to_string();
            assert!(!to.starts_with("/login"), "{path} sends a signed-in customer to {to}");
        }
    }
    let missing = cust.get(app.url("/help/setup-video")).send().await.unwrap().status().as_u16();
    assert_eq!(missing, 404, "the old links pointed at pages that do not exist");
}
