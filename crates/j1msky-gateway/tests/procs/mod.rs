//! The harness of the tests with real gateway processes (`processes.rs`,
//! `customer_processes.rs`): each process is the test binary run again (its
//! `gateway_process` test, which does nothing in an ordinary run) with its own gateway,
//! pool, reservation owner and, on PostgreSQL, its own slices; the parent drives it by
//! lines on its standard input.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::windows;
use j1msky_core::{Clock, ManualClock, SystemClock};
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
use j1msky_gateway::limits::LimitError;
use j1msky_gateway::{limits, policy, CallContext, Gateway, GatewayError, Limits, RetryPolicy};
use j1msky_sim::SimConfig;

pub const MAX_TOKENS: u32 = 1000;
pub const CHILD_DB: &str = "J1MSKY_GATEWAY_CHILD_DB";
pub const CHILD_SIM: &str = "J1MSKY_GATEWAY_CHILD_SIM";
pub const CHILD_NOW: &str = "J1MSKY_GATEWAY_CHILD_NOW";

pub fn request(max_tokens: u32) -> ChatRequest {
    ChatRequest {
        system: None,
        turns: vec![Turn { speaker: Speaker::User, text: "Summarise the quarter".into() }],
        max_tokens,
        temperature: None,
        stop: vec![],
    }
}

/// One gateway process, driven by lines on its standard input; each answer is a line
/// starting with `@@` on its standard output:
/// `race PREFIX N MAX_TOKENS CATEGORY [CUSTOMER]` → `@@ race ADMITTED REFUSED` (N
/// concurrent calls, for CUSTOMER when given),
/// `hold ID CUSTOMER` → `@@ held` (a call admitted and never settled),
/// `holdn PREFIX N CUSTOMER` → `@@ held N` (N concurrent calls admitted, never settled),
/// `flush` → `@@ flushed` (unused slices given back),
/// `sweep ADVANCE_MICROS` → `@@ swept N` (its clock moved on, then its sweeper's pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_process() {
    let (Ok(url), Ok(sim), Ok(now)) = (std::env::var(CHILD_DB), std::env::var(CHILD_SIM), std::env::var(CHILD_NOW))
    else {
        return;
    };
    let clock = ManualClock::new(now.parse().unwrap());
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let db = Db::connect(&url).await.unwrap();
    // As the runtime does: hear other processes' changes to customers, and give back the
    // customers' slices when they come.
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(j1msky_db::invalidation::listen(db.clone(), stop.clone()));
    let gw = Arc::new(
        Gateway::builder(db, catalogue)
            .clock(Arc::new(clock.clone()))
            .all_providers_at(&format!("http://{sim}/v1"), &format!("http://{sim}"), "k")
            .retry(RetryPolicy { retries_per_model: 0, ..RetryPolicy::default() })
            .limits(Limits::Shared)
            .build()
            .unwrap(),
    );
    let follower = gw.clone();
    tokio::spawn(async move { follower.follow_customer_changes(stop).await });
    let mut held = Vec::new();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["race", prefix, n, max_tokens, category, customer @ ..] => {
                let mut handles = Vec::new();
                for i in 0..n.parse::<usize>().unwrap() {
                    let gw = gw.clone();
                    let ctx = CallContext {
                        request_id: format!("{prefix}_{i:03}"),
                        customer_id: customer.first().map(|c| c.to_string()),
                        category: category.to_string(),
                        ..Default::default()
                    };
                    let req = request(max_tokens.parse().unwrap());
                    handles.push(tokio::spawn(async move { gw.complete(&ctx, None, &req).await }));
                }
                let (mut ok, mut refused) = (0, 0);
                for h in handles {
                    match h.await.unwrap() {
                        Ok(_) => ok += 1,
                        Err(GatewayError::Limit(LimitError::Budget { .. } | LimitError::Cap { .. })) => refused += 1,
                        Err(e) => panic!("unexpected failure: {e}"),
                    }
                }
                format!("race {ok} {refused}")
            }
            ["hold", id, customer] => {
                let ctx = CallContext {
                    request_id: id.to_string(),
                    customer_id: Some(customer.to_string()),
                    category: "general".into(),
                    ..Default::default()
                };
                held.push(gw.admit(&ctx, None, &request(MAX_TOKENS)).await.unwrap());
                "held".to_string()
            }
            ["holdn", prefix, n, customer] => {
                let mut handles = Vec::new();
                for i in 0..n.parse::<usize>().unwrap() {
                    let gw = gw.clone();
                    let ctx = CallContext {
                        request_id: format!("{prefix}_{i:03}"),
                        customer_id: Some(customer.to_string()),
                        category: "general".into(),
                        ..Default::default()
                    };
                    handles.push(tokio::spawn(async move { gw.admit(&ctx, None, &request(MAX_TOKENS)).await }));
                }
                for h in handles {
                    held.push(h.await.unwrap().unwrap());
                }
                format!("held {}", held.len())
            }
            ["flush"] => {
                gw.flush().await;
                "flushed".to_string()
            }
            ["sweep", advance] => {
                clock.advance_micros(advance.parse().unwrap());
                format!("swept {}", gw.release_expired_reservations().await.unwrap())
            }
            other => panic!("unknown command {other:?}"),
        };
        println!("@@ {answer}");
    }
}

/// A running gateway process.
pub struct Proc {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: BufReader<ChildStdout>,
}

impl Proc {
    pub fn start(url: &str, sim: &str, now: i64) -> Proc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["procs::gateway_process", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DB, url)
            .env(CHILD_SIM, sim)
            .env(CHILD_NOW, now.to_string())
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Proc { child, stdin, stdout }
    }

    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next answer (the words after `@@`). Read off the runtime's worker (which
    /// hands its queued tasks, the simulated provider's among them, to the others).
    pub fn answer(&mut self) -> Vec<String> {
        tokio::task::block_in_place(|| self.read_answer())
    }

    pub fn read_answer(&mut self) -> Vec<String> {
        loop {
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "the gateway process ended");
            // The test harness may have begun the line (`test gateway_process ... `).
            if let Some(at) = line.find("@@ ") {
                return line[at + 3..].split_whitespace().map(str::to_string).collect();
            }
        }
    }

    pub fn ask(&mut self, command: &str) -> Vec<String> {
        self.send(command);
        self.answer()
    }

    pub fn owner_prefix(&self) -> String {
        format!("{}-%", self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Fleet {
    pub t: TestDb,
    pub catalogue: Catalogue,
    pub sim: j1msky_sim::Running,
    pub procs: Vec<Proc>,
    pub now: i64,
}

pub async fn fleet(n: usize) -> Fleet {
    let t = TestDb::new().await;
    let catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    // Every answer is as long as `max_tokens`, so a settled call frees too little of its
    // reservation for another to fit where the budget is concerned.
    let sim = j1msky_sim::spawn(SimConfig {
        answer_tokens: MAX_TOKENS,
        latency: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let now = SystemClock.now_micros();
    let procs = (0..n).map(|_| Proc::start(&t.url, &sim.addr.to_string(), now)).collect();
    Fleet { t, catalogue, sim, procs, now }
}

impl Fleet {
    pub fn per_call(&self) -> i64 {
        policy::max_cost(&self.catalogue, "kimi-k2.5", request(MAX_TOKENS).most_input_tokens(), MAX_TOKENS).micros()
    }

    /// 64 calls spread evenly over the live processes, all sent before any answer is read.
    pub fn race(&mut self, prefix: &str, max_tokens: u32, category: &str) -> (usize, usize) {
        self.race_for(prefix, max_tokens, category, "")
    }

    /// As [`Fleet::race`], every call for `customer` (none when empty).
    pub fn race_for(&mut self, prefix: &str, max_tokens: u32, category: &str, customer: &str) -> (usize, usize) {
        let n = self.procs.len();
        for (i, p) in self.procs.iter_mut().enumerate() {
            let calls = 64 / n + usize::from(i < 64 % n);
            p.send(&format!("race {prefix}{i} {calls} {max_tokens} {category} {customer}"));
        }
        let (mut ok, mut refused) = (0, 0);
        for p in &mut self.procs {
            let a = p.answer();
            assert_eq!(a[0], "race");
            ok += a[1].parse::<usize>().unwrap();
            refused += a[2].parse::<usize>().unwrap();
        }
        (ok, refused)
    }

    pub fn flush(&mut self) {
        for p in &mut self.procs {
            assert_eq!(p.ask("flush"), ["flushed"]);
        }
    }

    /// The day's (spent, reserved), the ledger's (rows, sum) and the provider's request count.
    pub async fn books(&self) -> ((i64, i64), (i64, i64), u64) {
        let (day, _) = windows::day(chrono_tz::UTC, self.now);
        let (spent, reserved) = limits::budget_state(&self.t.db, "business:day", day).await.unwrap();
        let ledger: (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls")
                .fetch_one(self.t.db.pool())
                .await
                .unwrap();
        let stats: j1msky_sim::Stats =
            reqwest::get(format!("http://{}/_sim/stats", self.sim.addr)).await.unwrap().json().await.unwrap();
        ((spent.micros(), reserved.micros()), ledger, stats.requests)
    }

    /// Slices held by any process.
    pub async fn slices(&self) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM limit_leases").fetch_one(self.t.db.pool()).await.unwrap();
        n
    }

    /// What an owner holds in the day's budget: its reservation rows and budget slices.
    pub async fn held_by(&self, owner_like: &str) -> i64 {
        self.held_in(owner_like, "business:day").await
    }

    /// What an owner holds in a budget `scope`: its reservation rows and budget slices.
    pub async fn held_in(&self, owner_like: &str, scope: &str) -> i64 {
        let (rows,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) FROM budget_reservations
             WHERE owner LIKE $1 AND scope = $2",
        )
        .bind(owner_like)
        .bind(scope)
        .fetch_one(self.t.db.pool())
        .await
        .unwrap();
        rows + self.slices_in(owner_like, scope, "amount").await
    }

    /// What processes whose owner is like `owner_like` hold in slices of budget `scope`,
    /// their flushed spend included (what the sweeper counts as spent when they die).
    pub async fn sliced_in(&self, owner_like: &str, scope: &str) -> i64 {
        self.slices_in(owner_like, scope, "amount + spent").await
    }

    async fn slices_in(&self, owner_like: &str, scope: &str, sum: &str) -> i64 {
        let (slices,): (i64,) = sqlx::query_as(&format!(
            "SELECT CAST(COALESCE(SUM({sum}), 0) AS BIGINT) FROM limit_leases
             WHERE owner LIKE $1 AND kind = 'budget' AND scope = $2"
        ))
        .bind(owner_like)
        .bind(scope)
        .fetch_one(self.t.db.pool())
        .await
        .unwrap();
        slices
    }
}
