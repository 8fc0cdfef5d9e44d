//! The gateway's database cost per call (see `bench/gateway-overhead`): closed-loop calls
//! through a real gateway with full policy (a customer's standing, four hourly caps, the
//! day's and the customer's budgets, settlement, ledger) against the simulated provider
//! over loopback, in this process, with no HTTP in front.
//!
//! ```text
//! gateway_bench closed URL CONC SECS      CONC callers loop for SECS; prints calls/s, and on
//!                                         PostgreSQL the statements and transactions per call
//!                                         (from pg_stat_statements and pg_stat_database when
//!                                         the server has them) and this process's CPU seconds
//! gateway_bench prepare URL               only makes the bench customer (for several processes)
//! ```
//!
//! With `BENCH_BARRIER=DIR`, processes started together measure the same window. With
//! `BENCH_LEASES=0`, PostgreSQL admits the shared caps and day budget per call instead of
//! from this process's slices (`Gateway::without_leases`, for before/after figures in one
//! run). `BENCH_LINGER_US=N` sets how long a settlement batch may wait for calls on their
//! way (`Gateway::settlement_linger`; 0: never, the behaviour before). `BENCH_NO_CUSTOMER=1` makes calls without a customer (only the business's caps
//! and budget apply). Each process calls for a customer of its own (`BENCH_CUSTOMER`, default the
//! process id), as separate processes of a deployment serve different customers.

// A bench stops at the first surprise: panicking shortcuts, the wall clock and untracked
// tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::Stage;
use j1msky_core::{Clock, Money, SystemClock};
use j1msky_db::{Backend, Db};
use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
use j1msky_gateway::limits::LimitError;
use j1msky_gateway::{controls, CallContext, Gateway, GatewayError};

type Error = Box<dyn std::error::Error>;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, Error> {
    args.get(i).and_then(|a| a.parse().ok()).ok_or_else(|| format!("argument {i} ({what}) missing or invalid").into())
}

/// The bench customer (made once per database): active Pro, a monthly budget, and caps and
/// budgets that never bind (the checks still run on every call).
async fn prepare(db: &Db, catalogue: &Catalogue, name: &str) -> Result<String, Error> {
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT id FROM customers WHERE name = $1").bind(name).fetch_optional(db.pool()).await?;
    if let Some((id,)) = existing {
        return Ok(id);
    }
    let now = SystemClock.now_micros();
    let c = customers::create(
        db,
        catalogue,
        &Actor::cli(),
        NewCustomer {
            name: name.into(),
            stage: Some(Stage::Active),
            plan: Some("pro".into()),
            ..NewCustomer::default()
        },
        now,
    )
    .await?;
    sqlx::query("UPDATE customers SET monthly_budget_micros = $1 WHERE id = $2")
        .bind(1_000_000_000_000i64)
        .bind(&c.id)
        .execute(db.pool())
        .await?;
    let big = Some(1_000_000_000);
    for scope in ["global".to_string(), format!("customer:{}", c.id)]
        .into_iter()
        .chain(catalogue.providers.keys().map(|p| format!("provider:{p}")))
    {
        controls::set_cap(db, catalogue, &Actor::cli(), &scope, big, "benchmark", now).await?;
    }
    controls::set_daily_budget(db, &Actor::cli(), Some(Money::from_micros(1_000_000_000_000)), "benchmark", now)
        .await?;
    Ok(c.id)
}

/// (round trips, statements, transactions committed) so far in this database, when the
/// server counts them: round trips are the statements the client sent (`toplevel`),
/// statements include those run inside functions and triggers (the server's work).
async fn pg_counts(db: &Db) -> Option<(i64, i64, i64)> {
    if db.backend() != Backend::Postgres {
        return None;
    }
    let statements: (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(calls) FILTER (WHERE toplevel), 0) AS BIGINT),
                CAST(COALESCE(SUM(calls), 0) AS BIGINT) FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(db.pool())
    .await
    .ok()?;
    let commits: (i64,) = sqlx::query_as("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(db.pool())
        .await
        .ok()?;
    Some((statements.0, statements.1, commits.0))
}

/// User and system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
    ticks / 100.0
}

/// With `BENCH_BARRIER=DIR` (several processes measured together, see
/// `bench/gateway-db-cost`): says `ready` (warmed up) or `done` (measured) by a file in DIR,
/// and after `ready` waits for DIR/go, so every process measures the same window.
async fn barrier(stage: &str) {
    let Ok(dir) = std::env::var("BENCH_BARRIER") else { return };
    let dir = std::path::PathBuf::from(dir);
    std::fs::write(dir.join(format!("{stage}-{}", std::process::id())), b"").expect("barrier file");
    if stage == "ready" {
        while !dir.join("go").exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn customer_name() -> String {
    format!("Gateway bench {}", std::env::var("BENCH_CUSTOMER").unwrap_or_else(|_| std::process::id().to_string()))
}

async fn closed_loop(db: Db, catalogue: Arc<Catalogue>, conc: usize, secs: u64) -> Result<(), Error> {
    let customer = prepare(&db, &catalogue, &customer_name()).await?;
    let sim = j1msky_sim::spawn(j1msky_sim::SimConfig { latency: Duration::ZERO, ..Default::default() }).await?;
    let gateway = Gateway::builder(db.clone(), catalogue.clone())
        .all_providers_at(&sim.openai_base(), &sim.anthropic_base(), "bench")
        .build()?;
    let leases = std::env::var("BENCH_LEASES").map_or(true, |v| v != "0");
    // `BENCH_NO_CUSTOMER=1`: calls of the business itself, only the shared caps and budget.
    let with_customer = std::env::var("BENCH_NO_CUSTOMER").map_or(true, |v| v != "1");
    let gateway = if leases { gateway } else { gateway.without_leases() };
    // `BENCH_LINGER_US=0`: settlement batches never wait for calls on their way (before 0043).
    let gateway = Arc::new(match std::env::var("BENCH_LINGER_US").ok().and_then(|v| v.parse().ok()) {
        Some(us) => gateway.settlement_linger(Duration::from_micros(us)),
        None => gateway,
    });
    let request = ChatRequest {
        system: None,
        turns: vec![Turn { speaker: Speaker::User, text: "Summarise the quarter in one line".into() }],
        max_tokens: 32,
        temperature: None,
        stop: vec![],
    };
    // Warm the caches (terms, controls, pools) before counting.
    for i in 0..conc * 4 {
        let ctx = CallContext {
            request_id: format!("req_warm_{}_{i}", std::process::id()),
            customer_id: with_customer.then(|| customer.clone()),
            category: "general".into(),
            ..Default::default()
        };
        gateway.complete(&ctx, None, &request).await?;
    }
    gateway.flush().await;
    barrier("ready").await;
    let before = pg_counts(&db).await;
    let cpu_before = cpu_seconds();
    let done = Arc::new(AtomicU64::new(0));
    let paused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for c in 0..conc {
        let (gateway, done, request, customer) = (gateway.clone(), done.clone(), request.clone(), customer.clone());
        let paused = paused.clone();
        handles.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let ctx = CallContext {
                    request_id: format!("req_{}_{c}_{i}", std::process::id()),
                    customer_id: with_customer.then(|| customer.clone()),
                    category: "general".into(),
                    ..Default::default()
                };
                match gateway.complete(&ctx, None, &request).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    // SQLite's in-memory limits pause calls while the ledger's writer is
                    // behind: a client waits and calls again, as it would on a 503.
                    Err(GatewayError::Limit(LimitError::Backlog { .. })) => {
                        paused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => panic!("call: {e}"),
                }
                i += 1;
            }
        }));
    }
    for h in handles {
        h.await?;
    }
    gateway.flush().await;
    let took = started.elapsed().as_secs_f64();
    let calls = done.load(Ordering::Relaxed);
    let cpu = cpu_seconds() - cpu_before;
    barrier("done").await;
    let mut line = format!(
        "closed backend={} leases={leases} customer={with_customer} conc={conc} calls={calls} secs={took:.2} calls_per_sec={:.0} process_cpu_s={cpu:.2} paused={}",
        db.backend().name(),
        calls as f64 / took,
        paused.load(Ordering::Relaxed)
    );
    if let (Some((r0, s0, c0)), Some((r1, s1, c1))) = (before, pg_counts(&db).await) {
        // The two counting queries themselves are in the figures: two statements, no commit.
        let per = |d: i64| d as f64 / calls.max(1) as f64;
        line.push_str(&format!(
            " round_trips_per_call={:.2} statements_per_call={:.2} commits_per_call={:.2}",
            per(r1 - r0 - 2),
            per(s1 - s0 - 2),
            per(c1 - c0)
        ));
    }
    println!("{line}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let mode: String = arg(&args, 1, "mode")?;
    let url: String = arg(&args, 2, "database URL")?;
    let db = Db::open(&url).await?;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED)?);
    match mode.as_str() {
        "closed" => closed_loop(db, catalogue, arg(&args, 3, "callers")?, arg(&args, 4, "seconds")?).await?,
        "prepare" => println!("{}", prepare(&db, &catalogue, &customer_name()).await?),
        other => return Err(format!("unknown mode {other}").into()),
    }
    Ok(())
}
