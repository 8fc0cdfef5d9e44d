//! Budgets and caps hold under concurrency: 64 simultaneous calls against a daily budget
//! that fits 10, shared by two gateways with their own connection pools on one database
//! (as two server processes would be), on the engine the test run selects.

use std::sync::Arc;
use std::time::Duration;

use j1msky_accounts::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::{Clock, Money, SystemClock};
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
use j1msky_gateway::limits::LimitError;
use j1msky_gateway::providers::Timeouts;
use j1msky_gateway::{
    controls, limits, policy, windows, CallContext, Gateway, GatewayError, ProviderOverride, RetryPolicy,
};
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

async fn gateway(db: Db, catalogue: Arc<Catalogue>, sim: &j1msky_sim::Running) -> Arc<Gateway> {
    let overrides = ProviderOverride::all_to(&catalogue, &sim.openai_base(), &sim.anthropic_base(), "k");
    Arc::new(Gateway::new(
        db,
        catalogue,
        Arc::new(SystemClock),
        &overrides,
        Timeouts::default(),
        RetryPolicy { retries_per_model: 0, ..RetryPolicy::default() },
    ))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_calls_never_overspend_a_budget_that_fits_ten() {
    let test_db = TestDb::new().await;
    let second = Db::connect(&test_db.url).await.expect("second pool");
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
    let per_call = policy::max_cost(&catalogue, "kimi-k2.5", req.estimated_input_tokens(), MAX_TOKENS);
    let budget = Money::from_micros(per_call.micros() * 10 + per_call.micros() / 2);
    let now = SystemClock.now_micros();
    controls::set_daily_budget(&test_db.db, &Actor::cli(), Some(budget), now).await.expect("budget");

    let gateways = vec![
        gateway(test_db.db.clone(), catalogue.clone(), &sim).await,
        gateway(second.clone(), catalogue.clone(), &sim).await,
    ];
    let (ok, refused) = race(&gateways, 64).await;
    assert_eq!(ok, 10, "exactly the ten calls the budget fits are admitted");
    assert_eq!(refused, 54);

    let (day, _) = windows::day(chrono_tz::UTC, now);
    let (spent, reserved) = limits::budget_state(&test_db.db, "business:day", day).await.expect("state");
    assert_eq!(reserved, Money::ZERO, "every reservation settled");
    assert!(spent <= budget, "spent {spent} of {budget}");
    let (rows, sum): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls")
            .fetch_one(test_db.db.pool())
            .await
            .expect("ledger");
    assert_eq!(rows, 10, "one ledger row per admitted call");
    assert_eq!(sum, spent.micros(), "the budget's spend is the ledger's");
    let stats: j1msky_sim::Stats =
        reqwest::get(format!("http://{}/_sim/stats", sim.addr)).await.expect("stats").json().await.expect("json");
    assert_eq!(stats.requests, 10, "refused calls never reached the provider");
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_hourly_cap_admits_exactly_its_number_under_concurrency() {
    let test_db = TestDb::new().await;
    let second = Db::connect(&test_db.url).await.expect("second pool");
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    let sim =
        j1msky_sim::spawn(SimConfig { latency: Duration::from_millis(5), ..SimConfig::default() }).await.expect("sim");
    let now = SystemClock.now_micros();
    controls::set_cap(&test_db.db, &Actor::cli(), "model:kimi-k2.5", Some(25), now).await.expect("cap");
    let gateways = [
        gateway(test_db.db.clone(), catalogue.clone(), &sim).await,
        gateway(second.clone(), catalogue.clone(), &sim).await,
    ];
    let mut handles = Vec::new();
    for i in 0..64 {
        let gw = Arc::clone(&gateways[i % 2]);
        handles.push(tokio::spawn(async move {
            let ctx =
                CallContext { request_id: format!("req_cap_{i:03}"), category: "code".into(), ..Default::default() };
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
    // A cap crossing the hour boundary mid-test would reset the count; both hours count.
    let used_now =
        limits::used_this_hour(&test_db.db, "model:kimi-k2.5", SystemClock.now_micros()).await.expect("used");
    assert!(ok == 25 || (ok > 25 && used_now < 25), "admitted {ok}");
    second.close().await;
}
