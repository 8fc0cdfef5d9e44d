// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The sender on both engines, with in-memory transports: headers and footer, the
//! send-time rules (staleness, suppression, consent, caps, quiet hours across both DST
//! changes), retries, a send cut off mid-way (→ `unknown`, never resent) and two
//! senders racing (every message exactly once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{NaiveDate, TimeZone};
use j1msky_audit::Actor;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::clock::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_lifecycle::delivery::{self, Category, NewMessage, SuppressReason};
use j1msky_lifecycle::templates::Rendered;
use j1msky_lifecycle::transport::{Outgoing, Recording, SendError, Sending, Transport};
use j1msky_lifecycle::Ctx;

const HOUR: i64 = 3_600_000_000;

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
    chrono::Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap().timestamp_micros()
}

fn ctx(db: &Db, transport: Arc<dyn Transport>, tweak: impl FnOnce(&mut Catalogue)) -> Ctx {
    let mut catalogue = Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    tweak(&mut catalogue);
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

async fn customer(db: &Db, email: &str, zone: &str) -> String {
    let catalogue = Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    let input = j1msky_accounts::customers::NewCustomer {
        name: "Acme".into(),
        contact_email: Some(email.into()),
        time_zone: Some(zone.into()),
        ..Default::default()
    };
    j1msky_accounts::customers::create(db, &catalogue, &Actor::cli(), input, 1).await.unwrap().id
}

async fn queue(db: &Db, cus: &str, step: &str, category: Category, not_before: i64, stale_at: Option<i64>) {
    let rendered = Rendered {
        subject: format!("Subject {step}"),
        text: format!("Hello, text of {step}."),
        html: format!("<html><body><p>Hello, html of {step}.</p></body></html>"),
    };
    let msg = NewMessage {
        customer_id: cus,
        source: "enr_test",
        step,
        occurrence: 0,
        category,
        template: "welcome",
        rendered: &rendered,
        not_before,
        stale_at,
    };
    let mut conn = db.pool().acquire().await.unwrap();
    delivery::enqueue(&mut conn, db.backend(), &msg, 0).await.unwrap().unwrap();
}

async fn state_of(db: &Db, step: &str) -> (String, i64, Option<String>) {
    let all = delivery::list(db, None, None, 1000).await.unwrap();
    let m = all.iter().find(|m| m.step == step).unwrap();
    (m.state.clone(), m.not_before, m.last_error.clone())
}

fn text(mail: &Outgoing) -> String {
    String::from_utf8(mail.raw.clone()).unwrap()
}

#[tokio::test]
async fn a_message_carries_its_message_id_unsubscribe_headers_and_footer() {
    let t = TestDb::new().await;
    let rec = Arc::new(Recording::default());
    let c = ctx(&t.db, rec.clone(), |c| c.lifecycle.delivery.quiet_hours.end = "21:00".into());
    let cus = customer(&t.db, "Ann@Example.com", "UTC").await;
    let noon = utc(2026, 6, 10, 12, 0);
    queue(&t.db, &cus, "welcome", Category::Onboarding, noon, None).await;
    queue(&t.db, &cus, "receipt", Category::Transactional, noon, None).await;
    let pass = delivery::send_due_once(&c, "s1", noon, 10).await.unwrap();
    assert_eq!((pass.claimed, pass.sent), (2, 2), "{pass:?}");
    let sent = rec.sent();
    let by_id: HashMap<_, _> = sent.iter().map(|m| (m.message_id.clone(), m)).collect();
    let welcome = text(by_id[&delivery::message_id("enr_test", "welcome", 0)]);
    assert_eq!(by_id[&delivery::message_id("enr_test", "welcome", 0)].to, "Ann@Example.com");
    assert!(
        welcome.contains(&format!("Message-ID: <{}>", delivery::message_id("enr_test", "welcome", 0))),
        "{welcome}"
    );
    assert!(welcome.contains("multipart/alternative"));
    assert!(welcome.contains("text/plain") && welcome.contains("text/html"));
    assert!(welcome.contains("List-Unsubscribe: <https://app.example.test/u/"), "{welcome}");
    assert!(welcome.contains("mailto:unsubscribe@j1msky.example"));
    assert!(welcome.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    let address = &c.catalogue.lifecycle.delivery.physical_address;
    assert_eq!(welcome.matches(address.as_str()).count(), 2, "the footer is in both parts: {welcome}");
    let receipt = text(by_id[&delivery::message_id("enr_test", "receipt", 0)]);
    assert!(!receipt.contains("List-Unsubscribe"), "transactional mail has no unsubscribe header");
    assert!(receipt.contains(address.as_str()));
    // Sent rows are not claimed again.
    assert_eq!(delivery::send_due_once(&c, "s1", noon + HOUR, 10).await.unwrap().claimed, 0);
    assert_eq!(state_of(&t.db, "welcome").await.0, "sent");
}

#[tokio::test]
async fn stale_suppressed_and_unconsented_messages_are_not_sent() {
    let t = TestDb::new().await;
    let rec = Arc::new(Recording::default());
    let c = ctx(&t.db, rec.clone(), |c| c.lifecycle.delivery.quiet_hours.end = "21:00".into());
    let noon = utc(2026, 6, 10, 12, 0);
    let ann = customer(&t.db, "ann@example.com", "UTC").await;
    let bob = customer(&t.db, "bob@example.com", "UTC").await;
    queue(&t.db, &ann, "late", Category::Onboarding, noon - 48 * HOUR, Some(noon - HOUR)).await;
    queue(&t.db, &ann, "promo", Category::Marketing, noon, None).await;
    queue(&t.db, &bob, "bob-welcome", Category::Onboarding, noon, None).await;
    queue(&t.db, &bob, "bob-receipt", Category::Transactional, noon, None).await;
    assert!(delivery::suppress(&t.db, &Actor::cli(), "BOB@example.com", SuppressReason::Operator, "asked", noon)
        .await
        .unwrap());
    assert!(delivery::suppress(&t.db, &Actor::cli(), "not an address", SuppressReason::Operator, "", noon)
        .await
        .is_err());
    let pass = delivery::send_due_once(&c, "s1", noon, 10).await.unwrap();
    assert_eq!((pass.sent, pass.stale, pass.suppressed), (0, 1, 3), "{pass:?}");
    assert!(rec.sent().is_empty());
    assert_eq!(state_of(&t.db, "late").await.0, "stale");
    assert_eq!(state_of(&t.db, "promo").await.0, "suppressed", "marketing needs an explicit opt-in");
    assert_eq!(state_of(&t.db, "bob-receipt").await.0, "suppressed", "a suppressed address gets nothing");

    // Opting in to marketing lets the next one through.
    delivery::set_consent(&t.db, &ann, Category::Marketing, true, "form", noon).await.unwrap();
    queue(&t.db, &ann, "promo2", Category::Marketing, noon, None).await;
    assert_eq!(delivery::send_due_once(&c, "s1", noon, 10).await.unwrap().sent, 1);
    assert!(delivery::set_consent(&t.db, &ann, Category::Transactional, false, "form", noon).await.is_err());
}

#[tokio::test]
async fn the_unsubscribe_token_withdraws_consent_for_its_category_only() {
    let t = TestDb::new().await;
    let rec = Arc::new(Recording::default());
    let c = ctx(&t.db, rec.clone(), |c| c.lifecycle.delivery.quiet_hours.end = "21:00".into());
    let noon = utc(2026, 6, 10, 12, 0);
    let ann = customer(&t.db, "ann@example.com", "UTC").await;
    let token = delivery::unsubscribe_token(&t.db, &ann, Category::Retention, noon).await.unwrap();
    assert_eq!(delivery::verify_token(&t.db, &token, noon).await.unwrap(), Some((ann.clone(), Category::Retention)));
    // A forged token (other customer, same signature) is refused.
    let (_, mac) = token.split_once('.').unwrap();
    let forged = format!("{}.{mac}", base64_of(&format!("cus_other\n{}", "retention")));
    assert_eq!(delivery::unsubscribe(&t.db, &forged, noon).await.unwrap(), None);
    assert_eq!(delivery::unsubscribe(&t.db, "garbage", noon).await.unwrap(), None);
    assert_eq!(delivery::unsubscribe(&t.db, &token, noon).await.unwrap(), Some(Category::Retention));
    queue(&t.db, &ann, "winback", Category::Retention, noon, None).await;
    queue(&t.db, &ann, "tips", Category::Onboarding, noon, None).await;
    let pass = delivery::send_due_once(&c, "s1", noon, 10).await.unwrap();
    assert_eq!((pass.sent, pass.suppressed), (1, 1));
    assert_eq!(state_of(&t.db, "winback").await.0, "suppressed");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn quiet_hours_end_at_local_eight_across_both_new_york_dst_changes() {
    let ny = chrono_tz::America::New_York;
    // 21:00 → 08:00. Spring forward: 2026-03-08 02:00 EST → 03:00 EDT.
    let before = utc(2026, 3, 8, 6, 0); // 01:00 EST
    assert_eq!(delivery::quiet_until(ny, before, 21 * 60, 8 * 60), Some(utc(2026, 3, 8, 12, 0)), "08:00 EDT");
    // Fall back: 2026-11-01 02:00 EDT → 01:00 EST; 01:30 happens twice.
    let first_130 = utc(2026, 11, 1, 5, 30); // 01:30 EDT
    let second_130 = utc(2026, 11, 1, 6, 30); // 01:30 EST
    assert_eq!(delivery::quiet_until(ny, first_130, 21 * 60, 8 * 60), Some(utc(2026, 11, 1, 13, 0)), "08:00 EST");
    assert_eq!(delivery::quiet_until(ny, second_130, 21 * 60, 8 * 60), Some(utc(2026, 11, 1, 13, 0)));
    // Outside the window: none; the evening before: the next morning.
    assert_eq!(delivery::quiet_until(ny, utc(2026, 3, 8, 16, 0), 21 * 60, 8 * 60), None);
    assert_eq!(delivery::quiet_until(ny, utc(2026, 3, 8, 2, 0), 21 * 60, 8 * 60), Some(utc(2026, 3, 8, 12, 0)));
    // A window ending inside the skipped hour ends at the first instant after it.
    assert_eq!(delivery::quiet_until(ny, utc(2026, 3, 8, 5, 0), 0, 150), Some(utc(2026, 3, 8, 7, 0)));
    assert_eq!(
        delivery::local_instant(ny, NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), 90),
        utc(2026, 11, 1, 5, 30),
        "a repeated time resolves to its first occurrence"
    );
    // Same-day window (no wrap).
    assert_eq!(
        delivery::quiet_until(chrono_tz::UTC, utc(2026, 6, 1, 13, 0), 12 * 60, 14 * 60),
        Some(utc(2026, 6, 1, 14, 0))
    );
    assert_eq!(delivery::quiet_until(chrono_tz::UTC, utc(2026, 6, 1, 13, 0), 9 * 60, 9 * 60), None);
}

#[tokio::test]
async fn a_message_due_in_quiet_hours_is_deferred_to_their_local_end_and_then_sent() {
    let t = TestDb::new().await;
    let rec = Arc::new(Recording::default());
    let c = ctx(&t.db, rec.clone(), |_| {});
    let ny = customer(&t.db, "ny@example.com", "America/New_York").await;
    for (step, at, end) in [
        ("spring", utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 12, 0)),
        ("fall", utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 13, 0)),
    ] {
        queue(&t.db, &ny, step, Category::Onboarding, at, None).await;
        queue(&t.db, &ny, &format!("{step}-receipt"), Category::Transactional, at, None).await;
        let pass = delivery::send_due_once(&c, "s1", at, 10).await.unwrap();
        assert_eq!((pass.deferred, pass.sent), (1, 1), "{step}: transactional mail ignores quiet hours");
        let (state, not_before, why) = state_of(&t.db, step).await;
        assert_eq!((state.as_str(), not_before), ("deferred", end), "{step}");
        assert_eq!(why.as_deref(), Some("quiet hours"));
        assert_eq!(delivery::send_due_once(&c, "s1", end - 1, 10).await.unwrap().claimed, 0);
        assert_eq!(delivery::send_due_once(&c, "s1", end, 10).await.unwrap().sent, 1, "{step}");
    }
    // A UTC customer: 06:00 is quiet until 08:00.
    let fallback = utc(2026, 6, 1, 6, 0);
    let cus = customer(&t.db, "utc@example.com", "UTC").await;
    queue(&t.db, &cus, "utc", Category::Onboarding, fallback, None).await;
    delivery::send_due_once(&c, "s1", fallback, 10).await.unwrap();
    assert_eq!(state_of(&t.db, "utc").await.1, utc(2026, 6, 1, 8, 0));
}

#[tokio::test]
async fn caps_per_local_day_and_week_defer_the_rest() {
    let t = TestDb::new().await;
    let rec = Arc::new(Recording::default());
    let c = ctx(&t.db, rec.clone(), |c| {
        let d = &mut c.lifecycle.delivery;
        d.quiet_hours.end = d.quiet_hours.start.clone();
        d.max_per_day = 2;
        d.max_per_week = 3;
    });
    let cus = customer(&t.db, "cap@example.com", "Europe/Berlin").await;
    // Wednesday 2026-06-10, 10:00 UTC = 12:00 in Berlin.
    let wed = utc(2026, 6, 10, 10, 0);
    for i in 0..5 {
        queue(&t.db, &cus, &format!("m{i}"), Category::Onboarding, wed, None).await;
    }
    queue(&t.db, &cus, "receipt", Category::Transactional, wed, None).await;
    // One at a time so the cap sees the previous sends.
    let mut sent = 0;
    for _ in 0..6 {
        sent += delivery::send_due_once(&c, "s1", wed, 1).await.unwrap().sent;
    }
    assert_eq!(sent, 3, "two capped messages plus the transactional one");
    let deferred = delivery::list(&t.db, Some("deferred"), Some(&cus), 10).await.unwrap();
    assert_eq!(deferred.len(), 3);
    let berlin_midnight = utc(2026, 6, 10, 22, 0); // Thursday 00:00 CEST
    assert!(deferred.iter().all(|m| m.not_before == berlin_midnight), "{deferred:?}");
    // Thursday: one more fits the week, then the weekly cap holds the rest until Monday.
    let mut thursday = 0;
    for _ in 0..3 {
        thursday += delivery::send_due_once(&c, "s1", berlin_midnight, 1).await.unwrap().sent;
    }
    assert_eq!(thursday, 1);
    let monday = utc(2026, 6, 14, 22, 0); // Monday 2026-06-15 00:00 CEST
    let held = delivery::list(&t.db, Some("deferred"), Some(&cus), 10).await.unwrap();
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|m| m.not_before == monday && m.last_error.as_deref() == Some("weekly cap of 3")));
}

/// Refuses the first `refusals` sends, then hard-bounces or accepts.
struct Scripted {
    refusals: AtomicUsize,
    bounce: bool,
    calls: AtomicUsize,
}

impl Transport for Scripted {
    fn send<'a>(&'a self, _mail: &'a Outgoing) -> Sending<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.refusals.load(Ordering::SeqCst) > 0 {
                self.refusals.fetch_sub(1, Ordering::SeqCst);
                return Err(SendError::Refused("421 try later".into()));
            }
            if self.bounce {
                return Err(SendError::Rejected { hard_bounce: true, message: "550 no such user".into() });
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn refusals_are_retried_with_back_off_and_a_hard_bounce_suppresses_the_address() {
    let t = TestDb::new().await;
    let flaky = Arc::new(Scripted { refusals: AtomicUsize::new(2), bounce: false, calls: AtomicUsize::new(0) });
    let c = ctx(&t.db, flaky.clone(), |c| c.lifecycle.delivery.quiet_hours.end = "21:00".into());
    let noon = utc(2026, 6, 10, 12, 0);
    let cus = customer(&t.db, "retry@example.com", "UTC").await;
    queue(&t.db, &cus, "r", Category::Transactional, noon, None).await;
    assert_eq!(delivery::send_due_once(&c, "s1", noon, 10).await.unwrap().retried, 1);
    let (state, nb, err) = state_of(&t.db, "r").await;
    assert_eq!((state.as_str(), nb, err.as_deref()), ("queued", noon + 60_000_000, Some("421 try later")));
    assert_eq!(delivery::send_due_once(&c, "s1", nb, 10).await.unwrap().retried, 1);
    let nb2 = state_of(&t.db, "r").await.1;
    assert_eq!(nb2, nb + 120_000_000, "the back-off doubles");
    assert_eq!(delivery::send_due_once(&c, "s1", nb2, 10).await.unwrap().sent, 1);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);

    let bouncing = Arc::new(Scripted { refusals: AtomicUsize::new(0), bounce: true, calls: AtomicUsize::new(0) });
    let c = ctx(&t.db, bouncing, |c| c.lifecycle.delivery.quiet_hours.end = "21:00".into());
    let gone = customer(&t.db, "Gone@Example.com", "UTC").await;
    queue(&t.db, &gone, "b1", Category::Transactional, noon, None).await;
    assert_eq!(delivery::send_due_once(&c, "s1", noon, 10).await.unwrap().failed, 1);
    assert!(delivery::is_suppressed(&t.db, "gone@example.com").await.unwrap());
    let list = delivery::suppressions(&t.db, 10).await.unwrap();
    assert_eq!(list[0].reason, "hard_bounce");
    queue(&t.db, &gone, "b2", Category::Transactional, noon, None).await;
    assert_eq!(delivery::send_due_once(&c, "s1", noon, 10).await.unwrap().suppressed, 1);
    assert!(delivery::unsuppress(&t.db, &Actor::cli(), "gone@example.com", noon).await.unwrap());
    assert!(!delivery::unsuppress(&t.db, &Actor::cli(), "gone@example.com", noon).await.unwrap());
}

/// Takes the message and never answers (a server or process dying after DATA).
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

#[tokio::test]
async fn a_send_cut_off_mid_way_becomes_unknown_and_is_never_resent() {
    let t = TestDb::new().await;
    let hangs = Arc::new(Hangs(AtomicUsize::new(0)));
    let c = ctx(&t.db, hangs.clone(), |c| c.lifecycle.delivery.quiet_hours.end = "21:00".into());
    let noon = utc(2026, 6, 10, 12, 0);
    let cus = customer(&t.db, "cut@example.com", "UTC").await;
    queue(&t.db, &cus, "cut", Category::Onboarding, noon, None).await;
    // The sender is dropped while the transport holds the message (like a kill -9).
    let cut =
        tokio::time::timeout(std::time::Duration::from_millis(300), delivery::send_due_once(&c, "dead", noon, 10))
            .await;
    assert!(cut.is_err());
    assert_eq!(hangs.0.load(Ordering::SeqCst), 1);
    assert_eq!(state_of(&t.db, "cut").await.0, "sending");
    // Before the lease expires nobody touches it; after, it is `unknown`, not resent.
    let rec = Arc::new(Recording::default());
    let c2 = ctx(&t.db, rec.clone(), |c| c.lifecycle.delivery.quiet_hours.end = "21:00".into());
    assert_eq!(delivery::send_due_once(&c2, "alive", noon + 1, 10).await.unwrap().claimed, 0);
    let later = noon + delivery::LEASE_MICROS + 1;
    let pass = delivery::send_due_once(&c2, "alive", later, 10).await.unwrap();
    assert_eq!(pass.unknown, 1);
    assert!(rec.sent().is_empty());
    assert_eq!(state_of(&t.db, "cut").await.0, "unknown");
    assert_eq!(delivery::send_due_once(&c2, "alive", later + HOUR, 10).await.unwrap().claimed, 0);
}

#[tokio::test]
async fn two_senders_racing_send_every_message_exactly_once() {
    let t = TestDb::new().await;
    let rec = Arc::new(Recording::default());
    let c = ctx(&t.db, rec.clone(), |c| {
        c.lifecycle.delivery.quiet_hours.end = "21:00".into();
        c.lifecycle.delivery.max_per_day = 0;
        c.lifecycle.delivery.max_per_week = 0;
    });
    let noon = utc(2026, 6, 10, 12, 0);
    let mut customers = Vec::new();
    for i in 0..10 {
        customers.push(customer(&t.db, &format!("c{i}@example.com"), "UTC").await);
    }
    for i in 0..300 {
        queue(&t.db, &customers[i % 10], &format!("s{i}"), Category::Onboarding, noon, None).await;
    }
    let run = |owner: &'static str| {
        let c = c.clone();
        async move {
            let mut n = 0;
            loop {
                let p = delivery::send_due_once(&c, owner, noon, 7).await.unwrap();
                if p.claimed == 0 {
                    return n;
                }
                n += p.sent;
            }
        }
    };
    let (a, b) = tokio::join!(run("a"), run("b"));
    assert_eq!(a + b, 300);
    let sent = rec.sent();
    let mut ids: Vec<_> = sent.iter().map(|m| m.message_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((sent.len(), ids.len()), (300, 300));
    assert_eq!(delivery::list(&t.db, Some("sent"), None, 1000).await.unwrap().len(), 300);
}

/// A message carrying a one-time link (to set a password) keeps the link in its stored
/// bodies only while it may still be sent: once sent (or stale: never to be sent) the
/// database holds the message without the token, so a backup of it cannot set the
/// customer's password. The recipient's mail carries the link, and a message deferred by
/// quiet hours still has it to send.
#[tokio::test]
async fn a_one_time_link_leaves_the_stored_message_once_it_is_sent_or_never_will_be() {
    let t = TestDb::new().await;
    let rec = Arc::new(Recording::default());
    let c = ctx(&t.db, rec.clone(), |_| {});
    let cus = customer(&t.db, "ann@example.com", "UTC").await;
    let token = "Zq3xV9_kLm2-Pw8rTt5yUu1iOo4aSs6dDf7gHh0jJkE";
    let link = |step: &str| Rendered {
        subject: format!("Set your password ({step})"),
        text: format!("Choose a password: https://app.example.test/set-password/{token}\n"),
        html: format!(
            "<p><a href=\"https:&#x2f;&#x2f;app.example.test&#x2f;set-password&#x2f;{token}\">Choose</a></p>"
        ),
    };
    // Due at 03:00 UTC: quiet hours defer both; the late one is stale by the time they end.
    let night = utc(2026, 6, 10, 3, 0);
    for (step, stale_at) in [("invite", None), ("late", Some(night + HOUR))] {
        let rendered = link(step);
        let msg = NewMessage {
            customer_id: &cus,
            source: "enr_test",
            step,
            occurrence: 0,
            category: Category::Onboarding,
            template: "welcome",
            rendered: &rendered,
            not_before: night,
            stale_at,
        };
        let mut conn = t.db.pool().acquire().await.unwrap();
        delivery::enqueue(&mut conn, t.db.backend(), &msg, 0).await.unwrap().unwrap();
    }
    let stored = |step: &'static str| {
        let db = t.db.clone();
        async move {
            let (text, html): (String, String) =
                sqlx::query_as("SELECT body_text, body_html FROM lifecycle_messages WHERE step = $1")
                    .bind(step)
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
            (text, html)
        }
    };
    let pass = delivery::send_due_once(&c, "s1", night, 10).await.unwrap();
    assert_eq!(pass.sent, 0, "{pass:?}");
    assert_eq!(state_of(&t.db, "invite").await.0, "deferred");
    let (text, html) = stored("invite").await;
    assert!(text.contains(token) && html.contains(token), "a deferred message keeps the link it must still send");

    let morning = utc(2026, 6, 10, 9, 0);
    let pass = delivery::send_due_once(&c, "s1", morning, 10).await.unwrap();
    assert_eq!((pass.sent, pass.stale), (1, 1), "{pass:?}");
    assert!(text_of_sent(&rec).contains(token), "the recipient's mail carries the link");
    for step in ["invite", "late"] {
        let (text, html) = stored(step).await;
        assert!(!text.contains(token) && !html.contains(token), "{step} keeps the token: {text} {html}");
        assert!(text.contains("set-password/[one-time token hidden]"), "{text}");
        assert!(html.contains("set-password&#x2f;[one-time token hidden]"), "{html}");
    }
}

/// Every mail sent, its quoted-printable soft line breaks joined.
fn text_of_sent(rec: &Recording) -> String {
    rec.sent().iter().map(|m| text(m).replace("=\r\n", "").replace("=\n", "")).collect::<Vec<_>>().join("\n")
}
