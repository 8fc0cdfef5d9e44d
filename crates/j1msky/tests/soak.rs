//! The crash soak, run by `bench/soak/run` (ignored by `cargo test`: it takes minutes
//! and kills processes at random moments). `j1msky serve` runs against the simulated
//! provider, the fake Stripe and an aiosmtpd sink under mixed load (task submissions,
//! `/v1` API calls, signed Stripe webhooks from checkouts and renewals, welcome mail of
//! new customers) and is SIGKILLed `SOAK_KILLS` times at random moments, restarted each
//! time; then a last server drains everything and the books are checked against the
//! database and the fakes: every acknowledged task exists and finished, no charge twice
//! (in the database and at the fake Stripe), every Stripe event stored and applied once,
//! no mail twice at the sink, no budget above its cap. Prints one `soak:` line of figures.
//!
//! Environment: `SOAK_SMTP_PORT` and `SOAK_MAILDIR` (the sink), `SOAK_KILLS` (20),
//! `SOAK_SEED` (random), `SOAK_LOG` (the servers' stderr, appended), and the usual
//! `J1MSKY_TEST_BACKEND` / `J1MSKY_TEST_POSTGRES_URL`.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_j1msky");
const WEBHOOK_SECRET: &str = "whsec_soak";
const STRIPE_KEY: &str = "sk_test_soak";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: the kill moments, reproducible from `SOAK_SEED`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

struct Env {
    url: String,
    stripe_base: String,
    provider_flags: Vec<String>,
    key_envs: Vec<String>,
    smtp_port: u16,
    port: u16,
    log: Option<PathBuf>,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("J1MSKY_DATABASE_URL", &self.url)
            .env("J1MSKY_CONFIG", repo_file("config/business.json"))
            .env("J1MSKY_STRIPE_SECRET_KEY", STRIPE_KEY)
            .env("J1MSKY_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("J1MSKY_STRIPE_API_BASE", &self.stripe_base)
            .env("RUST_LOG", "warn");
        for k in &self.key_envs {
            cmd.env(k, "sim-key");
        }
        cmd
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.command(&all).output().expect("run j1msky");
        assert!(out.status.success(), "j1msky {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| json!({"text": String::from_utf8_lossy(&out.stdout)}))
    }

    /// Starts `j1msky serve` on the soak's port (the same after every restart, as the
    /// fake Stripe's webhook URL); returns the child and its base URL.
    fn serve(&self) -> (Server, String) {
        let port = self.port;
        let public = format!("http://127.0.0.1:{port}");
        let listen = format!("127.0.0.1:{port}");
        let smtp = format!("smtp://127.0.0.1:{}", self.smtp_port);
        let mut args =
            vec!["serve", "--listen", &listen, "--workers", "3", "--public-url", &public, "--smtp-url", &smtp];
        for f in &self.provider_flags {
            args.push("--provider-url");
            args.push(f);
        }
        let stderr = match &self.log {
            Some(p) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(p).expect("log")),
            None => Stdio::null(),
        };
        let mut child = self.command(&args).stdout(Stdio::piped()).stderr(stderr).spawn().expect("serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().expect("server printed its address").expect("read");
            if let Some(addr) = line.strip_prefix("j1msky listening on ") {
                break addr.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        (Server(child), base)
    }
}

/// A server that is SIGKILLed when dropped, so a failing soak leaves nothing running.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn count(db: &j1msky_db::Db, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    n
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Tasks acknowledged (201) by the server.
    tasks: HashSet<String>,
    api_ok: u64,
    api_over_budget: u64,
    requests: u64,
}

async fn api_load(base: String, key: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "kimi-k2.5", "max_tokens": 50,
                          "messages": [{"role": "user", "content": "Summarise the week"}]}))
            .send()
            .await;
        {
            let mut s = seen.lock().expect("seen");
            s.requests += 1;
            match sent {
                Ok(r) if r.status().is_success() => s.api_ok += 1,
                Ok(r) if r.status() == reqwest::StatusCode::PAYMENT_REQUIRED => s.api_over_budget += 1,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn task_load(base: String, key: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>, tag: String) {
    let http = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let sent = http
            .post(format!("{base}/api/v1/tasks"))
            .bearer_auth(&key)
            .json(&json!({"team": "code", "prompt": format!("fix bug {tag}.{i}")}))
            .send()
            .await;
        let Ok(r) = sent else { return };
        let ok = r.status() == reqwest::StatusCode::CREATED;
        let body: Value = r.json().await.unwrap_or(Value::Null);
        {
            let mut s = seen.lock().expect("seen");
            s.requests += 1;
            if ok {
                if let Some(id) = body["task"]["id"].as_str() {
                    s.tasks.insert(id.to_string());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Stripe activity at the fake (its webhooks reach whichever server is up): a new
/// customer's checkout completed, and a renewal of every subscription so far.
async fn stripe_load(env: &Env, http: &reqwest::Client, subs: &mut Vec<String>, round: usize) {
    let c = env.json(&[
        "customer",
        "add",
        "--name",
        &format!("Soak Buyer {round}"),
        "--email",
        &format!("buyer{round}@soak.example"),
    ]);
    let cid = c["customer"]["id"].as_str().expect("customer id").to_string();
    let out = env.json(&["stripe", "checkout", &cid, "--plan", "pro"]);
    let text = out.to_string();
    let cs = text
        .find("cs_")
        .map(|i| text[i..].chars().take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_').collect::<String>());
    let cs = cs.unwrap_or_else(|| panic!("checkout session in {out}"));
    let done: Value = http
        .post(format!("{}/_sim/checkout/{cs}/complete", env.stripe_base))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .expect("complete")
        .json()
        .await
        .expect("json");
    if let Some(sub) = done["subscription"].as_str() {
        subs.push(sub.to_string());
    }
    for sub in subs.iter() {
        let _ = http
            .post(format!("{}/_sim/subscriptions/{sub}/renew", env.stripe_base))
            .bearer_auth(STRIPE_KEY)
            .send()
            .await;
    }
}

/// Every event the fake Stripe made, newest first.
async fn fake_events(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/events?limit=100");
        if let Some(a) = &after {
            url.push_str(&format!("&starting_after={a}"));
        }
        let page: Value =
            http.get(url).bearer_auth(STRIPE_KEY).send().await.expect("events").json().await.expect("json");
        let data = page["data"].as_array().cloned().unwrap_or_default();
        after = data.last().and_then(|e| e["id"].as_str()).map(String::from);
        out.extend(data);
        if page["has_more"] != json!(true) || after.is_none() {
            return out;
        }
    }
}

/// Message-IDs of the mail in a Maildir, with how often each arrived.
fn maildir_ids(dir: &Path) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for e in entries {
            let text = std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default();
            let id = text
                .lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("message-id")
                        .then(|| v.trim().trim_matches(|c| c == '<' || c == '>').to_string())
                })
                .unwrap_or_else(|| "(none)".into());
            *ids.entry(id).or_insert(0) += 1;
        }
    }
    ids
}

async fn wait_for(what: &str, db: &j1msky_db::Db, sql: &str, secs: u64) -> i64 {
    let started = Instant::now();
    loop {
        let n = count(db, sql).await;
        if n == 0 || started.elapsed() > Duration::from_secs(secs) {
            if n != 0 {
                eprintln!("soak: still {n} {what} after {secs} s");
            }
            return n;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the crash soak: minutes long, run by bench/soak/run"]
async fn soak_kill_9_under_mixed_load() {
    let kills: usize = env_or("SOAK_KILLS", 20);
    let seed: u64 = env_or("SOAK_SEED", u64::from(std::process::id()));
    let smtp_port: u16 = env_or("SOAK_SMTP_PORT", 0);
    assert!(smtp_port != 0, "SOAK_SMTP_PORT: the aiosmtpd sink's port (bench/soak/run starts it)");
    let maildir = PathBuf::from(std::env::var("SOAK_MAILDIR").expect("SOAK_MAILDIR"));
    let mut rng = Rng(seed.max(1));
    let started = Instant::now();

    let sim = j1msky_sim::spawn(j1msky_sim::SimConfig {
        latency: Duration::from_millis(15),
        ..j1msky_sim::SimConfig::default()
    })
    .await
    .expect("sim");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let fake = j1msky_sim::stripe::spawn_stripe(j1msky_sim::stripe::FakeStripeConfig {
        webhook_url: Some(format!("http://127.0.0.1:{port}/webhooks/stripe")),
        webhook_secret: WEBHOOK_SECRET.into(),
        now: None,
    })
    .await
    .expect("fake stripe");
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    let overrides =
        j1msky_gateway::ProviderOverride::all_to(&catalogue, &sim.openai_base(), &sim.anthropic_base(), "sim");
    let (url, _dir) = j1msky_db::testing::fresh_url().await;
    let env = Env {
        url,
        stripe_base: fake.base(),
        provider_flags: overrides.iter().map(|(id, o)| format!("{id}={}", o.base_url)).collect(),
        key_envs: catalogue.providers.values().map(|p| p.api_key_env.clone()).collect(),
        smtp_port,
        port,
        log: std::env::var("SOAK_LOG").ok().map(PathBuf::from),
    };
    let backend = if env.url.starts_with("postgres") { "postgres" } else { "sqlite" };
    env.json(&["stripe", "sync"]);
    let secret = |customer: &str| {
        env.json(&["key", "create", "--customer", customer, "--name", "soak"])["secret"]
            .as_str()
            .expect("secret")
            .to_string()
    };
    let id = |v: Value| v["customer"]["id"].as_str().expect("id").to_string();
    let api_id = id(env.json(&["customer", "add", "--name", "Api Co", "--stage", "active", "--plan", "pro"]));
    let api_key = secret(&api_id);
    let capped_id = id(env.json(&["customer", "add", "--name", "Capped Co", "--stage", "active", "--plan", "pro"]));
    let capped_key = secret(&capped_id);
    let budget_micros: i64 = 2_000;
    env.json(&["gateway", "customer-budget", &capped_id, "0.002", "--reason", "soak: a capped customer"]);
    // The shipped hourly caps (600 calls an hour in all) would hold the load's tasks
    // until the next hour: the soak is about crashes, the capped customer's budget is
    // the limit it checks.
    for scope in ["global", "provider:moonshot", "provider:anthropic"] {
        env.json(&["gateway", "cap", scope, "1000000", "--reason", "soak: load"]);
    }
    env.json(&["gateway", "cap", &format!("customer:{api_id}"), "1000000", "--reason", "soak: load"]);
    env.json(&["gateway", "daily-budget", "100000.00", "--reason", "soak: load"]);
    let walk_in_id = id(env.json(&[
        "customer",
        "add",
        "--name",
        "Walk-in",
        "--email",
        "walkin@soak.example",
        "--stage",
        "active",
        "--payment-on-file",
    ]));
    // The load outruns a pay-per-task customer's hourly cap: lifted, as for the API customer.
    env.json(&["gateway", "cap", &format!("customer:{walk_in_id}"), "1000000", "--reason", "soak: load"]);
    let task_key = secret(&walk_in_id);

    let db = j1msky_db::Db::connect(&env.url).await.expect("db");
    let http = reqwest::Client::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut subs = Vec::new();
    let mut moments = Vec::new();
    let newcomers = Arc::new(AtomicU64::new(0));
    for round in 0..=kills {
        let (mut child, base) = env.serve();
        if round == kills {
            // The last server stays up and drains; its checks follow.
            stripe_load(&env, &http, &mut subs, round).await;
            let stop = Arc::new(AtomicBool::new(false));
            let last =
                tokio::spawn(task_load(base.clone(), task_key.clone(), seen.clone(), stop.clone(), "last".into()));
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop.store(true, Ordering::Relaxed);
            let _ = last.await;
            drain_and_check(
                &env,
                &db,
                &http,
                &seen,
                &maildir,
                DrainInfo {
                    backend,
                    kills,
                    moments: &moments,
                    seed,
                    capped_id: &capped_id,
                    walk_in_id: &walk_in_id,
                    budget_micros,
                    started,
                    subs: subs.len(),
                    newcomers: newcomers.load(Ordering::Relaxed),
                },
            )
            .await;
            let pid = child.0.id().to_string();
            assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
            assert!(child.0.wait().expect("wait").success(), "the last server stops cleanly");
            break;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for key in [&api_key, &capped_key] {
            load.push(tokio::spawn(api_load(base.clone(), key.clone(), seen.clone(), stop.clone())));
        }
        for (k, key) in [&task_key, &task_key, &api_key].into_iter().enumerate() {
            load.push(tokio::spawn(task_load(
                base.clone(),
                key.clone(),
                seen.clone(),
                stop.clone(),
                format!("{round}.{k}"),
            )));
        }
        // Webhooks and mail while the load runs: a checkout and renewals at the fake, and
        // a newcomer whose welcome mail is due at once.
        let wait = rng.between(300, 2_500);
        let kill_at = Instant::now() + Duration::from_millis(wait);
        stripe_load(&env, &http, &mut subs, round).await;
        env.json(&[
            "customer",
            "add",
            "--name",
            &format!("Newcomer {round}"),
            "--email",
            &format!("new{round}@soak.example"),
        ]);
        newcomers.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until(tokio::time::Instant::from_std(kill_at)).await;
        child.0.kill().expect("kill -9");
        let _ = child.0.wait();
        moments.push(wait);
        stop.store(true, Ordering::Relaxed);
        for l in load {
            let _ = l.await;
        }
    }
    db.close().await;
}

struct DrainInfo<'a> {
    backend: &'a str,
    kills: usize,
    moments: &'a [u64],
    seed: u64,
    capped_id: &'a str,
    walk_in_id: &'a str,
    budget_micros: i64,
    started: Instant,
    subs: usize,
    newcomers: u64,
}

async fn drain_and_check(
    env: &Env,
    db: &j1msky_db::Db,
    http: &reqwest::Client,
    seen: &Arc<Mutex<Seen>>,
    maildir: &Path,
    info: DrainInfo<'_>,
) {
    let mut violations = Vec::new();
    // A killed server's claims on PostgreSQL wait out their lease (a minute).
    wait_for("unfinished tasks", db, "SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'running')", 240).await;
    wait_for("pending Stripe events", db, "SELECT COUNT(*) FROM stripe_events WHERE state = 'pending'", 120).await;
    // Usage is reported by a timer once a minute.
    wait_for("unreported charges", db, "SELECT COUNT(*) FROM usage_charges WHERE reported_at IS NULL", 150).await;
    let now_micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("now").as_micros() as i64;
    wait_for(
        "mail due",
        db,
        &format!(
            "SELECT COUNT(*) FROM lifecycle_messages WHERE (state IN ('queued', 'deferred') AND not_before <= {now_micros})
                 OR state = 'sending'"
        ),
        120,
    )
    .await;

    // Deliveries the fake gave up on while no server was up are what `stripe reconcile`
    // is for; count them, then reconcile as an operator would.
    let events = fake_events(http, &env.stripe_base).await;
    let held: Vec<(String, String)> =
        sqlx::query_as("SELECT id, state FROM stripe_events").fetch_all(db.pool()).await.expect("events");
    let held: HashMap<String, String> = held.into_iter().collect();
    let missed_before = events.iter().filter(|e| !held.contains_key(e["id"].as_str().unwrap_or(""))).count();
    env.json(&["stripe", "reconcile", "--since-hours", "2"]);
    let held: Vec<(String, String)> =
        sqlx::query_as("SELECT id, state FROM stripe_events").fetch_all(db.pool()).await.expect("events");
    let held: HashMap<String, String> = held.into_iter().collect();
    for e in &events {
        let id = e["id"].as_str().unwrap_or("");
        match held.get(id).map(String::as_str) {
            Some("applied") => {}
            other => violations.push(format!("Stripe event {id} ({}) is {other:?}", e["type"])),
        }
    }
    let paid_invoices: HashSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "invoice.paid")
        .filter_map(|e| e["data"]["object"]["id"].as_str())
        .collect();
    let booked = count(db, "SELECT COUNT(*) FROM revenue_entries WHERE kind = 'invoice_paid'").await;
    if booked != paid_invoices.len() as i64 {
        violations.push(format!("{booked} invoice_paid revenue entries for {} paid invoices", paid_invoices.len()));
    }

    // Tasks: every acknowledged one exists and finished.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, state FROM tasks").fetch_all(db.pool()).await.expect("tasks");
    let states: HashMap<String, String> = rows.into_iter().collect();
    let acknowledged = seen.lock().expect("seen").tasks.clone();
    let mut by_state: HashMap<String, usize> = HashMap::new();
    for t in &acknowledged {
        match states.get(t) {
            None => violations.push(format!("acknowledged task {t} lost")),
            Some(s) if s == "queued" || s == "running" => violations.push(format!("task {t} still {s}")),
            Some(s) => *by_state.entry(s.clone()).or_insert(0) += 1,
        }
    }

    // Charges: one per task, each succeeded pay-per-task task charged, each charge one
    // invoice item at the fake Stripe.
    let doubled =
        count(db, "SELECT COUNT(*) FROM (SELECT task_id FROM usage_charges GROUP BY task_id HAVING COUNT(*) > 1) d")
            .await;
    if doubled != 0 {
        violations.push(format!("{doubled} tasks charged twice"));
    }
    let uncharged = count(
        db,
        &format!(
            "SELECT COUNT(*) FROM tasks t WHERE t.state = 'succeeded' AND t.customer_id = '{}'
                 AND NOT EXISTS (SELECT 1 FROM usage_charges u WHERE u.task_id = t.id)",
            info.walk_in_id
        ),
    )
    .await;
    if uncharged != 0 {
        violations.push(format!("{uncharged} pay-per-task successes without their charge"));
    }
    let charges = count(db, "SELECT COUNT(*) FROM usage_charges").await;
    let state: Value =
        http.get(format!("{}/_sim/state", env.stripe_base)).send().await.expect("state").json().await.expect("json");
    let items = state["objects"]["invoiceitem"].as_i64().unwrap_or(0);
    if items != charges {
        violations.push(format!("{items} invoice items at Stripe for {charges} charges"));
    }

    // Budgets.
    let over = count(db, "SELECT COUNT(*) FROM budget_windows WHERE spent_micros > cap_micros").await;
    if over != 0 {
        violations.push(format!("{over} budget windows over their cap"));
    }
    let spent = count(
        db,
        &format!(
            "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = '{}'",
            info.capped_id
        ),
    )
    .await;
    if spent > info.budget_micros {
        violations.push(format!("capped customer spent {spent} > {}", info.budget_micros));
    }

    // Mail: nothing twice at the sink; every `sent` row arrived; nothing sent twice.
    let ids = maildir_ids(maildir);
    let duplicates: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    if !duplicates.is_empty() {
        violations.push(format!("mail delivered twice: {duplicates:?}"));
    }
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT message_id, state FROM lifecycle_messages").fetch_all(db.pool()).await.expect("mail");
    let mut mail_states: HashMap<String, usize> = HashMap::new();
    let known: HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    for (id, st) in &rows {
        *mail_states.entry(st.clone()).or_insert(0) += 1;
        if st == "sent" && !ids.contains_key(id) {
            violations.push(format!("message {id} is sent but never arrived"));
        }
    }
    for id in ids.keys() {
        if !known.contains(id.as_str()) {
            violations.push(format!("mail {id} at the sink is no lifecycle message"));
        }
    }
    let welcomes = count(db, "SELECT COUNT(*) FROM lifecycle_messages WHERE step = 'welcome'").await;
    // Why mail was not sent (a customer without an address, a send cut by a kill).
    let not_sent: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT state, COALESCE(last_error, ''), COUNT(*) FROM lifecycle_messages WHERE state <> 'sent'
         GROUP BY state, COALESCE(last_error, '')",
    )
    .fetch_all(db.pool())
    .await
    .expect("not sent");

    let s = seen.lock().expect("seen");
    let fake_hooks = &state["webhooks"];
    let mean_kill_ms = info.moments.iter().sum::<u64>() / info.moments.len().max(1) as u64;
    println!(
        "soak: backend={} kills={} seed={} kill_after_ms(mean)={mean_kill_ms} elapsed_s={} requests={} \
         tasks_acknowledged={} tasks_by_state={:?} api_ok={} api_over_budget={} charges={charges} invoice_items={items} \
         stripe_events={} webhooks_delivered={} webhooks_refused={} missed_then_reconciled={missed_before} \
         paid_invoices={} subscriptions={} customers_new={} mail_at_sink={} welcome_rows={welcomes} mail_states={:?} \
         not_sent={not_sent:?} capped_spent_micros={spent}/{} violations={}",
        info.backend,
        info.kills,
        info.seed,
        info.started.elapsed().as_secs(),
        s.requests,
        acknowledged.len(),
        by_state,
        s.api_ok,
        s.api_over_budget,
        events.len(),
        fake_hooks["delivered"],
        fake_hooks["refused"],
        paid_invoices.len(),
        info.subs,
        info.newcomers + info.subs as u64,
        ids.values().sum::<usize>(),
        mail_states,
        info.budget_micros,
        violations.len(),
    );
    assert!(violations.is_empty(), "violations:\n{}", violations.join("\n"));
    assert!(s.api_over_budget > 0, "the load reached the capped customer's budget");
    assert!(!acknowledged.is_empty() && charges > 0 && !events.is_empty() && !ids.is_empty(), "every kind of load ran");
}
