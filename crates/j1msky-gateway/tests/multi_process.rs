//! Limits shared by 2 and 4 processes on one database (each a gateway with its own pool,
//! its own reservation owner and, on PostgreSQL, its own settlement writer), on the engine
//! the test run selects: the 64-way races admit exactly what fits, every admitted call is
//! in the ledger and the budget, and what a dead process held is counted until the others'
//! sweeper ends its lease, never released before: a reservation per call is released, a
//! slice of the day's budget (PostgreSQL) counts as spent in full.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::windows;
use j1msky_core::{Clock, ManualClock, Money, SystemClock};
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
use j1msky_gateway::limits::{LimitError, RESERVATION_TTL};
use j1msky_gateway::{controls, limits, policy, CallContext, Gateway, GatewayError, Limits, RetryPolicy};
use j1msky_sim::SimConfig;

const MAX_TOKENS: u32 = 1000;

fn request(max_tokens: u32) -> ChatRequest {
    ChatRequest {
        system: None,
        turns: vec![Turn { speaker: Speaker::User, text: "Summarise the quarter".into() }],
        max_tokens,
        temperature: None,
        stop: vec![],
    }
}

struct Fleet {
    t: TestDb,
    catalogue: Arc<Catalogue>,
    sim: j1msky_sim::Running,
    pools: Vec<Db>,
    gateways: Vec<Arc<Gateway>>,
}

/// `n` gateways sharing limits in one fresh database, each on its own pool and `clock`.
async fn fleet(n: usize, clock: Arc<dyn Clock>) -> Fleet {
    // Every answer is as long as `max_tokens`, so a settled call frees too little for
    // another to fit where the budget is concerned.
    fleet_with(
        n,
        clock,
        SimConfig { answer_tokens: MAX_TOKENS, latency: Duration::from_millis(20), ..SimConfig::default() },
    )
    .await
}

/// [`fleet`] against a provider simulated as `sim` says.
async fn fleet_with(n: usize, clock: Arc<dyn Clock>, sim: SimConfig) -> Fleet {
    let t = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    let sim = j1msky_sim::spawn(sim).await.expect("sim");
    let mut pools = Vec::new();
    let mut gateways = Vec::new();
    for _ in 0..n {
        let db = Db::connect(&t.url).await.expect("pool");
        let gw = Gateway::builder(db.clone(), catalogue.clone())
            .clock(clock.clone())
            .all_providers_at(&sim.openai_base(), &sim.anthropic_base(), "k")
            .retry(RetryPolicy { retries_per_model: 0, ..RetryPolicy::default() })
            .limits(Limits::Shared)
            .build()
            .expect("gateway");
        pools.push(db);
        gateways.push(Arc::new(gw));
    }
    Fleet { t, catalogue, sim, pools, gateways }
}

impl Fleet {
    /// One call's reservation against the daily budget.
    fn per_call(&self) -> Money {
        policy::max_cost(&self.catalogue, "kimi-k2.5", request(MAX_TOKENS).most_input_tokens(), MAX_TOKENS)
    }

    /// `calls` concurrent calls spread over the gateways: (admitted, refused by `scope`).
    async fn race(&self, calls: usize, prefix: &str, max_tokens: u32, category: &str) -> (usize, usize) {
        let mut handles = Vec::new();
        for i in 0..calls {
            let gw = Arc::clone(&self.gateways[i % self.gateways.len()]);
            let ctx =
                CallContext { request_id: format!("{prefix}_{i:03}"), category: category.into(), ..Default::default() };
            handles.push(tokio::spawn(async move { gw.complete(&ctx, None, &request(max_tokens)).await }));
        }
        let (mut ok, mut refused) = (0, 0);
        for h in handles {
            match h.await.expect("join") {
                Ok(_) => ok += 1,
                Err(GatewayError::Limit(LimitError::Budget { .. } | LimitError::Cap { .. })) => refused += 1,
                Err(e) => panic!("unexpected failure: {e}"),
            }
        }
        (ok, refused)
    }

    /// The day's (spent, reserved), the ledger's (rows, sum) and the provider's request count.
    async fn books(&self, now: i64) -> ((Money, Money), (i64, i64), u64) {
        let (day, _) = windows::day(chrono_tz::UTC, now);
        let state = limits::budget_state(&self.t.db, "business:day", day).await.expect("state");
        let ledger: (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls")
                .fetch_one(self.t.db.pool())
                .await
                .expect("ledger");
        let stats: j1msky_sim::Stats = reqwest::get(format!("http://{}/_sim/stats", self.sim.addr))
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        (state, ledger, stats.requests)
    }

    /// Every gateway gives back the unused part of its slices (as at shutdown).
    async fn flush(&self) {
        for gw in &self.gateways {
            gw.flush().await;
        }
    }

    async fn close(self) {
        for p in &self.pools {
            p.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_that_fits_ten_admits_exactly_ten_over_two_and_four_processes() {
    for n in [2, 4] {
        let f = fleet(n, Arc::new(SystemClock)).await;
        let now = SystemClock.now_micros();
        let budget = Money::from_micros(f.per_call().micros() * 10 + f.per_call().micros() / 2);
        controls::set_daily_budget(&f.t.db, &Actor::cli(), Some(budget), "test", now).await.expect("budget");
        let (ok, refused) = f.race(64, &format!("req_b{n}"), MAX_TOKENS, "general").await;
        assert_eq!((ok, refused), (10, 54), "{n} processes: exactly the ten calls that fit");
        f.flush().await;
        let ((spent, reserved), (rows, sum), upstream) = f.books(now).await;
        assert_eq!(reserved, Money::ZERO, "{n} processes: every reservation settled");
        assert!(spent <= budget, "{n} processes: spent {spent} of {budget}");
        assert_eq!((rows, sum), (10, spent.micros()), "{n} processes: the budget's spend is the ledger's");
        assert_eq!(upstream, 10, "{n} processes: refused calls never reached the provider");
        f.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_global_hourly_cap_admits_exactly_its_number_over_two_and_four_processes() {
    for n in [2, 4] {
        let f = fleet(n, Arc::new(SystemClock)).await;
        let now = SystemClock.now_micros();
        controls::set_cap(&f.t.db, &f.catalogue, &Actor::cli(), "global", Some(25), "test", now).await.expect("cap");
        let (ok, refused) = f.race(64, &format!("req_c{n}"), 16, "code").await;
        f.flush().await;
        // A race crossing the hour boundary would reset the count; both hours then count.
        let used = limits::used_this_hour(&f.t.db, "global", SystemClock.now_micros()).await.expect("used");
        if used == 25 {
            assert_eq!((ok, refused), (25, 39), "{n} processes: exactly the cap");
        } else {
            assert!(ok > 25 && used < 25, "{n} processes: admitted {ok}, {used} this hour");
        }
        let (_, (rows, _), upstream) = f.books(now).await;
        assert_eq!(
            (rows, upstream),
            (ok as i64, ok as u64),
            "{n} processes: one ledger row and one upstream call each"
        );
        f.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_dead_process_held_is_kept_until_its_lease_ends_then_released_over_two_and_four_processes() {
    for n in [2, 4] {
        let clock = ManualClock::new(SystemClock.now_micros());
        let f = fleet(n, Arc::new(clock.clone())).await;
        let now = clock.now_micros();
        let budget = Money::from_micros(f.per_call().micros() * 10 + f.per_call().micros() / 2);
        controls::set_daily_budget(&f.t.db, &Actor::cli(), Some(budget), "test", now).await.expect("budget");
        // The last process admits a call and dies before settling it.
        let ctx = CallContext { request_id: format!("req_dead{n}"), category: "general".into(), ..Default::default() };
        let (_route, held) = f.gateways[n - 1].admit(&ctx, None, &request(MAX_TOKENS)).await.expect("admit");
        let mut f = f;
        f.gateways.pop();
        // What the dead process holds: its call's reservation, within its slice of the
        // day's budget on PostgreSQL (a reservation row on SQLite).
        let (day, _) = windows::day(chrono_tz::UTC, now);
        let (_, dead_held) = limits::budget_state(&f.t.db, "business:day", day).await.expect("state");
        let sliced = !held.leased.is_empty();
        assert_eq!(sliced, f.t.db.backend() == j1msky_db::Backend::Postgres, "slices on PostgreSQL only");
        assert!(dead_held >= f.per_call(), "{n} processes: at least its call is held");
        assert!(!held.budgets.is_empty() || !held.leased.is_empty());
        // The survivors race: what the dead process holds still counts while its lease runs.
        let (ok, _) = f.race(64, &format!("req_d{n}"), MAX_TOKENS, "general").await;
        f.flush().await;
        let ((spent, reserved), (rows, sum), _) = f.books(now).await;
        assert_eq!(reserved, dead_held, "{n} processes: the dead process's part is kept while its lease runs");
        assert!(budget.micros() - dead_held.micros() - spent.micros() < f.per_call().micros(), "all that fitted");
        // A sweep before the lease ends releases nothing; after it, a reservation per call
        // is released, and a slice counts as spent in full: what the dead process's calls
        // spent from it since its last flush is in no row but the ledger's.
        assert_eq!(f.gateways[0].release_expired_reservations().await.expect("sweep"), 0);
        clock.advance_micros(RESERVATION_TTL + 1);
        let released = f.gateways[0].release_expired_reservations().await.expect("sweep");
        assert!(released >= 1, "{n} processes: released once expired");
        let ((spent_after, reserved), (rows_after, _), _) = f.books(now).await;
        assert_eq!(reserved, Money::ZERO, "{n} processes: nothing held any more");
        assert!(
            spent <= budget && rows == ok as i64 && sum == spent.micros(),
            "{n} processes: {spent} over {rows} rows"
        );
        let swept_as_spent = if sliced { dead_held } else { Money::ZERO };
        assert_eq!(
            (spent_after, rows_after),
            (Money::from_micros(spent.micros() + swept_as_spent.micros()), rows),
            "{n} processes: the sweep writes no ledger row, and spends only a dead slice"
        );
        f.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_cap_applies_at_once_to_what_a_slice_still_holds() {
    let clock = ManualClock::new(SystemClock.now_micros());
    let f = fleet(1, Arc::new(clock.clone())).await;
    let now = clock.now_micros();
    controls::set_cap(&f.t.db, &f.catalogue, &Actor::cli(), "global", Some(1000), "test", now).await.expect("cap");
    let (ok, _) = f.race(5, "req_low_a", 16, "code").await;
    assert_eq!(ok, 5);
    // On PostgreSQL the process now holds a slice of the cap with calls to spare.
    controls::set_cap(&f.t.db, &f.catalogue, &Actor::cli(), "global", Some(5), "test", now).await.expect("cap");
    f.gateways[0].controls_changed();
    let (ok, refused) = f.race(3, "req_low_b", 16, "code").await;
    assert_eq!((ok, refused), (0, 3), "the new cap decides, not the slice taken under the old one");
    f.flush().await;
    assert_eq!(limits::used_this_hour(&f.t.db, "global", now).await.expect("used"), 5);
    f.close().await;
}

/// On PostgreSQL what a call spends from its process's slice of the day's budget goes to
/// the slice's row with the process's next flush (a few times a second): no settlement
/// writes the day's row, which every process would queue on, nor the slice's. Once
/// flushed the day's spend is exact where it is read (`budget_state`), and it lands in the
/// day's row when the slice is given back.
#[tokio::test]
async fn spend_from_a_slice_reaches_the_day_row_when_the_slice_is_given_back() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let f = fleet(1, clock.clone()).await;
    if f.t.db.backend() != j1msky_db::Backend::Postgres {
        return; // SQLite takes no slices: its settlement writes the day's row, in one process
    }
    let gw = &f.gateways[0];
    for i in 0..3 {
        let ctx = CallContext { request_id: format!("req_slice_{i}"), ..Default::default() };
        gw.complete(&ctx, None, &request(MAX_TOKENS)).await.expect("call");
    }
    let now = clock.now_micros();
    let (day, _) = windows::day(chrono_tz::UTC, now);
    let row = || async {
        let (spent, reserved): (i64, i64) = sqlx::query_as(
            "SELECT spent_micros, reserved_micros FROM budget_windows WHERE scope = 'business:day' AND window_start = $1",
        )
        .bind(day)
        .fetch_one(f.t.db.pool())
        .await
        .expect("day row");
        (spent, reserved)
    };
    let since = std::time::Instant::now();
    let ((spent, reserved), (rows, sum), _) = loop {
        let books = f.books(now).await;
        if books.0 .0.micros() == books.1 .1 {
            break books;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "the slice's spend was never flushed: {books:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(rows, 3);
    assert!(sum > 0, "the calls cost something");
    assert_eq!(spent.micros(), sum, "the day's spend is the ledger's, slices included");
    let lease: (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(spent), 0) AS BIGINT) FROM limit_leases WHERE kind = 'budget' AND scope = 'business:day'")
            .fetch_one(f.t.db.pool())
            .await
            .expect("slice");
    assert_eq!(lease.0, sum, "the flush wrote it to the slice's row");
    let (row_spent, row_reserved) = row().await;
    assert_eq!(row_spent, 0, "no settlement wrote the day's spend to its row");
    assert_eq!(row_reserved - reserved.micros(), sum, "the row holds the slice, its spent part included");
    assert_eq!(gw.reserved_now().await.expect("reserved").micros(), 0, "nothing in flight");

    f.flush().await;
    let ((spent_after, reserved_after), _, _) = f.books(now).await;
    assert_eq!((spent_after.micros(), reserved_after.micros()), (sum, 0), "the same spend, nothing held");
    assert_eq!(row().await, (sum, 0), "given back, the slice's spend is in the day's row");
}

/// A call can cost more than it reserved: a provider may bill more than the text it was
/// sent (context the gateway cannot see, a price it does not know yet), played here by a
/// provider counting 1.5 tokens a byte, beyond the reservation's bound of one. What a call
/// spends beyond its reservation is spend all the same. On PostgreSQL the calls are
/// admitted from the process's slice of the day's budget; the slice used to take back
/// only what was reserved, so the excess left the day's reservation below zero when the
/// slice was given back, and the budget admitted that much more again.
#[tokio::test]
async fn what_a_call_spends_beyond_its_reservation_counts_against_the_budget() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let f =
        fleet_with(1, clock.clone(), SimConfig { answer_tokens: 8, input_token_percent: 600, ..SimConfig::default() })
            .await;
    let gw = &f.gateways[0];
    let long = ChatRequest {
        system: None,
        turns: vec![Turn { speaker: Speaker::User, text: "Summarise the quarter, line by line. ".repeat(100) }],
        max_tokens: 8,
        temperature: None,
        stop: vec![],
    };
    for i in 0..4 {
        let ctx = CallContext { request_id: format!("req_over_{i}"), ..Default::default() };
        gw.complete(&ctx, None, &long).await.expect("call");
    }
    let calls: Vec<(String, i64)> =
        sqlx::query_as("SELECT model_used, cost_micros FROM llm_calls").fetch_all(f.t.db.pool()).await.expect("ledger");
    assert_eq!(calls.len(), 4);
    for (model, cost) in &calls {
        let reserved = policy::max_cost(&f.catalogue, model, long.most_input_tokens(), 8);
        assert!(*cost > reserved.micros(), "{model} cost {cost} µUSD, more than its reservation {reserved:?}");
    }
    let sum: i64 = calls.iter().map(|c| c.1).sum();
    // Given back (as at shutdown): the day's row holds every micro-USD the calls spent.
    f.flush().await;
    let now = clock.now_micros();
    let ((spent, reserved), (rows, ledger), _) = f.books(now).await;
    assert_eq!((rows, ledger), (4, sum));
    assert_eq!((spent.micros(), reserved.micros()), (sum, 0), "spend is the ledger's, nothing held, nothing owed");
    f.close().await;
}

/// A process that died owing its slice (its calls spent more than the slice held, a debt
/// it would have settled at its next top-up) is swept with what its calls spent, not with
/// what the slice held.
#[tokio::test]
async fn a_dead_process_s_slice_counts_what_its_calls_spent_beyond_what_it_held() {
    let t = TestDb::new().await;
    // The day's row holds the slice's take (5,000) in its reservation; the slice's calls
    // spent 5,700 (flushed to the slice's row), 700 more than it held.
    sqlx::query(
        "INSERT INTO budget_windows (scope, window_start, cap_micros, reserved_micros, spent_micros)
         VALUES ('business:day', 0, 1000000, 5000, 100)",
    )
    .execute(t.db.pool())
    .await
    .expect("day");
    sqlx::query(
        "INSERT INTO limit_leases (id, kind, scope, window_start, owner, amount, spent, expires_at)
         VALUES ('lse_dead', 'budget', 'business:day', 0, 'gw_gone', -700, 5700, 10)",
    )
    .execute(t.db.pool())
    .await
    .expect("slice");
    limits::release_expired(&t.db, 20).await.expect("sweep");
    let (spent, reserved) = limits::budget_state(&t.db, "business:day", 0).await.expect("state");
    assert_eq!((spent.micros(), reserved.micros()), (5800, 0), "every micro-USD the dead process's calls spent");
}

/// A prompt dense in tokens (a token per byte: numbers, rare scripts) cannot spend past a
/// budget: each call reserves what its text can count at most, so the last call that fits
/// is never one whose true cost overshoots. The budget leaves room for six calls and half
/// of a seventh at its true cost; the seventh used to fit its reservation (a token per
/// 3 bytes) and then cost more than was left.
#[tokio::test]
async fn a_prompt_dense_in_tokens_cannot_spend_past_the_budget() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let f =
        fleet_with(1, clock.clone(), SimConfig { answer_tokens: 8, input_token_percent: 400, ..SimConfig::default() })
            .await;
    let gw = &f.gateways[0];
    let dense = ChatRequest {
        system: None,
        turns: vec![Turn { speaker: Speaker::User, text: "4096,8191,".repeat(300) }],
        max_tokens: 8,
        temperature: None,
        stop: vec![],
    };
    let call = |i: usize| {
        let ctx =
            CallContext { request_id: format!("req_dense_{i:02}"), category: "general".into(), ..Default::default() };
        let gw = Arc::clone(gw);
        let dense = dense.clone();
        async move { gw.complete(&ctx, None, &dense).await }
    };
    call(0).await.expect("the first call");
    let (model, cost): (String, i64) =
        sqlx::query_as("SELECT model_used, cost_micros FROM llm_calls").fetch_one(f.t.db.pool()).await.expect("ledger");
    let typical = policy::max_cost(&f.catalogue, &model, dense.estimated_input_tokens(), 8).micros();
    assert!(cost > typical, "the dense prompt costs {cost}, more than a typical estimate's {typical}");
    let now = clock.now_micros();
    let budget = Money::from_micros(7 * cost - (cost - typical) / 2);
    controls::set_daily_budget(&f.t.db, &Actor::cli(), Some(budget), "test", now).await.expect("budget");
    gw.controls_changed();
    let mut admitted = 1;
    for i in 1..20 {
        match call(i).await {
            Ok(_) => admitted += 1,
            Err(GatewayError::Limit(LimitError::Budget { .. })) => break,
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    f.flush().await;
    let ((spent, reserved), (rows, sum), _) = f.books(now).await;
    assert_eq!((rows, sum, reserved.micros()), (admitted, spent.micros(), 0));
    let models: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT model_used FROM llm_calls").fetch_all(f.t.db.pool()).await.expect("models");
    assert_eq!(models.len(), 1, "every call on one model: {models:?}");
    assert!(spent <= budget, "spent {spent} of a {budget} budget over {admitted} calls");
    assert_eq!(admitted, 6, "the six calls that fit at their true cost");
    f.close().await;
}
