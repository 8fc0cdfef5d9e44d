//! Stripe webhook benchmark (issue "Stripe billing", §7): signed events POSTed over
//! loopback to `POST /webhooks/stripe` on the real server with a SQLite file, verified,
//! stored, and applied by the server's applier (subscription mirror, customer plan and
//! stage, revenue ledger, outbox). Prints events per second from the first POST until
//! the last event is applied, and two baselines measured in the same run: signature
//! verification alone, and delivery with storage only (applier off).
//!
//! webhook_bench DIR EVENTS CONCURRENCY

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::Stage;
use j1msky_core::SystemClock;
use j1msky_db::Db;
use j1msky_web::{AppState, WebConfig};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;
const SECRET: &str = "whsec_bench";
const CUSTOMERS: usize = 200;

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A realistic mix: per customer, subscription updates and paid invoices.
fn events(n: usize, customers: &[String]) -> Vec<String> {
    let t0 = now_secs() - 3600;
    (0..n)
        .map(|i| {
            let c = i % customers.len();
            let created = t0 + (i / customers.len()) as i64;
            let (kind, object) = if i % 3 == 2 {
                ("invoice.paid", json!({"id": format!("in_b{i}"), "object": "invoice", "customer": format!("cus_b{c}"),
                    "subscription": format!("sub_b{c}"), "amount_paid": 9900, "currency": "usd",
                    "lines": {"data": [{"price": {"lookup_key": "j1msky_pro_monthly"}, "period": {"start": created, "end": created + 2_592_000}}]}}))
            } else {
                let plan = if i % 2 == 0 { "pro" } else { "starter" };
                ("customer.subscription.updated", json!({"id": format!("sub_b{c}"), "object": "subscription",
                    "customer": format!("cus_b{c}"), "status": "active", "cancel_at_period_end": false,
                    "items": {"data": [{"id": format!("si_b{c}"), "price": {"id": format!("price_{plan}"), "lookup_key": format!("j1msky_{plan}_monthly")}}]},
                    "current_period_end": created + 2_592_000, "created": t0, "metadata": {"j1msky_customer": customers[c]}}))
            };
            json!({"id": format!("evt_b{i:08}"), "object": "event", "type": kind, "created": created, "livemode": false,
                   "api_version": "2024-06-20", "data": {"object": object}})
            .to_string()
        })
        .collect()
}

async fn rig(dir: &std::path::Path, name: &str) -> Result<(Db, Arc<Catalogue>, Vec<String>), Error> {
    let db = Db::open(&format!("sqlite://{}", dir.join(name).display())).await?;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED)?);
    let mut ids = Vec::new();
    for i in 0..CUSTOMERS {
        let c = customers::create(
            &db,
            &catalogue,
            &Actor::cli(),
            NewCustomer { name: format!("Bench {i}"), stage: Some(Stage::Qualified), ..NewCustomer::default() },
            j1msky_core::Clock::now_micros(&SystemClock),
        )
        .await?;
        ids.push(c.id);
    }
    Ok((db, catalogue, ids))
}

/// Posts every event; with `apply`, waits until all are applied. Returns events/s.
async fn run(dir: &std::path::Path, name: &str, n: usize, conc: usize, apply: bool) -> Result<f64, Error> {
    let (db, catalogue, ids) = rig(dir, name).await?;
    let bodies = events(n, &ids);
    let config = WebConfig { stripe_webhook_secrets: vec![SECRET.into()], ..WebConfig::default() };
    let clock: Arc<dyn j1msky_core::Clock> = Arc::new(SystemClock);
    let state = AppState::new(db.clone(), catalogue.clone(), clock.clone(), config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let applier = apply.then(|| {
        tokio::spawn(j1msky_billing::jobs::run_applier(
            db.clone(),
            catalogue.clone(),
            clock.clone(),
            state.billing_wake.clone(),
            Arc::default(),
            Duration::from_secs(1),
            stop_rx.clone(),
        ))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks/stripe", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = j1msky_web::serve(listener, state, async move {
            let _ = rx.await;
        })
        .await;
    });
    let http = reqwest::Client::new();
    let t = Instant::now();
    let results: Vec<bool> = futures::stream::iter(bodies)
        .map(|body| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let sig = j1msky_billing::signature::header(SECRET, now_secs(), body.as_bytes());
                http.post(&url)
                    .header("content-type", "application/json")
                    .header("stripe-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    if results.iter().any(|ok| !ok) {
        return Err("a delivery was refused".into());
    }
    if apply {
        loop {
            let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM stripe_events WHERE state <> 'applied'")
                .fetch_one(db.pool())
                .await?;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let took = t.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    if let Some(a) = applier {
        let _ = a.await;
    }
    let _ = tx.send(());
    if apply {
        let (rev,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM revenue_entries").fetch_one(db.pool()).await?;
        let (active,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM customers WHERE stage = 'active'").fetch_one(db.pool()).await?;
        if rev as usize != n / 3 || active as usize != CUSTOMERS.min(n) {
            return Err(format!("wrong result: {rev} revenue entries, {active} active customers").into());
        }
    }
    db.close().await;
    Ok(n as f64 / took)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).ok_or("usage: webhook_bench DIR EVENTS CONCURRENCY")?);
    let n: usize = args.get(2).map_or(Ok(20_000), |s| s.parse())?;
    let conc: usize = args.get(3).map_or(Ok(32), |s| s.parse())?;

    // Baseline 1: HMAC verification alone, in this process.
    let sample = events(1000, &["cus_x".to_string()]);
    let headers: Vec<String> =
        sample.iter().map(|b| j1msky_billing::signature::header(SECRET, now_secs(), b.as_bytes())).collect();
    let t = Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        for (b, h) in sample.iter().zip(&headers) {
            j1msky_billing::signature::verify(Some(h), b.as_bytes(), &[SECRET.into()], now_secs())?;
        }
    }
    let verify_rate = (rounds * sample.len()) as f64 / t.elapsed().as_secs_f64();

    let store_only = run(&dir, "store.db", n, conc, false).await?;
    let full = run(&dir, "full.db", n, conc, true).await?;
    println!(
        "webhooks events={n} concurrency={conc} verify_only_per_sec={verify_rate:.0} \
         verified_stored_per_sec={store_only:.0} verified_stored_applied_per_sec={full:.0} \
         applied_vs_stored_ratio={:.2}",
        full / store_only
    );
    Ok(())
}
