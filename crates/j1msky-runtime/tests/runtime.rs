//! The runtime starts a process's roles and nothing else, and its shutdown waits for
//! every loop it started before closing the database.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_db::testing::TestDb;
use j1msky_gateway::Gateway;
use j1msky_runtime::{Role, Runtime, Settings};

async fn runtime(t: &TestDb, roles: &[Role]) -> Runtime {
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    let gateway = Gateway::builder(t.db.clone(), catalogue).build().expect("gateway");
    let settings = Settings { roles: BTreeSet::from_iter(roles.iter().copied()), workers: 2, ..Settings::default() };
    Runtime::start(Arc::new(gateway), settings).await.expect("start")
}

#[tokio::test]
async fn only_the_roles_asked_for_start_and_shutdown_waits_for_every_loop() {
    let t = TestDb::new().await;
    let mut rt = runtime(&t, &[Role::Tasks]).await;
    assert_eq!(
        rt.running(),
        ["task worker 0", "task worker 1", "reservation sweeper", "catalogue follower", "cache invalidations"]
    );

    let stopped_cleanly = Arc::new(AtomicBool::new(false));
    let mut stop = rt.stop_signal();
    let flag = stopped_cleanly.clone();
    let started = rt.spawn(Role::Tasks, "probe", async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
        // Work a loop does after the stop signal, before it returns.
        tokio::task::yield_now().await;
        flag.store(true, Ordering::SeqCst);
    });
    assert!(started);
    assert!(!rt.spawn(Role::Reactions, "not mine", async {}), "a role this process lacks starts nothing");
    assert!(!rt.running().contains(&"not mine"));
    assert!(!stopped_cleanly.load(Ordering::SeqCst));
    rt.shutdown().await;
    assert!(stopped_cleanly.load(Ordering::SeqCst), "shutdown returned before a loop finished");
}

#[tokio::test]
async fn the_billing_role_runs_the_stripe_applier_and_the_usage_meter() {
    let t = TestDb::new().await;
    let rt = runtime(&t, &[Role::Billing]).await;
    // No Stripe key: the billing jobs need Stripe and stay off.
    assert_eq!(
        rt.running(),
        ["stripe applier", "api usage meter", "reservation sweeper", "catalogue follower", "cache invalidations"]
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_loop_that_ends_before_shutdown_is_reported_and_none_of_the_roles_loops_does() {
    let t = TestDb::new().await;
    let mut rt = runtime(&t, &Role::ALL).await;
    // Let every loop run its first round (each polls the database at once).
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(rt.ended_early(), None, "a role's loop ended by itself: {:?}", rt.running());

    assert!(rt.spawn(Role::Tasks, "dies", async { panic!("a loop's bug") }));
    let mut waited = 0;
    while rt.ended_early().is_none() && waited < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(rt.ended_early(), Some("dies"));
    rt.shutdown().await;
}
