//! The morning review's lines for what goes wrong quietly: alerts left open for days, an
//! event a consumer gave up on, lifecycle mail that is not going out. Both engines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;

use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::events::Kind;
use j1msky_core::Clock;
use j1msky_db::consumers::{self, Consumer, Handled, Handler, OnFailure, Runner};
use j1msky_db::outbox::Event;
use j1msky_db::testing::TestDb;
use j1msky_db::{AnyConnection, Backend};
use j1msky_insights::morning::{self, Item, Severity};
use j1msky_insights::Ctx;

const SEC: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SEC;
/// 2026-11-10T06:00Z.
const T0: i64 = 1_794_290_400 * SEC;

struct Setup {
    ctx: Ctx,
    clock: ManualClock,
    _db: TestDb,
}

async fn setup() -> Setup {
    let t = TestDb::new().await;
    let catalogue: Catalogue = serde_json::from_str(SHIPPED).expect("catalogue");
    let clock = ManualClock::new(T0);
    let ctx = Ctx { db: t.db.clone(), catalogue: Arc::new(catalogue).into(), clock: Arc::new(clock.clone()) };
    Setup { ctx, clock, _db: t }
}

async fn review(s: &Setup) -> Vec<Item> {
    morning::review(&s.ctx).await.expect("review")
}

fn line<'a>(items: &'a [Item], title: &str) -> Option<&'a Item> {
    items.iter().find(|i| i.title == title)
}

#[tokio::test]
async fn an_alert_stays_on_the_review_until_someone_acknowledges_it_however_old() {
    let s = setup().await;
    let db = &s.ctx.db;
    j1msky_audit::alerts::raise(db, "a_old", "provider_auth", "provider refused our key", &serde_json::json!({}), T0)
        .await
        .expect("raise");
    // Friday's alert, read on Monday morning.
    s.clock.advance_micros(62 * HOUR);
    let items = review(&s).await;
    let alert = line(&items, "Alert: provider_auth").expect("still open, still listed");
    assert_eq!((alert.severity, alert.link.as_str()), (Severity::Critical, "/admin/alerts"));
    assert!(
        alert.detail.contains("provider refused our key") && alert.detail.contains("raised 62 h 0 min ago"),
        "{alert:?}"
    );
    j1msky_audit::alerts::acknowledge(db, &Actor::cli(), "a_old", s.clock.now_micros()).await.expect("ack");
    assert!(line(&review(&s).await, "Alert: provider_auth").is_none(), "acknowledged: off the review");

    // More open alerts than the review lists one by one: the rest are counted.
    for i in 0..23 {
        let id = format!("a{i}");
        let now = s.clock.now_micros() + i;
        j1msky_audit::alerts::raise(db, &id, "queue_stuck", "stuck", &serde_json::json!({}), now).await.expect("raise");
    }
    let items = review(&s).await;
    assert_eq!(items.iter().filter(|i| i.title == "Alert: queue_stuck").count(), 20);
    assert!(line(&items, "3 more open alert(s)").is_some(), "{items:#?}");
}

/// A consumer whose every attempt fails.
struct Refuses;

impl Handler for Refuses {
    fn handle<'a>(&'a self, _: &'a mut AnyConnection, _: Backend, event: &'a Event, _now: i64) -> Handled<'a> {
        Box::pin(async move { Err(format!("cannot handle {}", event.seq).into()) })
    }
}

#[tokio::test]
async fn an_event_a_consumer_gave_up_on_is_on_the_review_until_it_is_retried() {
    let s = setup().await;
    let db = &s.ctx.db;
    let mut tx = db.begin().await.expect("begin");
    j1msky_db::testing::emit_raw(&mut tx, db.backend(), Kind::TaskSubmitted, None, &serde_json::json!({}), T0)
        .await
        .expect("emit");
    tx.commit().await.expect("commit");
    let mut c = Consumer::new("insights.test", &[Kind::TaskSubmitted], OnFailure::SkipAndPark, Refuses);
    c.max_attempts = 2;
    let runner = Runner::new("a");
    consumers::run_once(db, &runner, std::slice::from_ref(&c), &s.clock).await.expect("run");
    let items = review(&s).await;
    let retrying = line(&items, "insights.test is retrying 1 event(s)").expect("failing, not yet parked");
    assert_eq!((retrying.severity, retrying.area.as_str()), (Severity::Warning, "errors"));

    s.clock.advance_micros(HOUR);
    consumers::run_once(db, &runner, std::slice::from_ref(&c), &s.clock).await.expect("run");
    let items = review(&s).await;
    let parked = line(&items, "insights.test gave up on 1 event(s)").expect("parked");
    assert_eq!((parked.severity, parked.link.as_str()), (Severity::Critical, "/admin/events"));
    assert!(line(&items, "insights.test is retrying 1 event(s)").is_none());

    let seq = consumers::failures(db, true, 10).await.expect("failures")[0].seq;
    assert!(consumers::retry(db, "insights.test", seq, s.clock.now_micros()).await.expect("retry"));
    let items = review(&s).await;
    assert!(line(&items, "insights.test gave up on 1 event(s)").is_none(), "retried: off the review");
}

async fn queue_operator_mail(s: &Setup, step: &str) {
    let rendered = j1msky_lifecycle::templates::Rendered {
        subject: "Morning review".into(),
        text: "text".into(),
        html: "<p>html</p>".into(),
    };
    let msg = j1msky_lifecycle::delivery::OperatorMessage {
        to: "ops@example.test",
        source: "ops.review",
        step,
        occurrence: 1,
        template: "operator_review",
        rendered: &rendered,
    };
    let mut tx = s.ctx.db.begin().await.expect("begin");
    j1msky_lifecycle::delivery::enqueue_for_operator(&mut tx, &msg, s.clock.now_micros()).await.expect("queue");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn mail_that_is_not_going_out_is_on_the_review_with_why() {
    let s = setup().await;
    queue_operator_mail(&s, "morning").await;
    s.clock.advance_micros(HOUR / 2);
    assert!(review(&s).await.iter().all(|i| i.area != "mail"), "due half an hour ago: not late yet");

    // Nothing sends it: no process with a transport.
    s.clock.advance_micros(2 * HOUR);
    let items = review(&s).await;
    let late = line(&items, "1 message(s) due over an hour ago not sent").expect("late mail");
    assert_eq!(late.severity, Severity::Critical);
    assert_eq!(late.link, "/admin/lifecycle/messages?state=queued");
    assert!(late.detail.contains("the oldest due 2 h 30 min ago") && late.detail.contains("--smtp-url"), "{late:?}");

    // A sender runs, but the SMTP server cannot be reached: the error is on the line.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let smtp = j1msky_lifecycle::transport::Smtp::from_url(&format!("smtp://127.0.0.1:{port}"), 1).expect("smtp url");
    let lifecycle = j1msky_lifecycle::Ctx {
        db: s.ctx.db.clone(),
        catalogue: s.ctx.catalogue.clone(),
        clock: Arc::new(s.clock.clone()),
        transport: Arc::new(smtp),
        stripe: None,
        base_url: "http://localhost".into(),
        templates_dir: std::path::PathBuf::from("templates"),
    };
    let pass =
        j1msky_lifecycle::delivery::send_due_once(&lifecycle, "test", s.clock.now_micros(), 10).await.expect("send");
    assert_eq!(pass.sent, 0, "{pass:?}");
    // Past the back-off the attempt set, still unsent.
    s.clock.advance_micros(2 * HOUR);
    let items = review(&s).await;
    let late = line(&items, "1 message(s) due over an hour ago not sent").expect("still late");
    assert!(late.detail.contains("the last attempt failed"), "{late:?}");

    // Refused at every attempt, it ends failed: a warning of its own for a day.
    let mut failed = 0;
    for _ in 0..j1msky_lifecycle::delivery::MAX_ATTEMPTS {
        let pass = j1msky_lifecycle::delivery::send_due_once(&lifecycle, "test", s.clock.now_micros(), 10)
            .await
            .expect("send");
        failed += pass.failed;
        s.clock.advance_micros(2 * HOUR);
    }
    assert_eq!(failed, 1, "refused {} times in all", j1msky_lifecycle::delivery::MAX_ATTEMPTS);
    let items = review(&s).await;
    assert!(line(&items, "1 message(s) due over an hour ago not sent").is_none());
    let failed = line(&items, "1 message(s) failed in the last 24 h").expect("failed mail");
    assert_eq!((failed.severity, failed.link.as_str()), (Severity::Warning, "/admin/lifecycle/messages?state=failed"));
    s.clock.advance_micros(25 * HOUR);
    assert!(review(&s).await.iter().all(|i| i.area != "mail"), "yesterday's failure is on the messages page only");
}
