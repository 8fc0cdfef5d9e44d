// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]
//! From lead to paying customer in headless Chromium: `j1msky serve` with every role,
//! mail written to a directory and billing at a fake Stripe (webhooks signed and
//! delivered to the server); `tests/browser/leads.py` fills in `/start`, qualifies the
//! lead and starts its trial as the operator, reads the invite from the `.eml`, sets the
//! owner's password, checks out and sees the stage history lead → qualified → trial →
//! active. Needs `scripts/browser-env` (J1MSKY_BROWSER_PYTHON); skips without it outside CI.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use j1msky_accounts::customers::NewCustomer;
use j1msky_accounts::users::NewUser;
use j1msky_audit::Actor;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::vocab::{Stage, UserRole};
use j1msky_core::{Clock, SystemClock};
use j1msky_db::Db;
use j1msky_lifecycle::surveys::{self, Answer, SurveyKind};
use serde_json::json;

use crate::common;

use common::{repo_file, text, Cli};

const PASSWORD: &str = "leads-test-password-1";
const WEBHOOK_SECRET: &str = "whsec_j1msky_fake";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A customer who approved a testimonial for publication (shown on `/start`).
async fn testimonial(db: &Db, catalogue: &Catalogue, now: i64) {
    let input = NewCustomer { name: "Acme Labs".into(), stage: Some(Stage::Active), ..NewCustomer::default() };
    let acme = j1msky_accounts::customers::create(db, catalogue, &Actor::system(), input, now).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let link = surveys::create(&mut tx, &acme.id, SurveyKind::Testimonial, now).await.unwrap();
    tx.commit().await.unwrap();
    let a =
        Answer { testimonial: "Acme saves a day a week on research.", consent_to_publish: true, ..Answer::default() };
    surveys::answer(db, 30, &link.token, &a, now).await.unwrap();
    surveys::approve_testimonial(db, &Actor::cli(), &link.survey_id, now).await.unwrap();
}

#[tokio::test]
async fn a_lead_from_the_start_page_becomes_a_trial_then_a_paying_customer_in_chromium() {
    let Ok(python) = std::env::var("J1MSKY_BROWSER_PYTHON") else {
        if std::env::var("CI").is_ok() || std::env::var("J1MSKY_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("J1MSKY_BROWSER_PYTHON is not set: run scripts/browser-env (scripts/test does)");
        }
        eprintln!("SKIPPED: J1MSKY_BROWSER_PYTHON is not set (run scripts/browser-env, then export it)");
        return;
    };
    let cli = Cli::new().await;
    let db = Db::open(&cli.url).await.unwrap();
    let catalogue = Catalogue::load(&repo_file("config/business.json")).unwrap();
    let now = SystemClock.now_micros();
    let operator = NewUser {
        email: "operator@leads.test".into(),
        display_name: "Operator".into(),
        password: PASSWORD.into(),
        role: UserRole::Operator,
        customer_id: None,
    };
    j1msky_accounts::users::create(&db, &Actor::system(), operator, now).await.unwrap();
    testimonial(&db, &catalogue, now).await;

    // The fake Stripe, with the catalogue's products and prices.
    let fake = j1msky_sim::stripe::spawn_stripe(j1msky_sim::stripe::FakeStripeConfig {
        webhook_secret: WEBHOOK_SECRET.into(),
        now: Some(now / 1_000_000),
        ..j1msky_sim::stripe::FakeStripeConfig::default()
    })
    .await
    .unwrap();
    let stripe = j1msky_billing::Stripe::new(j1msky_billing::StripeConfig {
        base_url: fake.base(),
        secret_key: "sk_test_leads".into(),
        api_version: catalogue.stripe.api_version.clone(),
        allow_live: false,
    })
    .unwrap();
    j1msky_billing::sync::sync(&db, &stripe, &catalogue, now).await.unwrap();
    drop(db);

    // A free port for the server, so the public URL (links in mail) is known up front.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    std::fs::create_dir_all(&mail_dir).unwrap();
    let log = dir.path().join("serve.log");
    let listen = format!("127.0.0.1:{port}");
    let mut child = cli
        .command(&[
            "serve",
            "--listen",
            &listen,
            "--public-url",
            &base,
            "--workers",
            "0",
            "--mail-dir",
            mail_dir.to_str().unwrap(),
            "--stripe-api-base",
            &fake.base(),
        ])
        .env(&catalogue.stripe.secret_key_env, "sk_test_leads")
        .env(&catalogue.stripe.webhook_secret_env, WEBHOOK_SECRET)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("the server printed no address: {}", std::fs::read_to_string(&log).unwrap_or_default())
        };
        if line.starts_with("j1msky listening on ") {
            break;
        }
    }
    let hooks = reqwest::Client::new()
        .post(format!("{}/_sim/webhooks", fake.base()))
        .json(&json!({"url": format!("{base}/webhooks/stripe")}))
        .send()
        .await
        .unwrap();
    assert!(hooks.status().is_success());

    let config = dir.path().join("leads.json");
    let cfg = json!({
        "base": base,
        "stripe": fake.base(),
        "mail_dir": mail_dir,
        "chromium": std::env::var("J1MSKY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        "chromedriver": std::env::var("J1MSKY_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
        "operator": {"email": "operator@leads.test", "password": PASSWORD},
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let python_script = repo_file("crates/j1msky/tests/browser/leads.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg(python_script)
            .arg(&config)
            .output()
            .expect("run the selenium script")
    })
    .await
    .unwrap();
    drop(server);
    println!("{}", text(&out.stdout));
    assert!(
        out.status.success(),
        "leads.py: {}\n{}\nserver log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // What the browser saw is what is stored.
    let db = Db::open(&cli.url).await.unwrap();
    let (id,): (String,) = sqlx::query_as("SELECT customer_id FROM ops_leads WHERE company = 'Northwind Research'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let stages: Vec<Stage> =
        j1msky_accounts::customers::stage_history(&db, &id).await.unwrap().iter().map(|h| h.to).collect();
    assert_eq!(stages, [Stage::Lead, Stage::Qualified, Stage::Trial, Stage::Active]);
    let customer = j1msky_accounts::customers::get(&db, &id).await.unwrap();
    assert_eq!(customer.plan.as_deref(), Some("starter"));
}
