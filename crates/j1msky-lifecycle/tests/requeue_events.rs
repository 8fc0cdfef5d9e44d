// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! An operator sends an `unknown` or `failed` message again (`delivery::requeue`, the
//! one function the CLI and `/admin/lifecycle/messages` call), and mail outcomes and
//! unsubscribes are events (`lifecycle.message_sent`, `lifecycle.message_failed`,
//! `lifecycle.unsubscribed`), on both engines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::TimeZone;
use j1msky_audit::Actor;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::clock::ManualClock;
use j1msky_core::events::{LifecycleMessageFailed, LifecycleMessageSent, LifecycleUnsubscribed, Typed};
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_lifecycle::delivery::{self, Category, NewMessage};
use j1msky_lifecycle::templates::Rendered;
use j1msky_lifecycle::transport::{Outgoing, Recording, SendError, Sending, Transport};
use j1msky_lifecycle::{Ctx, LifecycleError};

fn ctx(db: &Db, transport: Arc<dyn Transport>) -> Ctx {
    let mut catalogue = Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    catalogue.lifecycle.delivery.quiet_hours.end = "21:00".into();
    Ctx {
        db: db.clone(),
        catalogue: Arc::new(catalogue).into(),
        clock: Arc::new(ManualClock::new(0)),
        transport,
        stripe: None,
        base_url: "https://app.example.test".into(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    }
}

async fn customer(db: &Db, email: &str) -> String {
    let catalogue = Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    let input = j1msky_accounts::customers::NewCustomer {
        name: "Acme".into(),
        contact_email: Some(email.into()),
        time_zone: Some("UTC".into()),
        ..Default::default()
    };
    j1msky_accounts::customers::create(db, &catalogue, &Actor::cli(), input, 1).await.unwrap().id
}

async fn queue(db: &Db, cus: &str, step: &str, not_before: i64, stale_at: Option<i64>) -> String {
    let rendered = Rendered { subject: format!("Subject {step}"), text: "Hello.".into(), html: "<p>Hello.</p>".into() };
    let msg = NewMessage {
        customer_id: cus,
        source: "enr_rq",
        step,
        occurrence: 0,
        category: Category::Onboarding,
        template: "welcome",
        rendered: &rendered,
        not_before,
        stale_at,
    };
    let mut conn = db.pool().acquire().await.unwrap();
    delivery::enqueue(&mut conn, db.backend(), &msg, 0).await.unwrap().unwrap()
}

async fn message(db: &Db, step: &str) -> delivery::Message {
    delivery::list(db, None, None, 1000).await.unwrap().into_iter().find(|m| m.step == step).unwrap()
}

async fn events(db: &Db) -> Vec<(Option<String>, Typed)> {
    let mut all = j1msky_db::outbox::after(db, 0, 1000).await.unwrap();
    all.sort_by_key(|e| e.seq);
    all.iter()
        .filter(|e| e.kind.starts_with("lifecycle."))
        .map(|e| (e.customer_id.clone(), e.typed().unwrap()))
        .collect()
}

fn noon() -> i64 {
    chrono::Utc.with_ymd_and_hms(2026, 6, 10, 12, 0, 0).unwrap().timestamp_micros()
}

/// Takes the message and never answers (the connection dies after DATA).
struct Hangs(AtomicUsize);

impl Transport for Hangs {
    fn send<'a>(&'a self, _mail: &'a Outgoing) -> Sending<'a> {
        Box::pin(async move {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

/// Refuses every message for good (a 5xx).
struct Refuses;

impl Transport for Refuses {
    fn send<'a>(&'a self, _mail: &'a Outgoing) -> Sending<'a> {
        Box::pin(async move { Err(SendError::Rejected { hard_bounce: false, message: "554 policy".into() }) })
    }
}

#[tokio::test]
async fn an_unknown_message_is_requeued_by_an_operator_and_sent_once_with_its_message_id() {
    let t = TestDb::new().await;
    let noon = noon();
    let cus = customer(&t.db, "cut@example.com").await;
    // Stale by the time the operator looks: requeueing is the operator's choice to send late.
    let id = queue(&t.db, &cus, "cut", noon, Some(noon + 3_600_000_000)).await;
    let hangs = Arc::new(Hangs(AtomicUsize::new(0)));
    let c = ctx(&t.db, hangs.clone());
    let cut =
        tokio::time::timeout(std::time::Duration::from_millis(300), delivery::send_due_once(&c, "dead", noon, 10))
            .await;
    assert!(cut.is_err());
    let rec = Arc::new(Recording::default());
    let c2 = ctx(&t.db, rec.clone());
    let later = noon + delivery::LEASE_MICROS + 1;
    assert_eq!(delivery::send_due_once(&c2, "alive", later, 10).await.unwrap().unknown, 1);
    let m = message(&t.db, "cut").await;
    assert_eq!(m.state, "unknown");
    assert_eq!(
        events(&t.db).await,
        vec![(
            Some(cus.clone()),
            Typed::LifecycleMessageFailed(LifecycleMessageFailed {
                message: id.clone(),
                template: "welcome".into(),
                state: "unknown".into(),
                error: "lease expired after a send attempt: not resent".into(),
            })
        )]
    );

    // Only unknown and failed messages can be requeued; an unknown id is not found.
    let wrong = delivery::requeue(&t.db, &Actor::cli(), "msg_nope", later).await.unwrap_err();
    assert!(matches!(wrong, LifecycleError::NotFound(_)), "{wrong:?}");
    let queued = queue(&t.db, &cus, "other", later + 3_600_000_000 * 100, None).await;
    let e = delivery::requeue(&t.db, &Actor::cli(), &queued, later).await.unwrap_err();
    assert!(
        matches!(&e, LifecycleError::Conflict(m) if m.contains("`queued`") && m.contains("unknown or failed")),
        "{e}"
    );

    let day = later + 86_400_000_000;
    let back = delivery::requeue(&t.db, &Actor::user("usr_op"), &id, day).await.unwrap();
    assert_eq!((back.state.as_str(), back.not_before, back.stale_at), ("queued", day, None));
    let audit = j1msky_audit::audit::list(&t.db, Some(&cus), 10).await.unwrap();
    let entry = audit.iter().find(|a| a.action == "lifecycle.message_requeue").unwrap();
    assert_eq!((entry.subject.as_str(), entry.actor.as_str()), (id.as_str(), "user:usr_op"));
    assert_eq!(entry.detail["from_state"], "unknown");

    let pass = delivery::send_due_once(&c2, "alive", day, 10).await.unwrap();
    assert_eq!(pass.sent, 1, "{pass:?}");
    let sent = rec.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, delivery::message_id("enr_rq", "cut", 0), "the same Message-ID as the first try");
    assert_eq!(message(&t.db, "cut").await.state, "sent");
    let all = events(&t.db).await;
    assert_eq!(
        all.last().unwrap(),
        &(
            Some(cus.clone()),
            Typed::LifecycleMessageSent(LifecycleMessageSent {
                message: id.clone(),
                template: "welcome".into(),
                category: "onboarding".into(),
                source: "enr_rq".into(),
            })
        )
    );
    // A sent message is not sent again by a second requeue.
    let e = delivery::requeue(&t.db, &Actor::cli(), &id, day).await.unwrap_err();
    assert!(matches!(e, LifecycleError::Conflict(_)), "{e:?}");
    assert_eq!(delivery::send_due_once(&c2, "alive", day + 1, 10).await.unwrap().claimed, 0);
    assert_eq!(rec.sent().len(), 1);
}

#[tokio::test]
async fn a_failed_message_can_be_requeued_and_deferred_or_suppressed_ones_emit_nothing() {
    let t = TestDb::new().await;
    let noon = noon();
    let cus = customer(&t.db, "no@example.com").await;
    let id = queue(&t.db, &cus, "refused", noon, None).await;
    let c = ctx(&t.db, Arc::new(Refuses));
    assert_eq!(delivery::send_due_once(&c, "s", noon, 10).await.unwrap().failed, 1);
    let failed = events(&t.db).await;
    assert!(
        matches!(&failed[..], [(_, Typed::LifecycleMessageFailed(f))] if f.state == "failed" && f.error == "554 policy"),
        "{failed:?}"
    );
    assert_eq!(delivery::requeue(&t.db, &Actor::cli(), &id, noon + 1).await.unwrap().state, "queued");
    // A deferral (quiet hours at 22:00) is not an outcome: no event.
    let mut quiet = Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    quiet.lifecycle.delivery.quiet_hours.end = "08:00".into();
    let rec = Arc::new(Recording::default());
    let c = Ctx { catalogue: Arc::new(quiet).into(), ..ctx(&t.db, rec.clone()) };
    let night = noon + 10 * 3_600_000_000;
    assert_eq!(delivery::send_due_once(&c, "s", night, 10).await.unwrap().deferred, 1);
    assert_eq!(events(&t.db).await.len(), 1);
}

#[tokio::test]
async fn unsubscribing_emits_an_event_in_its_transaction() {
    let t = TestDb::new().await;
    let noon = noon();
    let cus = customer(&t.db, "ann@example.com").await;
    let token = delivery::unsubscribe_token(&t.db, &cus, Category::Marketing, noon).await.unwrap();
    assert_eq!(delivery::unsubscribe(&t.db, "bad.token", noon).await.unwrap(), None);
    assert!(events(&t.db).await.is_empty());
    assert_eq!(delivery::unsubscribe(&t.db, &token, noon).await.unwrap(), Some(Category::Marketing));
    assert_eq!(
        events(&t.db).await,
        vec![(Some(cus), Typed::LifecycleUnsubscribed(LifecycleUnsubscribed { category: "marketing".into() }))]
    );
}
