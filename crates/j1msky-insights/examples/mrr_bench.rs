// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! MRR at scale on a SQLite file: N customers with a year of subscription history
//! (upgrades, discounts that end, cancels, win-backs) written straight into
//! `subscription_history`, then the times of `mrr::rebuild`, the board's `mrr::month`,
//! the drill-down, the consumer's per-customer recompute and a month the clock enters.
//!
//! Usage: cargo run [--release] -p j1msky-insights --example mrr_bench -- DB_FILE CUSTOMERS

use std::sync::Arc;
use std::time::Instant;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::events::SubscriptionHistoryChanged;
use j1msky_core::ManualClock;
use j1msky_db::consumers::Runner;
use j1msky_db::outbox;
use j1msky_db::Db;
use j1msky_insights::kpis::Filter;
use j1msky_insights::mrr::{self, Movement};
use j1msky_insights::Ctx;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// 2025-01-01 00:00 UTC, in seconds.
const T0: i64 = 1_735_689_600;
const DAY: i64 = 86_400;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("DB_FILE");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let db = Db::open(&format!("sqlite://{path}?mode=rwc")).await.expect("db");
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    // The clock in mid-December 2025: a year of months.
    let clock = ManualClock::new((T0 + 348 * DAY) * 1_000_000);
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.into(), clock: Arc::new(clock.clone()) };

    let t = Instant::now();
    let rows = generate(&db, n).await;
    println!("generated {n} customers, {rows} history rows in {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    mrr::rebuild(&ctx).await.unwrap();
    println!("rebuild: {:.2} s", t.elapsed().as_secs_f64());

    let month = ctx.this_month();
    let all = Filter::default();
    let t = Instant::now();
    let m = mrr::month(&ctx, month, &all).await.unwrap();
    println!("month({month}): {:.1} ms (ending {} cents, {} paying)", ms(t), m.ending_cents, m.paying_end);
    let pro = Filter { plan: Some("pro".into()), team: None };
    let t = Instant::now();
    mrr::month(&ctx, month.prev(), &pro).await.unwrap();
    println!("month({}, plan=pro): {:.1} ms", month.prev(), ms(t));
    let t = Instant::now();
    let b = mrr::behind(&ctx, month, Movement::Churn, &all).await.unwrap();
    println!("behind(churn): {:.1} ms ({} customers)", ms(t), b.len());
    let t = Instant::now();
    let b = mrr::behind(&ctx, month, Movement::Paying, &all).await.unwrap();
    println!("behind(paying, first {}): {:.1} ms", b.len(), ms(t));

    // The consumer: 1,000 history changes announced, then handled.
    let mut tx = db.begin().await.unwrap();
    for i in 0..1_000 {
        let id = format!("cus_{:08}", i * (n / 1_000).max(1));
        let change = SubscriptionHistoryChanged {
            subscription: None,
            customer: Some(id.clone()),
            stripe_customer: id.replace("cus_", "cus_S"),
        };
        outbox::emit_typed(&mut tx, db.backend(), change, Some(&id), 0).await.unwrap();
    }
    tx.commit().await.unwrap();
    let consumers = mrr::consumers(&ctx);
    let runner = Runner::new("bench");
    let t = Instant::now();
    let mut handled = 0;
    loop {
        let p = j1msky_db::consumers::run_once(&db, &runner, &consumers, &clock).await.unwrap();
        handled += p.handled;
        if !p.moved() {
            break;
        }
    }
    println!(
        "consumer: {handled} events in {:.2} s ({:.2} ms each)",
        t.elapsed().as_secs_f64(),
        ms(t) / handled.max(1) as f64
    );

    clock.advance_micros(31 * DAY * 1_000_000);
    let next = ctx.this_month();
    let t = Instant::now();
    let m = mrr::month(&ctx, next, &all).await.unwrap();
    println!(
        "first read of {next} (covers the new month): {:.2} s (ending {} cents)",
        t.elapsed().as_secs_f64(),
        m.ending_cents
    );
    let t = Instant::now();
    mrr::month(&ctx, next, &all).await.unwrap();
    println!("month({next}) again: {:.1} ms", ms(t));
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1_000.0
}

/// (subscription, version, customer, status, plan, cents, discount bp, discount end, at)
type HistoryRow = (String, String, String, &'static str, &'static str, i64, Option<i64>, Option<i64>, i64);

/// Writes each customer's snapshots: a start on one of three plans, maybe a 40 % discount
/// for three months, maybe an upgrade, maybe a cancel and a win-back.
async fn generate(db: &Db, n: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(7);
    let plans = [("starter", 2900), ("pro", 9900), ("enterprise", 45_000)];
    let mut rows: Vec<HistoryRow> = Vec::new();
    let mut total = 0;
    for i in 0..n {
        let customer = format!("cus_{i:08}");
        let sub = format!("sub_{i:08}");
        let mut at = T0 + rng.gen_range(0..330) * DAY;
        let (mut plan, mut cents) = plans[rng.gen_range(0..3)];
        let discount = rng.gen_bool(0.2).then_some(4_000);
        let discount_end = discount.map(|_| (at + 90 * DAY) * 1_000_000);
        let mut v = 0;
        let mut push = |rows: &mut Vec<_>, at: i64, status, plan, cents, d: Option<i64>, e: Option<i64>| {
            v += 1;
            rows.push((sub.clone(), format!("{at:012}:evt_{i}_{v}"), customer.clone(), status, plan, cents, d, e, at));
        };
        push(&mut rows, at, "active", plan, cents, discount, discount_end);
        if rng.gen_bool(0.3) {
            at += rng.gen_range(1..60) * DAY;
            (plan, cents) = plans[1];
            push(&mut rows, at, "active", plan, cents, discount, discount_end);
        }
        if rng.gen_bool(0.2) {
            at += rng.gen_range(1..90) * DAY;
            push(&mut rows, at, "canceled", plan, cents, None, None);
            if rng.gen_bool(0.3) {
                at += rng.gen_range(1..90) * DAY;
                push(&mut rows, at, "active", plan, cents, None, None);
            }
        }
        if rows.len() >= 3_000 || i + 1 == n {
            total += rows.len();
            let mut tx = db.begin().await.unwrap();
            for chunk in rows.chunks(500) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|k| {
                        let b = k * 10;
                        let p: Vec<String> = (1..=10).map(|j| format!("${}", b + j)).collect();
                        format!(
                            "({}, {}, {}, {}, {}, {}, 'usd', {}, 1, {}, NULL, {}, {}, 0)",
                            p[0], p[1], p[2], p[9], p[3], p[4], p[5], p[6], p[7], p[8]
                        )
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO subscription_history (subscription_id, version, customer_id, stripe_customer_id, status,
                         plan, currency, amount_cents, quantity, discount_percent_bp, discount_amount_cents,
                         discount_end, effective_at, recorded_at) VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql);
                for r in chunk {
                    q = q
                        .bind(r.0.clone())
                        .bind(r.1.clone())
                        .bind(r.2.clone())
                        .bind(r.3)
                        .bind(r.4)
                        .bind(r.5)
                        .bind(r.6)
                        .bind(r.7)
                        .bind(r.8 * 1_000_000)
                        .bind(r.2.replace("cus_", "cus_S"));
                }
                q.execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
            rows.clear();
        }
    }
    total
}
