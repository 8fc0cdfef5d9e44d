//! The restore drill, on the engine the test run selects: `j1msky serve` runs tasks of a
//! pay-per-task customer while customers subscribe through the fake Stripe (webhooks
//! flowing); `j1msky db backup` runs in the middle of it; the server keeps working (and
//! Stripe keeps sending) after the backup, then dies. `j1msky db restore` loads the
//! backup into a new database and `j1msky serve` starts on it: everything acknowledged
//! before the backup is there, the server reconciled with Stripe before its billing jobs
//! (so the webhooks that went to the dead server are stored too), it runs new tasks, and
//! the charges reported again from the restored database reach Stripe once each.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use j1msky_billing::checkout::{self, CheckoutRequest};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_j1msky");
const WEBHOOK_SECRET: &str = "whsec_j1msky_drill";
const STRIPE_KEY: &str = "sk_test_j1msky_drill";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// A server process, killed when the test ends (a failed assertion included).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    stripe_base: String,
    provider_flags: Vec<String>,
    key_envs: Vec<String>,
}

impl Env {
    fn command(&self, url: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("J1MSKY_DATABASE_URL", url)
            .env("J1MSKY_CONFIG", repo_file("config/business.json"))
            .env("J1MSKY_STRIPE_SECRET_KEY", STRIPE_KEY)
            .env("J1MSKY_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("J1MSKY_STRIPE_API_BASE", &self.stripe_base)
            .env_remove("J1MSKY_BACKUP_DIR")
            .env("RUST_LOG", "error");
        for k in &self.key_envs {
            cmd.env(k, "sim-key");
        }
        cmd
    }

    /// Runs a command to its end: (exit code, stdout, stderr).
    fn run(&self, url: &str, args: &[&str]) -> (i32, String, String) {
        let out = self.command(url, args).output().expect("run j1msky");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn json(&self, url: &str, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.run(url, &all);
        assert_eq!(code, 0, "j1msky {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("j1msky {args:?} printed no JSON ({e}): {out}"))
    }

    /// `j1msky serve`; `billing_jobs` gives it the Stripe key (without one it still
    /// stores and applies webhooks, but runs no billing job).
    fn serve(&self, url: &str, billing_jobs: bool) -> (Server, String) {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--workers", "2"];
        for f in &self.provider_flags {
            args.push("--provider-url");
            args.push(f);
        }
        let mut cmd = self.command(url, &args);
        if !billing_jobs {
            cmd.env_remove("J1MSKY_STRIPE_SECRET_KEY");
        }
        let mut child = Server(cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("serve"));
        let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
        let base = loop {
            let line = lines.next().expect("server printed its address").expect("read");
            if let Some(addr) = line.strip_prefix("j1msky listening on ") {
                break addr.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        (child, base)
    }
}

async fn sim(stripe: &str, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{stripe}/_sim/{path}")).json(&body).send().await.expect("control");
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap_or_default());
    r.json().await.expect("json")
}

async fn fake_state(stripe: &str) -> Value {
    reqwest::get(format!("{stripe}/_sim/state")).await.expect("state").json().await.expect("json")
}

async fn ids(db: &j1msky_db::Db, sql: &str) -> BTreeSet<String> {
    let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(db.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter().map(|r| r.0).collect()
}

async fn count(db: &j1msky_db::Db, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    n
}

/// Submits tasks until `stop`; the ids the server acknowledged (201) are kept.
async fn task_load(base: String, key: String, acked: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let r = http
            .post(format!("{base}/api/v1/tasks"))
            .bearer_auth(&key)
            .json(&json!({"team": "code", "prompt": format!("fix bug {i}")}))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 201 => {
                let v: Value = r.json().await.expect("task json");
                acked.lock().unwrap().push(v["task"]["id"].as_str().expect("task id").to_string());
            }
            Ok(r) => panic!("task refused: {} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Customers subscribing one after another through Checkout (each a burst of webhooks).
async fn subscribe(db: &j1msky_db::Db, stripe: &j1msky_billing::Stripe, catalogue: &Catalogue, fake: &str, who: &str) {
    let req = CheckoutRequest {
        plan: "pro".into(),
        success_url: "https://app.example.test/app/billing?done=1".into(),
        cancel_url: "https://app.example.test/app/billing".into(),
        attempt: "1".into(),
    };
    let now = j1msky_core::Clock::now_micros(&j1msky_core::SystemClock);
    let link = checkout::start(db, stripe, catalogue, who, &req, now).await.expect("checkout");
    sim(fake, &format!("checkout/{}/complete", link.session_id), json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_serves_and_sends_no_invoice_item_twice() {
    let provider = j1msky_sim::spawn(j1msky_sim::SimConfig {
        latency: Duration::from_millis(10),
        ..j1msky_sim::SimConfig::default()
    })
    .await
    .expect("sim");
    let fake = j1msky_sim::stripe::spawn_stripe(j1msky_sim::stripe::FakeStripeConfig {
        webhook_url: None,
        webhook_secret: WEBHOOK_SECRET.into(),
        now: None,
    })
    .await
    .expect("fake stripe");
    let fake_base = fake.base();
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    let overrides = j1msky_gateway::ProviderOverride::all_to(
        &catalogue,
        &provider.openai_base(),
        &provider.anthropic_base(),
        "sim",
    );
    let env = Env {
        stripe_base: fake_base.clone(),
        provider_flags: overrides.iter().map(|(id, o)| format!("{id}={}", o.base_url)).collect(),
        key_envs: catalogue.providers.values().map(|p| p.api_key_env.clone()).collect(),
    };
    let stripe = j1msky_billing::Stripe::new(j1msky_billing::StripeConfig {
        base_url: fake_base.clone(),
        secret_key: STRIPE_KEY.into(),
        api_version: catalogue.stripe.api_version.clone(),
        allow_live: false,
    })
    .expect("stripe client");
    let backups = tempfile::tempdir().expect("backup dir");
    let (url_a, _dir_a) = j1msky_db::testing::fresh_url().await;
    let (url_b, _dir_b) = j1msky_db::testing::fresh_url().await;

    env.json(&url_a, &["db", "migrate"]);
    env.json(&url_a, &["stripe", "sync"]);
    let walk_in = env.json(&url_a, &["customer", "add", "--name", "Walk-in", "--stage", "active", "--payment-on-file"]);
    let walk_in = walk_in["customer"]["id"].as_str().expect("id").to_string();
    // The load may outrun a pay-per-task customer's hourly cap: lifted for the drill.
    env.json(&url_a, &["gateway", "cap", &format!("customer:{walk_in}"), "1000000", "--reason", "drill: load"]);
    let key = env.json(&url_a, &["key", "create", "--customer", &walk_in, "--name", "drill"])["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let mut subscribers = Vec::new();
    for n in 0..6 {
        let c = env.json(
            &url_a,
            &[
                "customer",
                "add",
                "--name",
                &format!("Sub {n}"),
                "--email",
                &format!("sub{n}@example.test"),
                "--stage",
                "qualified",
            ],
        );
        subscribers.push(c["customer"]["id"].as_str().expect("id").to_string());
    }
    let db_a = j1msky_db::Db::connect(&url_a).await.expect("db a");

    // Server A, with tasks and webhooks flowing. Its charges are reported below by the
    // test itself, once, after the backup (the fake Stripe, unlike Stripe, does not
    // serialise two concurrent requests under one key, so only one reporter may run).
    let (mut server_a, base_a) = env.serve(&url_a, false);
    sim(&fake_base, "webhooks", json!({"url": format!("{base_a}/webhooks/stripe")})).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(task_load(base_a.clone(), key.clone(), acked.clone(), stop.clone()));
    for who in &subscribers[..2] {
        subscribe(&db_a, &stripe, &catalogue, &fake_base, who).await;
    }
    for _ in 0..300 {
        if count(&db_a, "SELECT COUNT(*) FROM usage_charges").await >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Webhooks keep coming while the backup runs.
    let hooks = {
        let (db, stripe, catalogue, fake) = (db_a.clone(), stripe.clone(), catalogue.clone(), fake_base.clone());
        let more = subscribers[2..4].to_vec();
        tokio::spawn(async move {
            for who in &more {
                subscribe(&db, &stripe, &catalogue, &fake, who).await;
            }
        })
    };

    // What was acknowledged before the backup began: the tasks the API answered 201
    // for, and every task, charge and Stripe event stored by then.
    let acked_before: Vec<String> = acked.lock().unwrap().clone();
    let tasks_before = ids(&db_a, "SELECT id FROM tasks").await;
    let charges_before = ids(&db_a, "SELECT task_id FROM usage_charges").await;
    let events_before = ids(&db_a, "SELECT id FROM stripe_events").await;
    let subs_before = ids(&db_a, "SELECT id FROM subscriptions").await;
    assert!(charges_before.len() >= 3 && !events_before.is_empty() && !acked_before.is_empty());
    let dir = backups.path().to_string_lossy().into_owned();
    let taken = env.json(&url_a, &["db", "backup", "--dir", &dir]);
    let file = taken["backup"]["path"].as_str().expect("backup path").to_string();
    assert_eq!(taken["backup"]["status"], "done");
    assert!(Path::new(&format!("{file}.json")).is_file(), "the manifest beside the file");
    hooks.await.expect("subscriptions during the backup");

    // Life goes on after the backup: more tasks, more customers, a renewal, and every
    // charge so far reported to Stripe (each as one invoice item) from database A.
    for who in &subscribers[4..] {
        subscribe(&db_a, &stripe, &catalogue, &fake_base, who).await;
    }
    let renewed = subs_before.iter().next().expect("a subscription").clone();
    sim(&fake_base, &format!("subscriptions/{renewed}/renew"), json!({})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("task load");
    let now = || j1msky_core::Clock::now_micros(&j1msky_core::SystemClock);
    j1msky_billing::usage::report(&db_a, &stripe, &catalogue, 1000, now()).await.expect("report from A");
    let items_a: BTreeMap<String, String> = {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT task_id, stripe_item_id FROM usage_charges WHERE stripe_item_id IS NOT NULL")
                .fetch_all(db_a.pool())
                .await
                .expect("reported in A");
        rows.into_iter().collect()
    };
    assert!(items_a.len() > charges_before.len(), "tasks charged after the backup too: {}", items_a.len());

    // The disaster: server A dies and its database is gone.
    server_a.0.kill().expect("kill server A");
    let _ = server_a.0.wait();
    db_a.close().await;

    // A restore never overwrites a database with tables unless told to.
    let (code, _, err) = env.run(&url_a, &["db", "restore", &file, "--into", &url_a, "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty") && err.contains("--force"), "{err}");
    let restored = env.json(&url_b, &["db", "restore", &file, "--into", &url_b, "--yes"]);
    assert_eq!(restored["restored"]["sha256"], taken["backup"]["sha256"]);

    // Server B on the restored database.
    let (mut server_b, base_b) = env.serve(&url_b, true);
    sim(&fake_base, "webhooks", json!({"url": format!("{base_b}/webhooks/stripe")})).await;
    let db_b = j1msky_db::Db::connect(&url_b).await.expect("db b");
    let mut reconciled = 0;
    for _ in 0..300 {
        reconciled = count(&db_b, "SELECT COUNT(*) FROM ops_restores WHERE reconciled_at IS NOT NULL").await;
        if reconciled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reconciled, 1, "the server reconciled with Stripe after the restore");

    // Nothing acknowledged before the backup is missing.
    let tasks_b = ids(&db_b, "SELECT id FROM tasks").await;
    for t in acked_before.iter().chain(tasks_before.iter()) {
        assert!(tasks_b.contains(t), "task {t}, acknowledged before the backup, is missing");
    }
    let charges_b = ids(&db_b, "SELECT task_id FROM usage_charges").await;
    assert!(charges_before.is_subset(&charges_b), "charges missing: {:?}", charges_before.difference(&charges_b));
    let events_b = ids(&db_b, "SELECT id FROM stripe_events").await;
    assert!(events_before.is_subset(&events_b), "webhooks missing: {:?}", events_before.difference(&events_b));
    // And the reconcile stored what Stripe sent to the dead server after the backup.
    let made = fake_state(&fake_base).await["events"].as_i64().expect("events");
    assert_eq!(events_b.len() as i64, made, "every event Stripe made is stored after the reconcile");
    let (status, finished): (String, Option<i64>) =
        sqlx::query_as("SELECT status, finished_at FROM ops_backups WHERE id = $1")
            .bind(taken["backup"]["id"].as_str().expect("id"))
            .fetch_one(db_b.pool())
            .await
            .expect("the backup's own row");
    assert_eq!((status.as_str(), finished.is_some()), ("done", true));

    // Server B serves: a new task runs to its end.
    let r = reqwest::Client::new()
        .post(format!("{base_b}/api/v1/tasks"))
        .bearer_auth(&key)
        .json(&json!({"team": "code", "prompt": "after the restore"}))
        .send()
        .await
        .expect("submit to B");
    assert_eq!(r.status(), 201);
    let task: Value = r.json().await.expect("json");
    let task = task["task"]["id"].as_str().expect("id").to_string();
    let mut state = String::new();
    for _ in 0..400 {
        state = ids(&db_b, &format!("SELECT state FROM tasks WHERE id = '{task}'")).await.into_iter().next().unwrap();
        if state == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "succeeded", "the restored server runs tasks");

    // Server B's billing jobs (each minute) report its charges again, A's included: they
    // replay A's items; only new work makes new ones.
    let mut left = -1;
    for _ in 0..1800 {
        left = count(&db_b, "SELECT COUNT(*) FROM usage_charges WHERE reported_at IS NULL").await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "server B reported every charge");
    // An event the dead server had claimed is in the backup with its lease: it is
    // applied once that lease (a minute) runs out.
    for _ in 0..1200 {
        if count(&db_b, "SELECT COUNT(*) FROM stripe_events WHERE state = 'pending'").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subs_b = ids(&db_b, "SELECT id FROM subscriptions").await;
    let states: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT type, state, error FROM stripe_events WHERE state <> 'applied'")
            .fetch_all(db_b.pool())
            .await
            .expect("states");
    assert_eq!(
        subs_b.len(),
        subscribers.len(),
        "each customer's subscription, the later ones from the reconcile; events not applied: {states:?}"
    );
    // Stopped first, so nothing is reported between the two reads below.
    assert!(Command::new("kill").args(["-TERM", &server_b.0.id().to_string()]).status().expect("kill").success());
    assert!(server_b.0.wait().expect("wait").success());
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT task_id, stripe_item_id FROM usage_charges WHERE stripe_item_id IS NOT NULL")
            .fetch_all(db_b.pool())
            .await
            .expect("reported in B");
    let mut all_tasks: BTreeSet<String> = items_a.keys().cloned().collect();
    for (t, item) in &rows {
        if let Some(a) = items_a.get(t) {
            assert_eq!(a, item, "task {t}: the item reported from B is the one A reported");
        }
        all_tasks.insert(t.clone());
    }
    assert!(rows.iter().any(|(t, _)| *t == task), "the task run after the restore is reported");
    let items = fake_state(&fake_base).await["objects"]["invoiceitem"].as_i64().expect("items");
    assert_eq!(items, all_tasks.len() as i64, "Stripe holds one invoice item per charged task");

    db_b.close().await;
}
