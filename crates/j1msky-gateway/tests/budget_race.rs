//! Budgets and caps hold under concurrency: 64 simultaneous calls against a daily budget
//! that fits 10, on the engine the test run selects — shared by two gateways with their
//! own connection pools on one database (as two server processes would be), and in one
//! gateway holding its limits in memory (the embedded default).

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::windows;
use j1msky_core::{Clock, Money, SystemClock};
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
use j1msky_gateway::limits::LimitError;
use j1msky_gateway::{controls, limits, policy, CallContext, Gateway, GatewayError, Limits, RetryPolicy};
use j1msky_sim::SimConfig;

const MAX_TOKENS: u32 = 1000;

fn request() -> ChatRequest {
    ChatRequest {
        system: None,
        turns: vec![Turn { speaker: Speaker::User, text: "Summarise the quarter".into() }],
        max_tokens: MAX_TOKENS,
        temperature: None,
        stop: vec![],
    }
}

fn new_gateway(
    db: Db,
    catalogue: Arc<Catalogue>,
    sim: &j1msky_sim::Running,
    limits: Limits,
) -> Result<Gateway, GatewayError> {
    Gateway::builder(db, catalogue)
        .all_providers_at(&sim.openai_base(), &sim.anthropic_base(), "k")
        .retry(RetryPolicy { retries_per_model: 0, ..RetryPolicy::default() })
        .limits(limits)
        .build()
}

/// A gateway whose limits live in the database (shared between processes).
async fn gateway(db: Db, catalogue: Arc<Catalogue>, sim: &j1msky_sim::Running) -> Arc<Gateway> {
    Arc::new(new_gateway(db, catalogue, sim, Limits::Shared).expect("shared limits"))
}

/// A gateway holding its limits in memory.
fn in_process(db: Db, catalogue: Arc<Catalogue>, sim: &j1msky_sim::Running) -> Arc<Gateway> {
    Arc::new(new_gateway(db, catalogue, sim, Limits::InProcess).expect("in-process limits"))
}

async fn race(gateways: &[Arc<Gateway>], calls: usize) -> (usize, usize) {
    let mut handles = Vec::new();
    for i in 0..calls {
        let gw = Arc::clone(&gateways[i % gateways.len()]);
        handles.push(tokio::spawn(async move {
            let ctx = CallContext {
                request_id: format!("req_race_{i:03}"),
                category: "general".into(),
                ..CallContext::default()
            };
            gw.complete(&ctx, None, &request()).await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for h in handles {
        match h.await.expect("join") {
            Ok(_) => ok += 1,
            Err(GatewayError::Limit(LimitError::Budget { .. })) => refused += 1,
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    (ok, refused)
}

struct Setup {
    test_db: TestDb,
    catalogue: Arc<Catalogue>,
    sim: j1msky_sim::Running,
    budget: Money,
    now: i64,
}

/// A database whose daily budget fits ten calls, and a provider answering each at full length.
async fn budget_for_ten() -> Setup {
    let test_db = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    // Every answer is as long as `max_tokens`, so the spend is close to the reservation and
    // a settled call frees too little for an eleventh to fit.
    let sim = j1msky_sim::spawn(SimConfig {
        answer_tokens: MAX_TOKENS,
        latency: Duration::from_millis(30),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let req = request();
    let per_call = policy::max_cost(&catalogue, "kimi-k2.5", req.most_input_tokens(), MAX_TOKENS);
    let budget = Money::from_micros(per_call.micros() * 10 + per_call.micros() / 2);
    let now = SystemClock.now_micros();
    controls::set_daily_budget(&test_db.db, &Actor::cli(), Some(budget), "test", now).await.expect("budget");
    Setup { test_db, catalogue, sim, budget, now }
}

/// After the race: nothing reserved, spend within budget and equal to the ledger's ten
/// rows, and refused calls never reached the provider.
async fn check_books(t: &Setup, gateways: &[Arc<Gateway>]) {
    // Every gateway gives back its slices first: one's unused slice is reserved to the others.
    for gw in gateways {
        gw.flush().await;
    }
    for gw in gateways {
        assert_eq!(gw.reserved_now().await.expect("reserved"), Money::ZERO, "every reservation settled");
    }
    let (day, _) = windows::day(chrono_tz::UTC, t.now);
    let (spent, reserved) = limits::budget_state(&t.test_db.db, "business:day", day).await.expect("state");
    assert_eq!(reserved, Money::ZERO, "every reservation settled");
    assert!(spent <= t.budget, "spent {spent} of {}", t.budget);
    let (rows, sum): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls")
            .fetch_one(t.test_db.db.pool())
            .await
            .expect("ledger");
    assert_eq!(rows, 10, "one ledger row per admitted call");
    assert_eq!(sum, spent.micros(), "the budget's spend is the ledger's");
    let stats: j1msky_sim::Stats =
        reqwest::get(format!("http://{}/_sim/stats", t.sim.addr)).await.expect("stats").json().await.expect("json");
    assert_eq!(stats.requests, 10, "refused calls never reached the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_calls_never_overspend_a_budget_that_fits_ten() {
    let t = budget_for_ten().await;
    let second = Db::connect(&t.test_db.url).await.expect("second pool");
    let gateways = vec![
        gateway(t.test_db.db.clone(), t.catalogue.clone(), &t.sim).await,
        gateway(second.clone(), t.catalogue.clone(), &t.sim).await,
    ];
    let (ok, refused) = race(&gateways, 64).await;
    assert_eq!(ok, 10, "exactly the ten calls the budget fits are admitted");
    assert_eq!(refused, 54);
    check_books(&t, &gateways).await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_held_in_memory_admit_exactly_ten_and_survive_a_restart() {
    let t = budget_for_ten().await;
    let gw = in_process(t.test_db.db.clone(), t.catalogue.clone(), &t.sim);
    assert!(gw.limits_in_process());
    if t.test_db.db.sqlite_file().is_some() {
        // One process holds a SQLite file's limits: a second is told to share them instead.
        let second = Db::connect(&t.test_db.url).await.expect("second pool");
        let refused = new_gateway(second.clone(), t.catalogue.clone(), &t.sim, Limits::InProcess);
        let Err(e) = refused else { panic!("a second holder of the limits must be refused") };
        assert!(e.to_string().contains("shared limits"), "{e}");
        second.close().await;
    }
    let (ok, refused) = race(std::slice::from_ref(&gw), 64).await;
    assert_eq!((ok, refused), (10, 54), "exactly the ten calls the budget fits are admitted");
    check_books(&t, std::slice::from_ref(&gw)).await;
    // A restarted process reads the day's spend back: the budget is still spent.
    drop(gw);
    let gw = in_process(t.test_db.db.clone(), t.catalogue.clone(), &t.sim);
    let ctx = CallContext { request_id: "req_after_restart".into(), category: "general".into(), ..Default::default() };
    match gw.complete(&ctx, None, &request()).await {
        Err(GatewayError::Limit(LimitError::Budget { committed, .. })) => {
            assert!(committed.micros() > 0, "the spend before the restart counts")
        }
        other => panic!("expected the budget to refuse, got {:?}", other.map(|c| c.cost)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_hourly_cap_admits_exactly_its_number_under_concurrency() {
    let test_db = TestDb::new().await;
    let second = Db::connect(&test_db.url).await.expect("second pool");
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    let sim =
        j1msky_sim::spawn(SimConfig { latency: Duration::from_millis(5), ..SimConfig::default() }).await.expect("sim");
    let now = SystemClock.now_micros();
    controls::set_cap(&test_db.db, &catalogue, &Actor::cli(), "model:kimi-k2.5", Some(25), "test", now)
        .await
        .expect("cap");
    let shared = [
        gateway(test_db.db.clone(), catalogue.clone(), &sim).await,
        gateway(second.clone(), catalogue.clone(), &sim).await,
    ];
    cap_race(&test_db, &shared, "req_cap").await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_hourly_cap_held_in_memory_admits_exactly_its_number() {
    let test_db = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    let sim =
        j1msky_sim::spawn(SimConfig { latency: Duration::from_millis(5), ..SimConfig::default() }).await.expect("sim");
    let now = SystemClock.now_micros();
    controls::set_cap(&test_db.db, &catalogue, &Actor::cli(), "model:kimi-k2.5", Some(25), "test", now)
        .await
        .expect("cap");
    let gw = in_process(test_db.db.clone(), catalogue.clone(), &sim);
    cap_race(&test_db, std::slice::from_ref(&gw), "req_cap_mem").await;
}

/// 64 concurrent calls against a model cap of 25 over `gateways`.
async fn cap_race(test_db: &TestDb, gateways: &[Arc<Gateway>], prefix: &str) {
    let mut handles = Vec::new();
    for i in 0..64 {
        let gw = Arc::clone(&gateways[i % gateways.len()]);
        let request_id = format!("{prefix}_{i:03}");
        handles.push(tokio::spawn(async move {
            let ctx = CallContext { request_id, category: "code".into(), ..Default::default() };
            let mut req = request();
            req.max_tokens = 16;
            gw.complete(&ctx, None, &req).await
        }));
    }
    let mut ok = 0;
    for h in handles {
        match h.await.expect("join") {
            Ok(_) => ok += 1,
            Err(GatewayError::Limit(LimitError::Cap { scope, .. })) => assert_eq!(scope, "model:kimi-k2.5"),
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    for gw in gateways {
        gw.flush().await;
    }
    // A cap crossing the hour boundary mid-test would reset the count; both hours count.
    let used_now =
        limits::used_this_hour(&test_db.db, "model:kimi-k2.5", SystemClock.now_micros()).await.expect("used");
    assert!(ok == 25 || (ok > 25 && used_now < 25), "admitted {ok}");
    if ok == 25 {
        assert_eq!(used_now, 25, "the count is persisted");
    }
}
