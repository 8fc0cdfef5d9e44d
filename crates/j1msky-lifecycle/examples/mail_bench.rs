// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Mail delivery benchmark (issue 13 §6): MESSAGES onboarding messages queued in
//! `lifecycle_messages` on a SQLite file (spread over 1,000 customers, caps and quiet
//! hours off so every one is due), then sent by the real sender (`delivery::run_sender`)
//! through the `lettre` SMTP pool of POOL connections to the loopback sink on PORT.
//! Prints one line: messages, seconds, messages/s and the final state counts.
//!
//! mail_bench DB_FILE MESSAGES PORT POOL
//!
//! With `-` for DB_FILE it measures the SMTP transport alone (the profile's split): the
//! same messages composed in memory (`delivery::compose`, same size) and sent straight
//! through `Smtp`, POOL at a time, with no database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_db::Db;
use j1msky_lifecycle::delivery::{self, Category, NewMessage};
use j1msky_lifecycle::templates::Rendered;
use j1msky_lifecycle::{transport::Smtp, Ctx};

const NOW: i64 = 1_800_000_000_000_000;
const CUSTOMERS: i64 = 1_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = &args[1];
    let messages: i64 = args[2].parse().unwrap();
    let port: u16 = args[3].parse().unwrap();
    let pool: usize = args[4].parse().unwrap();
    if file == "-" {
        return transport_only(messages, port, pool).await;
    }
    let db = Db::connect(&format!("sqlite://{file}")).await.unwrap();
    db.migrate().await.unwrap();

    sqlx::query(
        "INSERT INTO customers (id, name, stage, contact_email, time_zone, created_at, updated_at, stage_changed_at)
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
         SELECT printf('cus_%06d', i), 'Customer ' || i, 'active', printf('owner%06d@example.com', i),
                'Europe/Berlin', $2, $2, $2
         FROM n",
    )
    .bind(CUSTOMERS)
    .bind(NOW)
    .execute(db.pool())
    .await
    .unwrap();
    // A welcome-sized message: ~1.5 kB of text and its HTML twin.
    let para = "Your agent team is set up and ready for its first task. Open the dashboard to \
                invite colleagues, connect a repository and watch the first run finish. ";
    let mut tx = db.pool().begin().await.unwrap();
    for i in 0..messages {
        let rendered = Rendered {
            subject: format!("Welcome aboard, step {i}"),
            text: format!("Hello,\n\n{}\n\nThe j1msky team", para.repeat(4)),
            html: format!("<html><body><p>Hello,</p><p>{}</p><p>The j1msky team</p></body></html>", para.repeat(4)),
        };
        let cus = format!("cus_{:06}", i % CUSTOMERS);
        let source = format!("enr_bench_{}", i / 10);
        let step = format!("step{}", i % 10);
        let msg = NewMessage {
            customer_id: &cus,
            source: &source,
            step: &step,
            occurrence: 0,
            category: Category::Onboarding,
            template: "welcome",
            rendered: &rendered,
            not_before: NOW,
            stale_at: None,
        };
        delivery::enqueue(&mut tx, db.backend(), &msg, NOW).await.unwrap().unwrap();
    }
    tx.commit().await.unwrap();

    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    catalogue.lifecycle.delivery.quiet_hours.end = catalogue.lifecycle.delivery.quiet_hours.start.clone();
    catalogue.lifecycle.delivery.max_per_day = 0;
    catalogue.lifecycle.delivery.max_per_week = 0;
    let ctx = Ctx {
        db: db.clone(),
        catalogue: Arc::new(catalogue).into(),
        clock: Arc::new(ManualClock::new(NOW)),
        transport: Arc::new(Smtp::from_url(&format!("smtp://127.0.0.1:{port}"), pool).unwrap()),
        stripe: None,
        base_url: "https://app.example.test".into(),
        templates_dir: "config/templates".into(),
    };

    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(delivery::run_sender(ctx, stopped));
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM lifecycle_messages WHERE state IN ('queued', 'sending', 'deferred')",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        if open == 0 {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    sender.await.unwrap();
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM lifecycle_messages GROUP BY state ORDER BY state")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{s}={n}")).collect();
    println!(
        "messages={messages} pool={pool} seconds={secs:.2} per_second={:.0} states={}",
        messages as f64 / secs,
        states.join(",")
    );
}

async fn transport_only(messages: i64, port: u16, pool: usize) {
    use futures::StreamExt;
    use j1msky_lifecycle::transport::{Outgoing, Transport};
    let catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    let delivery = &catalogue.lifecycle.delivery;
    let para = "Your agent team is set up and ready for its first task. Open the dashboard to \
                invite colleagues, connect a repository and watch the first run finish. ";
    let text = format!("Hello,\n\n{}\n\nThe j1msky team", para.repeat(4));
    let html = format!("<html><body><p>Hello,</p><p>{}</p><p>The j1msky team</p></body></html>", para.repeat(4));
    let unsubscribe = ("https://app.example.test/u/token", "mailto:unsubscribe@example.test");
    let mails: Vec<Outgoing> = (0..messages)
        .map(|i| {
            let to = format!("owner{:06}@example.com", i % CUSTOMERS);
            let id = format!("transport-{i}@bench.j1msky.test");
            let subject = format!("Welcome aboard, step {i}");
            let raw = delivery::compose(delivery, &to, &id, &subject, &text, &html, Some(unsubscribe), NOW).unwrap();
            Outgoing { from: delivery.from_address.clone(), to, message_id: id, raw }
        })
        .collect();
    let smtp = Smtp::from_url(&format!("smtp://127.0.0.1:{port}"), pool).unwrap();
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(&mails).map(|m| smtp.send(m)).buffer_unordered(pool).collect().await;
    let secs = started.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| r.is_err()).count();
    println!(
        "transport only: messages={messages} pool={pool} seconds={secs:.2} per_second={:.0} failed={failed} connections={}",
        messages as f64 / secs,
        smtp.stats().opened
    );
}
