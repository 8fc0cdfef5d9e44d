//! `spawn_app()`: the real server on port 0 with a fresh database on the engine the
//! test run selects, and a manual clock.

#![allow(dead_code)]

use std::sync::Arc;

use j1msky_accounts::{customers, users};
use j1msky_audit::Actor;
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
    /// The model gateway and the simulated provider behind it, when spawned with one.
    pub gateway: Option<Arc<j1msky_gateway::Gateway>>,
    pub sim: Option<j1msky_sim::Running>,
    /// The fake Stripe and a client for it, when spawned with billing.
    pub stripe: Option<(j1msky_sim::stripe::RunningStripe, j1msky_billing::Stripe)>,
    _test_db: TestDb,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(WebConfig::default()).await
}

pub async fn spawn_app_with(config: WebConfig) -> TestApp {
    spawn(config, None).await
}

/// The app with its model gateway pointed at a simulated provider on loopback; short
/// back-offs and timeouts so fault tests run quickly.
pub async fn spawn_app_with_gateway(sim_config: j1msky_sim::SimConfig) -> TestApp {
    spawn(WebConfig::default(), Some(sim_config)).await
}

async fn spawn(config: WebConfig, sim_config: Option<j1msky_sim::SimConfig>) -> TestApp {
    spawn_full(config, sim_config, false).await
}

async fn spawn_full(config: WebConfig, sim_config: Option<j1msky_sim::SimConfig>, billing: bool) -> TestApp {
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("shipped catalogue");
    spawn_with_catalogue(config, sim_config, billing, catalogue, None, false).await
}

/// The app with a gateway over a simulated provider and an edited catalogue.
pub async fn spawn_app_with_catalogue(sim_config: j1msky_sim::SimConfig, catalogue: Catalogue) -> TestApp {
    spawn_with_catalogue(WebConfig::default(), Some(sim_config), false, catalogue, None, false).await
}

/// The app with a gateway whose clock is `gateway_clock` (the rest of the app keeps the
/// manual clock), so a test can make the gateway misbehave inside its own call.
pub async fn spawn_app_with_gateway_clock(
    sim_config: j1msky_sim::SimConfig,
    gateway_clock: Arc<dyn j1msky_core::Clock>,
) -> TestApp {
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("shipped catalogue");
    spawn_with_catalogue(WebConfig::default(), Some(sim_config), false, catalogue, Some(gateway_clock), false).await
}

/// The app with a gateway over a simulated provider, a fake Stripe and an edited catalogue.
#[allow(dead_code)]
pub async fn spawn_app_with_gateway_stripe_and_catalogue(
    sim_config: j1msky_sim::SimConfig,
    catalogue: Catalogue,
) -> (TestApp, j1msky_sim::stripe::RunningStripe, j1msky_billing::Stripe) {
    let config = WebConfig { stripe_webhook_secrets: vec![WEBHOOK_SECRET.into()], ..WebConfig::default() };
    let mut app = spawn_with_catalogue(config, Some(sim_config), true, catalogue, None, false).await;
    let (fake, client) = app.stripe.take().expect("billing");
    (app, fake, client)
}

/// The app with lifecycle mail on: an in-memory transport and the shipped templates
/// (the newsletter's preview and test send need them).
pub async fn spawn_app_with_mail() -> TestApp {
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("shipped catalogue");
    spawn_with_catalogue(WebConfig::default(), None, false, catalogue, None, true).await
}

async fn spawn_with_catalogue(
    config: WebConfig,
    sim_config: Option<j1msky_sim::SimConfig>,
    billing: bool,
    catalogue: Catalogue,
    gateway_clock: Option<Arc<dyn j1msky_core::Clock>>,
    mail: bool,
) -> TestApp {
    let test_db = TestDb::new().await;
    let catalogue = Arc::new(catalogue);
    // One live handle for the server, the gateway and the lifecycle engine, as `serve` has.
    let live = j1msky_core::catalogue::LiveCatalogue::from(&catalogue);
    let clock = ManualClock::new(1_795_000_000_000_000);
    let mut state = AppState::new(test_db.db.clone(), live.clone(), Arc::new(clock.clone()), config);
    let (mut gateway, mut sim) = (None, None);
    if let Some(sim_config) = sim_config {
        let running = j1msky_sim::spawn(sim_config).await.expect("simulated provider");
        let gw = Arc::new(
            j1msky_gateway::Gateway::builder(test_db.db.clone(), live.clone())
                .clock(gateway_clock.unwrap_or_else(|| Arc::new(clock.clone())))
                .all_providers_at(&running.openai_base(), &running.anthropic_base(), "sim-key")
                .timeouts(j1msky_gateway::providers::Timeouts {
                    connect: std::time::Duration::from_secs(2),
                    request: std::time::Duration::from_millis(800),
                })
                .retry(j1msky_gateway::RetryPolicy {
                    retries_per_model: 2,
                    base_backoff: std::time::Duration::from_millis(2),
                    max_wait: std::time::Duration::from_secs(2),
                })
                .build()
                .expect("limits"),
        );
        state = state.with_gateway(gw.clone());
        gateway = Some(gw);
        sim = Some(running);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    if mail {
        state = state.with_lifecycle(j1msky_lifecycle::Ctx {
            db: test_db.db.clone(),
            catalogue: live.clone(),
            clock: Arc::new(clock.clone()),
            transport: Arc::new(j1msky_lifecycle::transport::Recording::default()),
            stripe: None,
            base_url: format!("http://{addr}"),
            templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
        });
    }
    let mut stripe = None;
    if billing {
        let fake = j1msky_sim::stripe::spawn_stripe(j1msky_sim::stripe::FakeStripeConfig {
            webhook_url: Some(format!("http://{addr}/webhooks/stripe")),
            webhook_secret: WEBHOOK_SECRET.into(),
            now: Some(j1msky_core::Clock::now_micros(&clock) / 1_000_000),
        })
        .await
        .expect("fake stripe");
        let client = j1msky_billing::Stripe::new(j1msky_billing::StripeConfig {
            base_url: fake.base(),
            secret_key: "sk_test_j1msky".into(),
            api_version: catalogue.stripe.api_version.clone(),
            allow_live: false,
        })
        .expect("client");
        j1msky_billing::sync::sync(&test_db.db, &client, &catalogue, j1msky_core::Clock::now_micros(&clock))
            .await
            .expect("sync");
        state = state.with_stripe(client.clone());
        stripe = Some((fake, client));
    }
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
        gateway,
        sim,
        stripe,
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

    /// An active customer on `plan`, made directly in the database.
    pub async fn active_customer(&self, name: &str, plan: &str) -> customers::Customer {
        customers::create(
            &self.db,
            &self.catalogue,
            &Actor::cli(),
            customers::NewCustomer {
                name: name.into(),
                stage: Some(Stage::Active),
                plan: Some(plan.into()),
                ..Default::default()
            },
            self.now(),
        )
        .await
        .expect("customer")
    }

    /// A customer with an owner, made directly in the database (not the story under test).
    /// A user of `customer` in `role`, signing in with [`PASSWORD`].
    pub async fn user_of(&self, customer: &str, email: &str, role: UserRole) {
        let user = users::NewUser {
            email: email.into(),
            display_name: String::new(),
            password: PASSWORD.into(),
            role,
            customer_id: Some(customer.to_string()),
        };
        users::create(&self.db, &Actor::cli(), user, self.now()).await.expect("user");
    }

    pub async fn customer_with_owner(&self, name: &str, owner_email: &str) -> String {
        let c = self.active_customer(name, "pro").await;
        self.user_of(&c.id, owner_email, UserRole::Owner).await;
        c.id
    }

    /// An active customer on `plan` and an API key for it: (customer id, key secret).
    pub async fn customer_with_key(&self, name: &str, plan: &str) -> (String, String) {
        let c = self.active_customer(name, plan).await;
        let (_, secret) =
            j1msky_accounts::api_keys::create(&self.db, &Actor::cli(), &c.id, "test", self.now()).await.expect("key");
        (c.id, secret)
    }

    /// The simulator's base URL (for its `/_sim` control endpoints).
    pub fn sim_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sim.as_ref().expect("spawned with a simulated provider").addr)
    }

    /// Queues faults in the simulator.
    pub async fn script_faults(&self, faults: serde_json::Value) {
        let r = reqwest::Client::new().post(self.sim_url("/_sim/faults")).json(&faults).send().await.expect("script");
        assert_eq!(r.status(), 200, "scripting faults: {}", r.text().await.unwrap_or_default());
    }

    /// The simulator's counters.
    pub async fn sim_stats(&self) -> j1msky_sim::Stats {
        reqwest::Client::new().get(self.sim_url("/_sim/stats")).send().await.expect("stats").json().await.expect("json")
    }

    pub fn gateway(&self) -> &Arc<j1msky_gateway::Gateway> {
        self.gateway.as_ref().expect("spawned with a gateway")
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
/// A browser logged in as the seeded operator.
pub async fn operator(app: &TestApp) -> reqwest::Client {
    let browser = app.browser();
    assert_eq!(app.login(&browser, OPERATOR_EMAIL, PASSWORD).await.status(), 303);
    browser
}

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

/// The endpoint secret the Stripe tests sign with.
pub const WEBHOOK_SECRET: &str = "whsec_j1msky_test";

/// The app with its Stripe webhook endpoint live and billing pages on, a fake Stripe on
/// loopback delivering to it (its clock set to the app's), the catalogue synced, and a
/// client for the fake.
pub async fn spawn_app_with_stripe() -> (TestApp, j1msky_sim::stripe::RunningStripe, j1msky_billing::Stripe) {
    let config = WebConfig { stripe_webhook_secrets: vec![WEBHOOK_SECRET.into()], ..WebConfig::default() };
    let mut app = spawn_full(config, None, true).await;
    let (fake, client) = app.stripe.take().expect("billing");
    (app, fake, client)
}

/// The app with everything on at once: a simulated model provider behind the gateway and
/// a fake Stripe with billing pages (for tests that probe every route).
pub async fn spawn_app_with_everything() -> TestApp {
    let config = WebConfig { stripe_webhook_secrets: vec![WEBHOOK_SECRET.into()], ..WebConfig::default() };
    spawn_full(config, Some(j1msky_sim::SimConfig::default()), true).await
}

/// The app with both a simulated model provider and a fake Stripe, for stories where
/// what a customer paid decides what it may call.
pub async fn spawn_app_with_gateway_and_stripe(
    sim_config: j1msky_sim::SimConfig,
) -> (TestApp, j1msky_sim::stripe::RunningStripe, j1msky_billing::Stripe) {
    let config = WebConfig { stripe_webhook_secrets: vec![WEBHOOK_SECRET.into()], ..WebConfig::default() };
    let mut app = spawn_full(config, Some(sim_config), true).await;
    let (fake, client) = app.stripe.take().expect("billing");
    (app, fake, client)
}
