// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! `/admin/lifecycle`: journeys with their counts, a template preview with the sample
//! context or a customer's own, and a CSRF-protected test send (operator only), over
//! real HTTP on loopback.

use std::sync::Arc;

use j1msky_accounts::users;
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::UserRole;
use j1msky_core::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_lifecycle::transport::Recording;
use j1msky_web::{AppState, WebConfig};

const PASSWORD: &str = "correct horse battery";

struct App {
    base: String,
    db: j1msky_db::Db,
    sent: Arc<Recording>,
    _db: TestDb,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn() -> App {
    let t = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let clock = ManualClock::new(1_795_000_000_000_000);
    let sent = Arc::new(Recording::default());
    let ctx = j1msky_lifecycle::Ctx {
        db: t.db.clone(),
        catalogue: catalogue.clone().into(),
        clock: Arc::new(clock.clone()),
        transport: sent.clone(),
        stripe: None,
        base_url: "https://app.example.com".into(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    };
    let state =
        AppState::new(t.db.clone(), catalogue, Arc::new(clock.clone()), WebConfig::default()).with_lifecycle(ctx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = j1msky_web::serve(listener, state, async move {
            let _ = rx.await;
        })
        .await;
    });
    for (email, role) in [("op@agency.test", UserRole::Operator), ("cust@acme.test", UserRole::Owner)] {
        let customer_id = if role == UserRole::Owner {
            let input = j1msky_accounts::customers::NewCustomer { name: "Acme".into(), ..Default::default() };
            let cat = Catalogue::from_json_str(SHIPPED).unwrap();
            Some(j1msky_accounts::customers::create(&t.db, &cat, &Actor::cli(), input, 1).await.unwrap().id)
        } else {
            None
        };
        let user = users::NewUser {
            email: email.into(),
            display_name: "U".into(),
            password: PASSWORD.into(),
            role,
            customer_id,
        };
        users::create(&t.db, &Actor::cli(), user, 2).await.unwrap();
    }
    App { base: format!("http://{addr}"), db: t.db.clone(), sent, _db: t, _stop: tx }
}

fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).map(|i| i + marker.len()).expect("page has a csrf_token field");
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_string()
}

async fn browser(app: &App, email: &str) -> reqwest::Client {
    let b = reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = b.get(format!("{}/login", app.base)).send().await.unwrap().text().await.unwrap();
    let token = csrf_token(&form);
    let r = b
        .post(format!("{}/login", app.base))
        .form(&[("csrf_token", token.as_str()), ("email", email), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    b
}

#[tokio::test]
async fn the_operator_sees_journeys_previews_a_template_and_sends_a_test() {
    let app = spawn().await;
    let op = browser(&app, "op@agency.test").await;
    let page = op.get(format!("{}/admin/lifecycle", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for j in ["activation", "checkin", "optimisation", "month_one", "welcome"] {
        assert!(html.contains(&format!("<code>{j}</code>")), "{j} missing");
    }

    // The sample preview, then the customer's own (their name in it).
    let cus: String = sqlx::query_scalar("SELECT id FROM customers").fetch_one(app.db.pool()).await.unwrap();
    let sample =
        op.get(format!("{}/admin/lifecycle?template=welcome", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(sample.contains("Welcome to j1msky agent teams, Sample Co"), "{sample}");
    let own = op
        .get(format!("{}/admin/lifecycle?template=week_in_review&customer={cus}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(own.contains("Hello Acme") && own.contains("ran 0 task(s)"), "{own}");
    // A template that does not exist is named, not a 500.
    let missing = op.get(format!("{}/admin/lifecycle?template=..%2Fsecrets", app.base)).send().await.unwrap();
    assert_eq!(missing.status(), 200);
    assert!(missing.text().await.unwrap().contains("a template name is letters, digits and"));

    // The test send: refused without the CSRF token, refused for a bad address, sent once with both.
    let url = format!("{}/admin/lifecycle/send-test", app.base);
    let no_token = op.post(&url).form(&[("template", "welcome"), ("to", "me@example.com")]).send().await.unwrap();
    assert_eq!(no_token.status(), 403);
    assert!(app.sent.sent().is_empty());
    let token = csrf_token(&sample);
    let bad = op
        .post(&url)
        .form(&[("csrf_token", token.as_str()), ("template", "welcome"), ("to", "me@example.com\r\nBcc: x@evil.test")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(app.sent.sent().is_empty());
    let ok = op
        .post(&url)
        .form(&[("csrf_token", token.as_str()), ("template", "welcome"), ("to", "me@example.com"), ("customer", &cus)])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("test of welcome sent to me@example.com"));
    let sent = app.sent.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "me@example.com");
    let raw = String::from_utf8(sent[0].raw.clone()).unwrap();
    assert!(raw.contains("Subject: [test] Welcome to j1msky agent teams, Acme"), "{raw}");
    assert!(raw.contains("text/plain") && raw.contains("text/html"));
    let queued: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM lifecycle_messages").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(queued, 0, "a test send queues nothing");

    // A customer is not let in.
    let customer = browser(&app, "cust@acme.test").await;
    let refused = customer.get(format!("{}/admin/lifecycle", app.base)).send().await.unwrap();
    assert!(refused.status().is_client_error() || refused.status().is_redirection(), "{}", refused.status());
}
