//! The task benchmark's driver (see `bench/task-throughput`): real database, real gateway,
//! the simulated provider over loopback, tasks through the 2-role code team.
//!
//! ```text
//! task_bench throughput URL TASKS WORKERS          all queued first, then drained; prints tasks/s
//! task_bench queue-wait URL RATE SECS WORKERS      submitted at RATE/s against a 50 ms upstream;
//!                                                  prints queue-wait p50/p99 (started − queued)
//! task_bench rate-limit URL TASKS PER_MIN WORKERS  against a provider allowing PER_MIN calls a
//!                                                  minute: actual time vs ideal (calls ÷ limit)
//! task_bench seed URL TASKS                        only queue TASKS (for `j1msky worker` processes)
//! task_bench drained URL TOTAL NEW                  waits until TOTAL tasks have succeeded; prints the
//!                                                  seconds and NEW ÷ seconds
//! ```

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::Stage;
use j1msky_core::{Clock, SystemClock};
use j1msky_db::Db;
use j1msky_gateway::{controls, Gateway};
use j1msky_tasks::{NewTask, Worker, WorkerConfig};

type Error = Box<dyn std::error::Error>;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, Error> {
    args.get(i).and_then(|a| a.parse().ok()).ok_or_else(|| format!("argument {i} ({what}) missing or invalid").into())
}

/// An active Pro customer and caps/budgets that never bind (the checks still run).
async fn prepare(db: &Db, catalogue: &Catalogue) -> Result<String, Error> {
    let now = SystemClock.now_micros();
    let c = customers::create(
        db,
        catalogue,
        &Actor::cli(),
        NewCustomer {
            name: format!("Bench {now}"),
            stage: Some(Stage::Active),
            plan: Some("pro".into()),
            ..NewCustomer::default()
        },
        now,
    )
    .await?;
    let big = Some(1_000_000_000);
    for scope in ["global".to_string(), format!("customer:{}", c.id)]
        .into_iter()
        .chain(catalogue.providers.keys().map(|p| format!("provider:{p}")))
    {
        controls::set_cap(db, catalogue, &Actor::cli(), &scope, big, "bench", now).await?;
    }
    controls::set_daily_budget(
        db,
        &Actor::cli(),
        Some(j1msky_core::Money::from_micros(1_000_000_000_000)),
        "bench",
        now,
    )
    .await?;
    Ok(c.id)
}

async fn submit(db: &Db, catalogue: &Catalogue, customer: &str, i: usize) -> Result<(), Error> {
    let input = NewTask { team: "code".into(), prompt: Some(format!("Benchmark task {i}")), ..NewTask::default() };
    j1msky_tasks::submit(db, catalogue, customer, &input, None, SystemClock.now_micros()).await?;
    Ok(())
}

async fn succeeded(db: &Db) -> Result<i64, Error> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM tasks WHERE state = 'succeeded'").fetch_one(db.pool()).await?;
    Ok(n)
}

struct Rig {
    _sim: j1msky_sim::Running,
    stop: tokio::sync::watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    gateway: Arc<Gateway>,
}

async fn start_workers(
    db: &Db,
    catalogue: &Arc<Catalogue>,
    workers: usize,
    latency_ms: u64,
    rate_limit_per_minute: Option<u32>,
) -> Result<Rig, Error> {
    let sim = j1msky_sim::spawn(j1msky_sim::SimConfig {
        latency: Duration::from_millis(latency_ms),
        rate_limit_per_minute,
        ..j1msky_sim::SimConfig::default()
    })
    .await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gateway = Arc::new(
        Gateway::builder(db.clone(), catalogue.clone())
            .clock(clock.clone())
            .all_providers_at(&sim.openai_base(), &sim.anthropic_base(), "bench")
            .build()?,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = WorkerConfig { poll: Duration::from_millis(5), ..WorkerConfig::default() };
    let handles = (0..workers)
        .map(|i| {
            let w = Worker::new(
                db.clone(),
                catalogue.clone(),
                gateway.clone(),
                clock.clone(),
                format!("bench-{i}"),
                config,
            );
            tokio::spawn(w.run(stopped.clone()))
        })
        .collect();
    Ok(Rig { _sim: sim, stop, handles, gateway })
}

impl Rig {
    async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
        self.gateway.flush().await;
    }
}

async fn wait_for(db: &Db, n: i64, limit: Duration) -> Result<Duration, Error> {
    let started = Instant::now();
    while succeeded(db).await? < n {
        if started.elapsed() > limit {
            return Err(format!("only {} of {n} tasks succeeded within {limit:?}", succeeded(db).await?).into());
        }
        // Polled gently: the count itself loads the database being measured.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(started.elapsed())
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let mode: String = arg(&args, 1, "mode")?;
    let url: String = arg(&args, 2, "database URL")?;
    let db = Db::open(&url).await?;
    let mut catalogue = Catalogue::from_json_str(SHIPPED)?;
    // One customer queues every task of a run at once (thousands): no bound on waiting.
    catalogue.max_waiting_tasks_per_customer = 1_000_000;
    let catalogue = Arc::new(catalogue);
    match mode.as_str() {
        "throughput" => {
            let (n, workers): (usize, usize) = (arg(&args, 3, "tasks")?, arg(&args, 4, "workers")?);
            let customer = prepare(&db, &catalogue).await?;
            for i in 0..n {
                submit(&db, &catalogue, &customer, i).await?;
            }
            let rig = start_workers(&db, &catalogue, workers, 0, None).await?;
            let took = wait_for(&db, n as i64, Duration::from_secs(600)).await?;
            rig.stop().await;
            println!(
                "throughput tasks={n} workers={workers} secs={:.3} tasks_per_sec={:.1}",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64()
            );
        }
        "queue-wait" => {
            let (rate, secs, workers): (u64, u64, usize) =
                (arg(&args, 3, "rate")?, arg(&args, 4, "seconds")?, arg(&args, 5, "workers")?);
            let customer = prepare(&db, &catalogue).await?;
            let rig = start_workers(&db, &catalogue, workers, 50, None).await?;
            let total = (rate * secs) as usize;
            let every = Duration::from_secs_f64(1.0 / rate as f64);
            let t0 = tokio::time::Instant::now();
            for i in 0..total {
                tokio::time::sleep_until(t0 + every * i as u32).await;
                submit(&db, &catalogue, &customer, i).await?;
            }
            wait_for(&db, total as i64, Duration::from_secs(600)).await?;
            rig.stop().await;
            let mut waits: Vec<i64> = sqlx::query_as::<_, (i64,)>(
                "SELECT started_at - queued_at FROM tasks WHERE state = 'succeeded' AND customer_id = $1",
            )
            .bind(&customer)
            .fetch_all(db.pool())
            .await?
            .into_iter()
            .map(|r| r.0)
            .collect();
            waits.sort_unstable();
            println!(
                "queue-wait rate={rate}/s secs={secs} workers={workers} upstream=50ms tasks={} p50_ms={:.2} p99_ms={:.2}",
                waits.len(),
                percentile(&waits, 0.50),
                percentile(&waits, 0.99)
            );
        }
        "rate-limit" => {
            let (n, per_min, workers): (usize, u32, usize) =
                (arg(&args, 3, "tasks")?, arg(&args, 4, "calls per minute")?, arg(&args, 5, "workers")?);
            let customer = prepare(&db, &catalogue).await?;
            for i in 0..n {
                submit(&db, &catalogue, &customer, i).await?;
            }
            let rig = start_workers(&db, &catalogue, workers, 0, Some(per_min)).await?;
            let took = wait_for(&db, n as i64, Duration::from_secs(1800)).await?;
            rig.stop().await;
            let (failed,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM tasks WHERE state = 'failed'").fetch_one(db.pool()).await?;
            // Two calls per task; the bucket starts full with one second's worth.
            let ideal = (2 * n) as f64 / (f64::from(per_min) / 60.0) - 1.0;
            println!(
                "rate-limit tasks={n} limit={per_min}/min workers={workers} secs={:.1} ideal_secs={ideal:.1} ratio={:.3} failed={failed}",
                took.as_secs_f64(),
                took.as_secs_f64() / ideal
            );
        }
        "seed" => {
            let n: usize = arg(&args, 3, "tasks")?;
            let customer = prepare(&db, &catalogue).await?;
            for i in 0..n {
                submit(&db, &catalogue, &customer, i).await?;
            }
            println!("seeded {n}");
        }
        "drained" => {
            let (total, new): (i64, i64) = (arg(&args, 3, "total")?, arg(&args, 4, "new")?);
            let took = wait_for(&db, total, Duration::from_secs(600)).await?;
            println!(
                "drained tasks={new} secs={:.3} tasks_per_sec={:.1}",
                took.as_secs_f64(),
                new as f64 / took.as_secs_f64()
            );
        }
        other => return Err(format!("unknown mode `{other}`").into()),
    }
    db.close().await;
    Ok(())
}
