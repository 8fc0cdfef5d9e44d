//! `spawn_app()`: the real server on port 0 with a fresh database on the engine the
//! test run selects, and a manual clock.

#![allow(dead_code)]

use std::sync::Arc;

use j1msky_accounts::{customers, users, Actor};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::{Stage, UserRole};
use j1msky_core::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_web::{AppState, WebConfig};

pub const OPERATOR_EMAIL: &str = "op@agency.test";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub base: String,
    pub db: j1msky_db::Db,
    pub clock: ManualClock,
    pub catalogue: Arc<Catalogue>,
    _test_db: TestDb,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(WebConfig::default()).await
}

pub async fn spawn_app_with(config: WebConfig) -> TestApp {
    let test_db = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("shipped catalogue"));
    let clock = ManualClock::new(1_795_000_000_000_000);
    let state = AppState::new(test_db.db.clone(), catalogue.clone(), Arc::new(clock.clone()), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = j1msky_web::serve(listener, state, async move {
            let _ = rx.await;
        })
        .await;
    });
    let app = TestApp {
        base: format!("http://{addr}"),
        db: test_db.db.clone(),
        clock,
        catalogue,
        _test_db: test_db,
        _shutdown: tx,
    };
    users::create(
        &app.db,
        &Actor::cli(),
        users::NewUser {
            email: OPERATOR_EMAIL.into(),
            display_name: "Op".into(),
            password: PASSWORD.into(),
            role: UserRole::Operator,
            customer_id: None,
        },
        app.clock.now(),
    )
    .await
    .expect("operator");
    app
}

trait Now {
    fn now(&self) -> i64;
}
impl Now for ManualClock {
    fn now(&self) -> i64 {
        j1msky_core::Clock::now_micros(self)
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A browser: cookie store, no automatic redirects.
    pub fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// A customer with an owner, made directly in the database (not the story under test).
    pub async fn customer_with_owner(&self, name: &str, owner_email: &str) -> String {
        let c = customers::create(
            &self.db,
            &self.catalogue,
            &Actor::cli(),
            customers::NewCustomer {
                name: name.into(),
                stage: Some(Stage::Active),
                plan: Some("pro".into()),
                ..Default::default()
            },
            self.now(),
        )
        .await
        .expect("customer");
        users::create(
            &self.db,
            &Actor::cli(),
            users::NewUser {
                email: owner_email.into(),
                display_name: String::new(),
                password: PASSWORD.into(),
                role: UserRole::Owner,
                customer_id: Some(c.id.clone()),
            },
            self.now(),
        )
        .await
        .expect("owner");
        c.id
    }

    /// Logs a browser in through the login form; panics unless it lands on `expect_path`.
    pub async fn login(&self, browser: &reqwest::Client, email: &str, password: &str) -> reqwest::Response {
        let form = browser.get(self.url("/login")).send().await.expect("login page");
        assert_eq!(form.status(), 200);
        let token = csrf_token(&form.text().await.expect("body"));
        browser
            .post(self.url("/login"))
            .form(&[("csrf_token", token.as_str()), ("email", email), ("password", password)])
            .send()
            .await
            .expect("login post")
    }

    /// The CSRF token of a signed-in page.
    pub async fn page_token(&self, browser: &reqwest::Client, path: &str) -> String {
        let page = browser.get(self.url(path)).send().await.expect("page");
        assert_eq!(page.status(), 200, "GET {path}");
        csrf_token(&page.text().await.expect("body"))
    }
}

/// The value of the first `csrf_token` hidden field of a page.
pub fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).map(|i| i + marker.len()).expect("page has a csrf_token field");
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_string()
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// The `Set-Cookie` header that sets the session cookie.
pub fn session_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("j1msky_session="))
        .unwrap_or_default()
        .to_string()
}
