//! `j1msky serve` killed with SIGKILL under mixed load (tasks and direct API calls), ten
//! times in a row on one database, on the engine the test run selects: no task step
//! without its ledger row, nothing charged twice, no budget over its cap after a restart,
//! and on SQLite the killed server's running tasks are taken back at once by the next.
//! Prints the measured loss of API ledger rows per crash (docs/BENCHMARKS.md).

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_j1msky");
const CRASHES: usize = 10;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

struct Env {
    url: String,
    provider_flags: Vec<String>,
    /// The providers' key variables, set to anything (the simulator wants a key).
    key_envs: Vec<String>,
    _dir: j1msky_db::testing::Scratch,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("J1MSKY_DATABASE_URL", &self.url)
            .env("J1MSKY_CONFIG", repo_file("config/business.json"))
            .env("RUST_LOG", "error");
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
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// Starts `j1msky serve`; returns the child and its base URL.
    fn serve(&self) -> (Child, String) {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--workers", "3"];
        for f in &self.provider_flags {
            args.push("--provider-url");
            args.push(f);
        }
        let mut child = self.command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().expect("server printed its address").expect("read");
            if let Some(addr) = line.strip_prefix("j1msky listening on ") {
                break addr.trim().to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (child, base)
    }
}

async fn count(db: &j1msky_db::Db, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    n
}

/// What the load saw: request ids of API calls answered 200.
#[derive(Default)]
struct Seen {
    answered: HashSet<String>,
    /// Calls refused because the customer's budget was spent.
    over_budget: usize,
}

async fn api_load(base: String, key: String, seen: Arc<Mutex<Seen>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let http = reqwest::Client::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let sent = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "kimi-k2.5", "max_tokens": 50,
                          "messages": [{"role": "user", "content": "Summarise the week"}]}))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                if let Some(id) = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()) {
                    seen.lock().expect("seen").answered.insert(id.to_string());
                }
            }
            Ok(r) => {
                if r.status() == reqwest::StatusCode::PAYMENT_REQUIRED {
                    seen.lock().expect("seen").over_budget += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(_) => return,
        }
    }
}

async fn task_load(base: String, key: String, stop: Arc<std::sync::atomic::AtomicBool>, n: usize) {
    let http = reqwest::Client::new();
    for i in 0..n {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let r = http
            .post(format!("{base}/api/v1/tasks"))
            .bearer_auth(&key)
            .json(&json!({"team": "code", "prompt": format!("fix bug {i}")}))
            .send()
            .await;
        if r.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_mixed_load_ten_times_loses_no_step_ledger_and_overspends_no_budget() {
    let sim = j1msky_sim::spawn(j1msky_sim::SimConfig {
        latency: Duration::from_millis(15),
        ..j1msky_sim::SimConfig::default()
    })
    .await
    .expect("sim");
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    let overrides =
        j1msky_gateway::ProviderOverride::all_to(&catalogue, &sim.openai_base(), &sim.anthropic_base(), "sim");
    let (url, dir) = j1msky_db::testing::fresh_url().await;
    let env = Env {
        url,
        provider_flags: overrides.iter().map(|(id, o)| format!("{id}={}", o.base_url)).collect(),
        key_envs: catalogue.providers.values().map(|p| p.api_key_env.clone()).collect(),
        _dir: dir,
    };
    let sqlite = !env.url.starts_with("postgres");
    // A plan customer calling the API against a small monthly budget, and a pay-per-task
    // customer whose tasks each end in one charge.
    let api = env.json(&["customer", "add", "--name", "Api Co", "--stage", "active", "--plan", "pro"]);
    let api_id = api["customer"]["id"].as_str().expect("id").to_string();
    let api_key = env.json(&["key", "create", "--customer", &api_id, "--name", "load"])["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    // A second API customer whose small monthly budget the load spends within the first
    // crashes, to see that no restart lets it be overspent.
    let capped = env.json(&["customer", "add", "--name", "Capped Co", "--stage", "active", "--plan", "pro"]);
    let capped_id = capped["customer"]["id"].as_str().expect("id").to_string();
    let capped_key = env.json(&["key", "create", "--customer", &capped_id, "--name", "load"])["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let budget_micros: i64 = 2_000;
    env.json(&["gateway", "customer-budget", &capped_id, "0.002", "--reason", "crash: a capped customer"]);
    let walk_in = env.json(&["customer", "add", "--name", "Walk-in", "--stage", "active", "--payment-on-file"]);
    let walk_in_id = walk_in["customer"]["id"].as_str().expect("id").to_string();
    // Ten rounds of task load outrun a pay-per-task customer's hourly cap (50 calls):
    // this test is about crashes, so the operator lifts it for the walk-in.
    env.json(&["gateway", "cap", &format!("customer:{walk_in_id}"), "1000000", "--reason", "crash: load"]);
    let task_key = env.json(&["key", "create", "--customer", &walk_in_id, "--name", "tasks"])["secret"]
        .as_str()
        .expect("secret")
        .to_string();

    let db = j1msky_db::Db::connect(&env.url).await.expect("db");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut losses = Vec::new();
    for crash in 0..CRASHES {
        let (mut child, base) = env.serve();
        if sqlite && crash > 0 {
            // The killed server's claims are taken back at once, not after their lease
            // (a minute) runs out: every task it was running finishes under this one.
            let mut left = i64::MAX;
            for _ in 0..200 {
                left = count(&db, "SELECT COUNT(*) FROM tasks WHERE state IN ('running', 'queued')").await;
                if left == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if left != 0 {
                let rows: Vec<(String, Option<String>, Option<String>, i64)> = sqlx::query_as(
                    "SELECT state, wait_reason, error, attempts FROM tasks WHERE state IN ('running', 'queued')",
                )
                .fetch_all(db.pool())
                .await
                .expect("tasks");
                panic!("crash {crash}: the tasks of the killed server were not taken back: {rows:?}");
            }
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        for key in [&api_key, &api_key, &capped_key] {
            load.push(tokio::spawn(api_load(base.clone(), key.clone(), seen.clone(), stop.clone())));
        }
        load.push(tokio::spawn(task_load(base.clone(), task_key.clone(), stop.clone(), 6)));
        // Kill once steps are being written, with calls and steps in flight.
        let before = count(&db, "SELECT COUNT(*) FROM task_steps").await;
        for _ in 0..200 {
            if count(&db, "SELECT COUNT(*) FROM task_steps").await >= before + 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for l in load {
            let _ = l.await;
        }

        let orphans = count(
            &db,
            "SELECT COUNT(*) FROM task_steps s WHERE NOT EXISTS (SELECT 1 FROM llm_calls l
                 WHERE l.request_id = s.task_id || '.s' || CAST(s.step AS TEXT) || '.a' || CAST(s.attempt AS TEXT)
                   AND l.outcome = 'ok')",
        )
        .await;
        assert_eq!(orphans, 0, "crash {crash}: task steps without their ledger row");
        let doubled = count(
            &db,
            "SELECT COUNT(*) FROM (SELECT task_id FROM usage_charges GROUP BY task_id HAVING COUNT(*) > 1) d",
        )
        .await;
        assert_eq!(doubled, 0, "crash {crash}: a task charged twice");
        let succeeded_uncharged = count(
            &db,
            "SELECT COUNT(*) FROM tasks t WHERE t.state = 'succeeded'
                 AND NOT EXISTS (SELECT 1 FROM usage_charges u WHERE u.task_id = t.id)",
        )
        .await;
        assert_eq!(succeeded_uncharged, 0, "crash {crash}: a pay-per-task success without its charge");
        let over = count(&db, "SELECT COUNT(*) FROM budget_windows WHERE spent_micros > cap_micros").await;
        assert_eq!(over, 0, "crash {crash}: a budget window spent over its cap");
        let api_spent = count(
            &db,
            &format!(
                "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = '{capped_id}'"
            ),
        )
        .await;
        assert!(
            api_spent <= budget_micros,
            "crash {crash}: the capped customer's ledger {api_spent} > {budget_micros}"
        );

        // API calls answered 200 whose ledger row is missing: lost in this crash.
        let ledgered: Vec<(String,)> =
            sqlx::query_as("SELECT DISTINCT request_id FROM llm_calls WHERE task_id IS NULL AND outcome = 'ok'")
                .fetch_all(db.pool())
                .await
                .expect("ledger");
        let ledgered: HashSet<String> = ledgered.into_iter().map(|r| r.0).collect();
        let mut s = seen.lock().expect("seen");
        let lost = s.answered.iter().filter(|id| !ledgered.contains(*id)).count();
        losses.push(lost);
        s.answered.clear();
    }
    // After the last crash a server finishes everything and stops cleanly.
    let (child, base) = env.serve();
    let pid = child.id().to_string();
    // Serving requests: its signal handlers are in place.
    let health = reqwest::get(format!("{base}/healthz")).await.expect("healthz");
    assert!(health.status().is_success());
    if sqlite {
        for _ in 0..200 {
            if count(&db, "SELECT COUNT(*) FROM tasks WHERE state IN ('running', 'queued')").await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut child = child;
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    assert!(child.wait().expect("wait").success());
    assert!(seen.lock().expect("seen").over_budget > 0, "the load reached the API customer's budget");
    let steps = count(&db, "SELECT COUNT(*) FROM task_steps").await;
    assert!(steps >= CRASHES as i64 * 3, "the load wrote steps: {steps}");
    if sqlite {
        let (spent, reserved): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(spent_micros), 0) AS BIGINT), CAST(COALESCE(SUM(reserved_micros), 0) AS BIGINT)
             FROM budget_windows WHERE scope = 'customer:' || $1 || ':month'",
        )
        .bind(&capped_id)
        .fetch_one(db.pool())
        .await
        .expect("budget");
        assert!(spent + reserved <= budget_micros, "spent {spent} + held {reserved} > {budget_micros}");
    }
    eprintln!(
        "API ledger rows lost per crash ({}): {losses:?}, max {}",
        if sqlite { "sqlite" } else { "postgres" },
        losses.iter().max().copied().unwrap_or(0)
    );
    db.close().await;
}
