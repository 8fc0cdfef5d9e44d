//! Limits shared by 2 and 4 operating-system processes on one database and one simulated
//! provider over loopback: each process is this test binary run again (`gateway_process`,
//! which does nothing in an ordinary run) with its own gateway, pool, reservation owner
//! and, on PostgreSQL, its own slices of the shared caps and day budget. The parent spreads
//! 64 calls over them and checks the books; one process is killed with SIGKILL while it
//! holds a slice and a reservation, and the survivors' sweeper frees what it held only
//! once its lease ran out. Runs on the engine the test run selects (several processes on
//! one SQLite file is a real deployment with `--shared-limits` too).

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::Stage;
use j1msky_core::windows;
use j1msky_core::{Clock, ManualClock, Money, SystemClock};
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
use j1msky_gateway::limits::{LimitError, RESERVATION_TTL};
use j1msky_gateway::{controls, limits, policy, CallContext, Gateway, GatewayError, Limits, RetryPolicy};
use j1msky_sim::SimConfig;

const MAX_TOKENS: u32 = 1000;
const CHILD_DB: &str = "J1MSKY_GATEWAY_CHILD_DB";
const CHILD_SIM: &str = "J1MSKY_GATEWAY_CHILD_SIM";
const CHILD_NOW: &str = "J1MSKY_GATEWAY_CHILD_NOW";

fn request(max_tokens: u32) -> ChatRequest {
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
/// `race PREFIX N MAX_TOKENS CATEGORY` → `@@ race ADMITTED REFUSED` (N concurrent calls),
/// `hold ID CUSTOMER` → `@@ held` (a call admitted and never settled),
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
    let gw = Arc::new(
        Gateway::builder(db, catalogue)
            .clock(Arc::new(clock.clone()))
            .all_providers_at(&format!("http://{sim}/v1"), &format!("http://{sim}"), "k")
            .retry(RetryPolicy { retries_per_model: 0, ..RetryPolicy::default() })
            .limits(Limits::Shared)
            .build()
            .unwrap(),
    );
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
            ["race", prefix, n, max_tokens, category] => {
                let mut handles = Vec::new();
                for i in 0..n.parse::<usize>().unwrap() {
                    let gw = gw.clone();
                    let ctx = CallContext {
                        request_id: format!("{prefix}_{i:03}"),
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
struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn start(url: &str, sim: &str, now: i64) -> Proc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["gateway_process", "--exact", "--nocapture", "--test-threads=1"])
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

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next answer (the words after `@@`). Read off the runtime's worker (which
    /// hands its queued tasks, the simulated provider's among them, to the others).
    fn answer(&mut self) -> Vec<String> {
        tokio::task::block_in_place(|| self.read_answer())
    }

    fn read_answer(&mut self) -> Vec<String> {
        loop {
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "the gateway process ended");
            // The test harness may have begun the line (`test gateway_process ... `).
            if let Some(at) = line.find("@@ ") {
                return line[at + 3..].split_whitespace().map(str::to_string).collect();
            }
        }
    }

    fn ask(&mut self, command: &str) -> Vec<String> {
        self.send(command);
        self.answer()
    }

    fn owner_prefix(&self) -> String {
        format!("{}-%", self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fleet {
    t: TestDb,
    catalogue: Catalogue,
    sim: j1msky_sim::Running,
    procs: Vec<Proc>,
    now: i64,
}

async fn fleet(n: usize) -> Fleet {
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
    fn per_call(&self) -> i64 {
        policy::max_cost(&self.catalogue, "kimi-k2.5", request(MAX_TOKENS).estimated_input_tokens(), MAX_TOKENS)
            .micros()
    }

    /// 64 calls spread evenly over the live processes, all sent before any answer is read.
    fn race(&mut self, prefix: &str, max_tokens: u32, category: &str) -> (usize, usize) {
        let n = self.procs.len();
        for (i, p) in self.procs.iter_mut().enumerate() {
            let calls = 64 / n + usize::from(i < 64 % n);
            p.send(&format!("race {prefix}{i} {calls} {max_tokens} {category}"));
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

    fn flush(&mut self) {
        for p in &mut self.procs {
            assert_eq!(p.ask("flush"), ["flushed"]);
        }
    }

    /// The day's (spent, reserved), the ledger's (rows, sum) and the provider's request count.
    async fn books(&self) -> ((i64, i64), (i64, i64), u64) {
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
    async fn slices(&self) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM limit_leases").fetch_one(self.t.db.pool()).await.unwrap();
        n
    }

    /// What an owner holds in the day's budget: its reservation rows and budget slices.
    async fn held_by(&self, owner_like: &str) -> i64 {
        let (rows,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) FROM budget_reservations
             WHERE owner LIKE $1 AND scope = 'business:day'",
        )
        .bind(owner_like)
        .fetch_one(self.t.db.pool())
        .await
        .unwrap();
        let (slices,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM limit_leases
             WHERE owner LIKE $1 AND kind = 'budget' AND scope = 'business:day'",
        )
        .bind(owner_like)
        .fetch_one(self.t.db.pool())
        .await
        .unwrap();
        rows + slices
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_that_fits_ten_admits_exactly_ten_over_two_and_four_processes() {
    for n in [2, 4] {
        let mut f = fleet(n).await;
        let budget = f.per_call() * 10 + f.per_call() / 2;
        controls::set_daily_budget(&f.t.db, &Actor::cli(), Some(Money::from_micros(budget)), "test", f.now)
            .await
            .unwrap();
        let (ok, refused) = f.race(&format!("req_b{n}_"), MAX_TOKENS, "general");
        assert_eq!((ok, refused), (10, 54), "{n} processes: exactly the ten calls that fit");
        f.flush();
        let ((spent, reserved), (rows, sum), upstream) = f.books().await;
        assert_eq!(reserved, 0, "{n} processes: every reservation settled and every slice given back");
        assert!(spent <= budget, "{n} processes: spent {spent} of {budget}");
        assert_eq!((rows, sum), (10, spent), "{n} processes: the budget's spend is the ledger's, each call once");
        assert_eq!(upstream, 10, "{n} processes: refused calls never reached the provider");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_hourly_cap_admits_exactly_its_number_over_two_and_four_processes() {
    for n in [2, 4] {
        let mut f = fleet(n).await;
        controls::set_cap(&f.t.db, &f.catalogue, &Actor::cli(), "global", Some(25), "test", f.now).await.unwrap();
        let (ok, refused) = f.race(&format!("req_c{n}_"), 16, "code");
        assert_eq!((ok, refused), (25, 39), "{n} processes: exactly the cap");
        if f.t.db.backend() == j1msky_db::Backend::Postgres {
            assert!(f.slices().await >= n as i64, "{n} processes: each holds slices of the shared caps");
        }
        f.flush();
        assert_eq!(f.slices().await, 0, "{n} processes: every slice given back at shutdown");
        assert_eq!(limits::used_this_hour(&f.t.db, "global", f.now).await.unwrap(), 25, "{n} processes: counted once");
        let (_, (rows, _), upstream) = f.books().await;
        assert_eq!((rows, upstream), (25, 25), "{n} processes: one ledger row and one upstream call each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_holding_a_slice_and_a_reservation_is_released_after_its_lease_never_before() {
    for n in [2, 4] {
        let mut f = fleet(n).await;
        let budget = f.per_call() * 10 + f.per_call() / 2;
        controls::set_daily_budget(&f.t.db, &Actor::cli(), Some(Money::from_micros(budget)), "test", f.now)
            .await
            .unwrap();
        let input = NewCustomer {
            name: "Acme".into(),
            stage: Some(Stage::Active),
            plan: Some("pro".into()),
            ..NewCustomer::default()
        };
        let customer = customers::create(&f.t.db, &f.catalogue, &Actor::cli(), input, f.now).await.unwrap().id;
        let month_budget = Money::from_micros(f.per_call() * 100);
        j1msky_accounts::customer_links::set_monthly_budget(
            &f.t.db,
            &Actor::cli(),
            &customer,
            Some(month_budget),
            "process race fixture",
            f.now,
        )
        .await
        .unwrap();
        // The last process admits a customer's call (a slice of the day's budget, a
        // reservation row in the customer's month) and is killed before settling it.
        let mut dead = f.procs.pop().unwrap();
        assert_eq!(dead.ask(&format!("hold req_dead{n} {customer}")), ["held"]);
        let dead_owner = dead.owner_prefix();
        std::process::Command::new("kill").args(["-9", &dead.child.id().to_string()]).status().unwrap();
        assert!(!dead.child.wait().unwrap().success(), "killed, not finished");
        let dead_held = f.held_by(&dead_owner).await;
        assert!(dead_held >= f.per_call(), "{n} processes: the dead process held at least its call");
        let (month, _) = windows::month(chrono_tz::UTC, f.now);
        let month_scope = limits::customer_month_scope(&customer);
        let (_, month_reserved) = limits::budget_state(&f.t.db, &month_scope, month).await.unwrap();
        assert_eq!(month_reserved.micros(), f.per_call(), "{n} processes: its reservation row is held");

        // The survivors race: what the dead process holds still counts while its lease runs.
        let (ok, _) = f.race(&format!("req_d{n}_"), MAX_TOKENS, "general");
        f.flush();
        let ((spent, reserved), (rows, sum), upstream) = f.books().await;
        assert_eq!(reserved, dead_held, "{n} processes: only the dead process's part is still reserved");
        assert!(spent + dead_held <= budget, "{n} processes: never overspent");
        assert!(budget - dead_held - spent < f.per_call(), "{n} processes: everything that fitted was admitted");
        assert_eq!((rows, sum, upstream), (ok as i64, spent, ok as u64), "{n} processes: each admitted call once");

        // The survivors' sweeper: nothing before the lease ends, everything after.
        assert_eq!(f.procs[0].ask("sweep 0"), ["swept", "0"]);
        assert_eq!(f.procs[0].ask(&format!("sweep {}", RESERVATION_TTL - 1)), ["swept", "0"]);
        assert_eq!(f.held_by(&dead_owner).await, dead_held, "{n} processes: kept while the lease runs");
        let swept = f.procs[0].ask("sweep 2");
        assert!(swept[1].parse::<u64>().unwrap() >= 2, "{n} processes: its slice and its reservation: {swept:?}");
        assert_eq!(f.held_by(&dead_owner).await, 0, "{n} processes: released once expired");
        let ((spent_after, reserved_after), _, _) = f.books().await;
        assert_eq!((spent_after, reserved_after), (spent, 0), "{n} processes: nothing held, nothing spent twice");
        let (_, month_reserved) = limits::budget_state(&f.t.db, &month_scope, month).await.unwrap();
        assert_eq!(month_reserved, Money::ZERO, "{n} processes: the customer's month is free again");
    }
}
