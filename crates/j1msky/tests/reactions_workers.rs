// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Two `j1msky worker --roles reactions` processes on one PostgreSQL database share the
//! `accounts.subscription_state` consumer. A burst of subscription-state events is
//! written, the process holding the consumer's lease is killed with SIGKILL mid-way, and
//! the other one takes the lease over once it runs out: every event is applied exactly
//! once (one stage change per event, none missing, none twice).

use crate::common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Cli;
use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_accounts::reactions::{SUBSCRIPTION_STATE, SUBSCRIPTION_STATE_KIND};
use j1msky_audit::Actor;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::vocab::Stage;
use j1msky_db::testing::requested_backend;
use j1msky_db::{outbox, Backend, Db};
use sqlx::Row;

const CUSTOMERS: usize = 4;
const EVENTS_PER_CUSTOMER: usize = 150;

/// A worker process, killed when the test ends (or fails).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(cli: &Cli) -> Worker {
    Worker(
        cli.command(&["worker", "--roles", "reactions"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn j1msky worker"),
    )
}

/// The consumer's cursor and lease holder.
async fn cursor(db: &Db) -> (i64, Option<String>, Option<i64>) {
    let row = sqlx::query("SELECT last_seq, lease_owner, lease_until FROM consumer_cursors WHERE consumer = $1")
        .bind(SUBSCRIPTION_STATE)
        .fetch_optional(db.pool())
        .await
        .expect("cursor");
    match row {
        Some(r) => (r.try_get(0).unwrap(), r.try_get(1).unwrap(), r.try_get(2).unwrap()),
        None => (0, None, None),
    }
}

fn held_by(owner: &Option<String>, worker: &Worker) -> bool {
    owner.as_deref().is_some_and(|o| o.starts_with(&format!("pid{}-", worker.0.id())))
}

#[tokio::test]
async fn two_reaction_workers_apply_each_event_once_when_one_is_killed() {
    if requested_backend() != Backend::Postgres {
        println!("skipped: needs PostgreSQL (J1MSKY_TEST_BACKEND=postgres)");
        return;
    }
    let cli = Cli::new().await;
    let db = Db::open(&cli.url).await.expect("open");
    let catalogue = Catalogue::load(&common::repo_file("config/business.json")).expect("catalogue");
    let mut ids = Vec::new();
    for n in 0..CUSTOMERS {
        let input = NewCustomer {
            name: format!("Burst {n}"),
            contact_email: None,
            stage: Some(Stage::Active),
            use_case: None,
            plan: Some("starter".into()),
            chosen_teams: Vec::new(),
            expected_monthly_tasks: None,
            time_zone: None,
        };
        ids.push(customers::create(&db, &catalogue, &Actor::system(), input, 1).await.expect("customer").id);
    }

    let a = worker(&cli);
    let b = worker(&cli);

    // The burst: each event flips its customer's stage (active ↔ paused) at its own
    // time, so each application leaves exactly one stage-change row dated `at`.
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut tx = db.begin().await.expect("begin");
    for k in 0..EVENTS_PER_CUSTOMER {
        for id in &ids {
            let at = 1_000_000 + (k as i64) * 1_000;
            let stage = if k.is_multiple_of(2) { "paused" } else { "active" };
            let payload = j1msky_core::events::CustomerSubscriptionState {
                plan: None,
                stage: Some(stage.to_string()),
                billing_status: None,
                at,
                subscription_status: None,
                trial: None,
                period: None,
                period_budget_micros: None,
            };
            assert_eq!(SUBSCRIPTION_STATE_KIND, j1msky_core::events::Kind::CustomerSubscriptionState);
            outbox::emit_typed(&mut tx, db.backend(), payload, Some(id), at).await.expect("emit");
            expected.entry(id.clone()).or_default().push(at);
        }
    }
    tx.commit().await.expect("commit the burst");
    let last: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM events").fetch_one(db.pool()).await.expect("last seq");
    let total = (CUSTOMERS * EVENTS_PER_CUSTOMER) as i64;

    // Kill whichever process holds the lease once part of the burst is applied. When the
    // victim had just handed the lease back between two rounds, a fresh worker takes its
    // place and the next holder is killed instead: the point is a lease left by the dead.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut workers = [a, b];
    let (victim, after_kill) = loop {
        assert!(Instant::now() < deadline, "no worker was killed holding the lease: {:?}", cursor(&db).await);
        let (seq, owner, _) = cursor(&db).await;
        assert!(seq < last - 50, "the burst was applied before a worker could be killed mid-way");
        let holder = workers.iter().position(|w| held_by(&owner, w));
        if let (true, Some(i)) = (seq > last - total + total / 4, holder) {
            workers[i].0.kill().expect("SIGKILL");
            workers[i].0.wait().expect("reap the killed worker");
            let (after, owner, until) = cursor(&db).await;
            if held_by(&owner, &workers[i]) {
                assert!(until.is_some());
                let victim = workers[i].0.id();
                break (victim, after);
            }
            workers[i] = worker(&cli);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let mut survivor = {
        let [a, b] = workers;
        if a.0.id() == victim {
            b
        } else {
            a
        }
    };

    // The survivor finishes the burst after the dead process's lease runs out.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (seq, _, _) = cursor(&db).await;
        if seq >= last {
            break;
        }
        assert!(survivor.0.try_wait().expect("survivor").is_none(), "the surviving worker exited");
        assert!(Instant::now() < deadline, "the survivor never finished the burst (cursor {seq} of {last})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cursor moves only under a live lease (each advance is fenced on it), and the
    // only live process is the survivor: it took over the dead one's lease.
    assert!(after_kill < last, "the kill came mid-way ({after_kill} of {last})");
    println!("killed pid {victim} holding the lease at seq {after_kill}; pid {} finished to {last}", survivor.0.id());

    // Exactly once: each customer's stage changes by Stripe are the events' times, in
    // order, none missing, none twice; nothing failed or parked.
    for (id, ats) in &expected {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT at FROM customer_stage_changes WHERE customer_id = $1 AND actor = 'stripe' ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(db.pool())
        .await
        .expect("stage changes");
        assert_eq!(&rows, ats, "stage changes of {id}");
        let stage: String = sqlx::query_scalar("SELECT stage FROM customers WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .expect("stage");
        let want = if EVENTS_PER_CUSTOMER.is_multiple_of(2) { "active" } else { "paused" };
        assert_eq!(stage, want);
    }
    let failures: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consumer_failures WHERE consumer = $1")
        .bind(SUBSCRIPTION_STATE)
        .fetch_one(db.pool())
        .await
        .expect("failures");
    assert_eq!(failures, 0, "no event failed");
}
