//! The tasks tests' world: a fresh database on the selected engine, the shipped
//! catalogue, a manual clock and the real gateway over loopback to a simulated provider.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_gateway::{Gateway, RetryPolicy};
use j1msky_sim::SimConfig;

pub const T0: i64 = 1_795_000_000_000_000;

pub struct Env {
    pub t: TestDb,
    pub catalogue: Arc<Catalogue>,
    pub clock: ManualClock,
    pub gateway: Arc<Gateway>,
    pub sim: j1msky_sim::Running,
}

pub async fn env_with(sim: SimConfig) -> Env {
    let t = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    let clock = ManualClock::new(T0);
    let sim = j1msky_sim::spawn(sim).await.expect("sim");
    let gateway = Gateway::builder(t.db.clone(), catalogue.clone())
        .clock(Arc::new(clock.clone()))
        .all_providers_at(&sim.openai_base(), &sim.anthropic_base(), "k")
        .timeouts(j1msky_gateway::providers::Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
        })
        .retry(RetryPolicy {
            retries_per_model: 1,
            base_backoff: Duration::from_millis(1),
            max_wait: Duration::from_millis(50),
        })
        .build()
        .expect("limits");
    Env { t, catalogue, clock, gateway: Arc::new(gateway), sim }
}

impl Env {
    /// A worker named `name` with a 30-second lease on this world's database and gateway.
    pub fn worker(&self, name: &str) -> j1msky_tasks::Worker {
        let config = j1msky_tasks::WorkerConfig { lease: Duration::from_secs(30), ..Default::default() };
        j1msky_tasks::Worker::new(
            self.t.db.clone(),
            self.catalogue.clone(),
            self.gateway.clone(),
            Arc::new(self.clock.clone()),
            name,
            config,
        )
    }

    /// The single integer `sql` selects.
    pub async fn count(&self, sql: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(self.t.db.pool()).await.expect(sql);
        n
    }
}
