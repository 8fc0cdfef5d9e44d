//! The CLI test harness: a fresh database and the built binary run against it.
// Each test file uses some of it.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_j1msky");

pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// A fresh database and a way to run the CLI against it.
pub struct Cli {
    pub url: String,
    _dir: j1msky_db::testing::Scratch,
}

impl Cli {
    pub async fn new() -> Cli {
        let (url, dir) = j1msky_db::testing::fresh_url().await;
        Cli { url, _dir: dir }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("J1MSKY_DATABASE_URL", &self.url)
            .env("J1MSKY_CONFIG", repo_file("config/business.json"))
            .env("RUST_LOG", "warn");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run j1msky")
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("wait")
    }

    /// Runs with `--json`, expects success, returns the parsed output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(out.status.success(), "j1msky {args:?} failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", text(&out.stdout)))
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Subscribes `customer_id` to `plan` (no trial) at a fake Stripe whose clock reads `at`
/// (unix micros), and applies the events through the real applier, as a reconcile does.
pub async fn subscribe(
    db: &j1msky_db::Db,
    catalogue: &j1msky_core::catalogue::Catalogue,
    customer_id: &str,
    plan: &str,
    at: i64,
) -> j1msky_sim::stripe::RunningStripe {
    let fake = j1msky_sim::stripe::spawn_stripe(j1msky_sim::stripe::FakeStripeConfig {
        now: Some(j1msky_billing::secs(at)),
        ..j1msky_sim::stripe::FakeStripeConfig::default()
    })
    .await
    .unwrap();
    let stripe = j1msky_billing::Stripe::new(j1msky_billing::StripeConfig {
        base_url: fake.base(),
        secret_key: "sk_test_board".into(),
        api_version: catalogue.stripe.api_version.clone(),
        allow_live: false,
    })
    .unwrap();
    let now = at;
    j1msky_billing::sync::sync(db, &stripe, catalogue, now).await.unwrap();
    j1msky_billing::offers::record_trial_had(db, customer_id, "test", now).await.unwrap();
    let req = j1msky_billing::checkout::CheckoutRequest {
        plan: plan.into(),
        success_url: "http://board.test/ok".into(),
        cancel_url: "http://board.test/no".into(),
        attempt: "board".into(),
    };
    let link = j1msky_billing::checkout::start(db, &stripe, catalogue, customer_id, &req, now).await.unwrap();
    let done = reqwest::Client::new()
        .post(format!("{}/_sim/checkout/{}/complete", fake.base(), link.session_id))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(done.status().is_success());
    let ctx = j1msky_billing::apply::Ctx { catalogue };
    j1msky_billing::webhook::reconcile(db, &stripe, &ctx, j1msky_billing::secs(now) - 3_600, now).await.unwrap();
    j1msky_accounts::reactions::catch_up(db, &j1msky_core::ManualClock::new(at)).await.unwrap();
    fake
}

/// Runs the insights' consumers over every event so far, as the `reactions` role would.
pub async fn catch_up_insights(ctx: &j1msky_insights::Ctx) {
    let all = j1msky_insights::rollups::consumers(ctx);
    let runner = j1msky_db::consumers::Runner::for_this_process();
    let real = j1msky_core::SystemClock;
    while j1msky_db::consumers::run_once(&ctx.db, &runner, &all, &real).await.unwrap().handled > 0 {}
}
