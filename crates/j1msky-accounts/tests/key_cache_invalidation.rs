//! A key revoked by one process stops working in another's key cache at once: on
//! PostgreSQL the revocation is announced by the database (whatever wrote it) and heard by
//! the other process's listener well inside the cache's own time to live; on SQLite (one
//! server process) a revocation through the domain function stops the key at once.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use j1msky_accounts::api_keys::{self, KeyCache};
use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::SECOND;
use j1msky_core::vocab::Stage;
use j1msky_db::invalidation::{self, Topic};
use j1msky_db::testing::TestDb;
use j1msky_db::{Backend, Db};

const T0: i64 = 1_790_000_000 * SECOND;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_by_another_process_is_refused_within_100_ms() {
    let t = TestDb::new().await;
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    let input =
        NewCustomer { name: "A".into(), plan: Some("pro".into()), stage: Some(Stage::Active), ..Default::default() };
    let customer = customers::create(&t.db, &catalogue, &Actor::cli(), input, T0).await.expect("customer").id;
    let (key, secret) = api_keys::create(&t.db, &Actor::cli(), &customer, "ci", T0).await.expect("key");

    // The serving process: its own pool, its own cache and its own listener.
    let serving = Db::connect(&t.url).await.expect("serving pool");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(invalidation::listen(serving.clone(), stopped));
    if t.db.backend() == Backend::Postgres {
        // Listening once the first (re)connect has marked everything stale.
        let deadline = Instant::now() + Duration::from_secs(10);
        while serving.invalidations().generation(Topic::Keys) == 0 {
            assert!(Instant::now() < deadline, "the listener never connected");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let cache = KeyCache::default();
    let auth = cache.authenticate(&serving, &secret, T0).await.expect("auth").expect("valid");
    assert_eq!(auth.customer_id, customer);

    let revoked_at = Instant::now();
    if t.db.backend() == Backend::Postgres {
        // Another process revokes it: a plain write on another connection, so nothing in
        // this test process but the database's announcement can tell the cache.
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
            .bind(T0 + 1)
            .bind(&key.id)
            .execute(t.db.pool())
            .await
            .expect("revoke");
    } else {
        api_keys::revoke(&t.db, &Actor::cli(), &key.id, None, T0 + 1).await.expect("revoke");
    }
    loop {
        let answer = cache.authenticate(&serving, &secret, T0 + 2).await.expect("auth");
        if answer.is_none() {
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_millis(100), "the revoked key still worked after 100 ms");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = stop.send(true);
    listener.await.expect("listener");
    serving.close().await;
}

#[tokio::test]
async fn a_customer_change_written_by_another_process_is_announced() {
    let t = TestDb::new().await;
    if t.db.backend() != Backend::Postgres {
        // One server process on SQLite: nothing to announce to.
        return;
    }
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    let input = NewCustomer { name: "B".into(), plan: Some("pro".into()), ..Default::default() };
    let customer = customers::create(&t.db, &catalogue, &Actor::cli(), input, T0).await.expect("customer").id;
    let serving = Db::connect(&t.url).await.expect("serving pool");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(invalidation::listen(serving.clone(), stopped));
    let deadline = Instant::now() + Duration::from_secs(10);
    while serving.invalidations().generation(Topic::Customers) == 0 {
        assert!(Instant::now() < deadline, "the listener never connected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = serving.invalidations().generation(Topic::Customers);
    let keys_before = serving.invalidations().generation(Topic::Keys);
    // A write of a column admission does not read announces nothing: a marker sent after
    // it arrives (notifications come in commit order) with the customers' generation unmoved.
    sqlx::query("UPDATE customers SET name = 'B2' WHERE id = $1")
        .bind(&customer)
        .execute(t.db.pool())
        .await
        .expect("name");
    sqlx::query("SELECT pg_notify('j1msky_invalidate', 'keys')").execute(t.db.pool()).await.expect("marker");
    let deadline = Instant::now() + Duration::from_secs(10);
    while serving.invalidations().generation(Topic::Keys) == keys_before {
        assert!(Instant::now() < deadline, "the marker never arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(serving.invalidations().generation(Topic::Customers), before, "a new name changes no terms");
    // A change of plan is announced.
    sqlx::query("UPDATE customers SET plan = 'starter' WHERE id = $1")
        .bind(&customer)
        .execute(t.db.pool())
        .await
        .expect("plan");
    let deadline = Instant::now() + Duration::from_secs(10);
    while serving.invalidations().generation(Topic::Customers) == before {
        assert!(Instant::now() < deadline, "the change was never announced");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = stop.send(true);
    listener.await.expect("listener");
    serving.close().await;
}
