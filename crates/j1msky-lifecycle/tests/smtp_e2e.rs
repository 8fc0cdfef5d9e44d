// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! End to end through real SMTP (`aiosmtpd` on loopback, from `scripts/smtp-env`, found
//! through `J1MSKY_SMTP_PYTHON`):
//! - a sender process SIGKILLed while messages are in flight, then a new sender: no
//!   Message-ID arrives twice and every message ends `sent`, or `unknown` for those
//!   handed to the server without an answer (at most the pool's size; they may or may
//!   not have arrived and are never resent automatically); nothing is left behind;
//! - one customer in Berlin through the onboarding journeys, day 0 → 30, with the timers
//!   and the sender run at each step: each mail's headers, both parts, and the local
//!   time it arrived at (quiet hours, the daily cap and the change to summer time).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::events::Kind;
use j1msky_db::consumers::{self, Runner};
use j1msky_db::testing::TestDb;
use j1msky_db::{timers, Db};
use j1msky_lifecycle::delivery::{self, Category, NewMessage};
use j1msky_lifecycle::templates::Rendered;
use j1msky_lifecycle::transport::Smtp;
use j1msky_lifecycle::Ctx;
use sqlx::Row;

const POOL: usize = 4;

/// The decoded (content type, body) of each part of a multipart mail.
fn parts(mail: &str) -> Vec<(String, String)> {
    use base64::Engine;
    let mail = mail.replace("\r\n", "\n");
    let ct = header(&mail, "Content-Type").unwrap();
    let boundary = ct.split("boundary=").nth(1).unwrap().trim_matches('"').to_string();
    let mut out = Vec::new();
    for chunk in mail.split(&format!("--{boundary}")).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        let (head, body) = chunk.trim_start_matches('\n').split_once("\n\n").unwrap();
        let head = format!("{head}\n");
        let kind = header(&head, "Content-Type").unwrap();
        let body = match header(&head, "Content-Transfer-Encoding").as_deref() {
            Some("base64") => {
                let b64: String = body.split_whitespace().collect();
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
            }
            Some("quoted-printable") => {
                let joined = body.replace("=\n", "");
                let bytes = joined.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'=' && i + 2 < bytes.len() {
                        out.push(u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap(), 16).unwrap());
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            }
            _ => body.to_string(),
        };
        out.push((kind, body));
    }
    out
}

/// The shipped catalogue; `open_all_hours` turns quiet hours and caps off.
fn catalogue(open_all_hours: bool) -> Catalogue {
    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    // The operator's community, so the Pro customer's day-14 invite goes out.
    catalogue.lifecycle.delivery.links.community = Some("https://chat.example.org/j1msky".into());
    if open_all_hours {
        catalogue.lifecycle.delivery.quiet_hours.end = catalogue.lifecycle.delivery.quiet_hours.start.clone();
        catalogue.lifecycle.delivery.max_per_day = 0;
        catalogue.lifecycle.delivery.max_per_week = 0;
    }
    catalogue
}

fn ctx(db: &Db, catalogue: Catalogue, clock: &ManualClock, port: u16) -> Ctx {
    Ctx {
        db: db.clone(),
        catalogue: Arc::new(catalogue).into(),
        clock: Arc::new(clock.clone()),
        transport: Arc::new(Smtp::from_url(&format!("smtp://127.0.0.1:{port}"), POOL).unwrap()),
        stripe: None,
        base_url: "https://app.example.test".into(),
        templates_dir: repo().join("config/templates"),
    }
}

// ---------------------------------------------------------------------------------------
// kill -9 mid-send

const CHILD_DB: &str = "J1MSKY_CRASH_CHILD_DB";
const CHILD_PORT: &str = "J1MSKY_CRASH_CHILD_PORT";
const CHILD_NOW: &str = "J1MSKY_CRASH_CHILD_NOW";
const CRASH_MESSAGES: usize = 400;

/// The sender process of the crash test: this test binary run again with the database
/// and the sink in its environment (it does nothing in an ordinary run). It sends
/// until it is killed.
#[tokio::test]
async fn crash_child_sender() {
    let (Ok(url), Ok(port), Ok(now)) = (std::env::var(CHILD_DB), std::env::var(CHILD_PORT), std::env::var(CHILD_NOW))
    else {
        return;
    };
    let now: i64 = now.parse().unwrap();
    let db = Db::connect(&url).await.unwrap();
    let c = ctx(&db, catalogue(true), &ManualClock::new(now), port.parse().unwrap());
    loop {
        delivery::send_due_once(&c, "doomed-sender", now, 16).await.unwrap();
    }
}

#[tokio::test]
async fn a_sender_killed_mid_send_loses_nothing_and_a_new_one_sends_nothing_twice() {
    let Some(python) = smtp_python() else { return };
    // Each message is stored, then acknowledged 20 ms later: while the child runs, its
    // pool always has messages handed over and unanswered.
    let sink = start_sink(&python, 20);
    let t = TestDb::new().await;
    let now = 1_780_000_000_000_000;
    let input = j1msky_accounts::customers::NewCustomer {
        name: "Acme".into(),
        contact_email: Some("ann@example.com".into()),
        time_zone: Some("Europe/Berlin".into()),
        ..Default::default()
    };
    let catalogue = catalogue(true);
    let cus = j1msky_accounts::customers::create(&t.db, &catalogue, &Actor::cli(), input, now).await.unwrap().id;
    let mut tx = t.db.begin().await.unwrap();
    for i in 0..CRASH_MESSAGES {
        let rendered = Rendered {
            subject: format!("Tip {i}"),
            text: format!("Plain text of tip {i}."),
            html: format!("<html><body><p>Tip {i}.</p></body></html>"),
        };
        let step = format!("tip{i}");
        let msg = NewMessage {
            customer_id: &cus,
            source: "enr_crash",
            step: &step,
            occurrence: 0,
            category: Category::Onboarding,
            template: "welcome",
            rendered: &rendered,
            not_before: now,
            stale_at: None,
        };
        delivery::enqueue(&mut tx, t.db.backend(), &msg, now).await.unwrap().unwrap();
    }
    tx.commit().await.unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["smtp_e2e::crash_child_sender", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, &t.url)
        .env(CHILD_PORT, sink.port.to_string())
        .env(CHILD_NOW, now.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Let it send a good part, then SIGKILL it mid-stream.
    let mut waited = 0;
    while delivered_count(sink.maildir.path()) < CRASH_MESSAGES / 4 {
        assert!(child.try_wait().unwrap().is_none(), "the sender process died on its own");
        assert!(waited < 120_000, "the sender process sent nothing in two minutes");
        std::thread::sleep(Duration::from_millis(10));
        waited += 10;
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");
    let at_kill = delivered_count(sink.maildir.path());
    assert!(at_kill < CRASH_MESSAGES, "the kill came after the last message: nothing was in flight");
    let states = |db: Db| async move {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM lifecycle_messages GROUP BY state ORDER BY state")
                .fetch_all(db.pool())
                .await
                .unwrap();
        rows.into_iter().collect::<BTreeMap<_, _>>()
    };
    let before = states(t.db.clone()).await;
    assert!(before.get("sending").copied().unwrap_or(0) > 0, "rows leased to the dead sender: {before:?}");

    // A new sender once the dead one's leases expired.
    let later = now + delivery::LEASE_MICROS + 1;
    let c = ctx(&t.db, catalogue, &ManualClock::new(later), sink.port);
    for _ in 0..100 {
        if delivery::send_due_once(&c, "new-sender", later, 64).await.unwrap().claimed == 0 {
            break;
        }
    }
    // The sink stores before it acknowledges: what it got is in the Maildir now.
    let after = states(t.db.clone()).await;
    let sent = after.get("sent").copied().unwrap_or(0);
    let unknown = after.get("unknown").copied().unwrap_or(0);
    assert_eq!(sent + unknown, CRASH_MESSAGES as i64, "every message sent or unknown, nothing else: {after:?}");
    assert!(unknown >= 1, "a message was handed over when the sender died: {after:?} (before: {before:?})");
    assert!(unknown <= POOL as i64, "at most one per pool connection was in flight: {after:?}");

    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query("SELECT message_id, state, last_error FROM lifecycle_messages")
            .fetch_all(t.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (format!("<{}>", r.get::<String, _>(0)), r.get(1), r.get(2)))
            .collect();
    let mails = delivered(sink.maildir.path());
    let ids: Vec<String> = mails.iter().map(|m| header(m, "Message-ID").unwrap()).collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a Message-ID arrived twice");
    for (id, state, error) in &rows {
        match state.as_str() {
            "sent" => assert!(distinct.contains(id), "{id} is sent but never arrived"),
            "unknown" => {
                assert!(error.as_deref().unwrap().contains("not resent"), "{error:?}")
            }
            other => panic!("{id} ended {other}"),
        }
    }
    let known: BTreeSet<&String> = rows.iter().map(|(id, _, _)| id).collect();
    assert!(distinct.iter().all(|id| known.contains(id)), "a mail arrived that was never queued");
    assert!(ids.len() as i64 >= sent && ids.len() as i64 <= sent + unknown, "{} arrived, {after:?}", ids.len());
}

// ---------------------------------------------------------------------------------------
// Day 0 → 30

fn utc(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
}

struct World {
    db: Db,
    ctx: Ctx,
    clock: ManualClock,
}

impl World {
    fn now(&self) -> i64 {
        j1msky_core::Clock::now_micros(&self.clock)
    }

    /// Consumers and timers at the current time until nothing moves.
    async fn settle(&self) {
        let runner = Runner::new("test");
        let cons = j1msky_lifecycle::consumers(&self.ctx);
        let handlers = j1msky_lifecycle::timer_handlers(&self.ctx);
        for _ in 0..50 {
            let moved = consumers::run_once(&self.db, &runner, &cons, &self.clock).await.unwrap().moved();
            let fired = timers::run_due_once(&self.db, &handlers, self.now()).await.unwrap();
            if !moved && fired == 0 {
                return;
            }
        }
        panic!("consumers and timers never settled");
    }

    /// Runs the world to `at`: at each moment something is due before then (a timer, a
    /// deferred message), the clock stops there, the journeys move and the sender runs.
    async fn run_to(&self, at: i64) {
        assert!(at >= self.now(), "time runs forward");
        loop {
            self.settle().await;
            let pass = delivery::send_due_once(&self.ctx, "sender", self.now(), 100).await.unwrap();
            assert_eq!(pass.failed + pass.unknown, 0, "{pass:?}");
            let next_mail: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(not_before) FROM lifecycle_messages WHERE state IN ('queued', 'deferred')",
            )
            .fetch_one(self.db.pool())
            .await
            .unwrap();
            let next_timer: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(run_at) FROM jobs WHERE queue LIKE 'timer:%' AND state IN ('ready', 'leased')",
            )
            .fetch_one(self.db.pool())
            .await
            .unwrap();
            let next = [next_mail, next_timer].into_iter().flatten().filter(|n| *n > self.now()).min();
            match next {
                Some(n) if n <= at => self.clock.advance_micros(n - self.now()),
                _ => break,
            }
        }
        self.clock.advance_micros(at - self.now());
        self.settle().await;
        delivery::send_due_once(&self.ctx, "sender", self.now(), 100).await.unwrap();
    }

    async fn task(&self, cus: &str, team: &str, state: &str) {
        let id = j1msky_core::ids::new_id("task");
        sqlx::query(
            "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, not_before, queued_at, charge_micros)
             VALUES ($1, $2, $3, 'research', 't', 'p', 0, $4, $5, $5, $6)",
        )
        .bind(&id)
        .bind(cus)
        .bind(team)
        .bind(state)
        .bind(self.now())
        .bind(if state == "succeeded" { 2_000_000_i64 } else { 0 })
        .execute(self.db.pool())
        .await
        .unwrap();
        let kind = if state == "succeeded" { Kind::TaskSucceeded } else { Kind::TaskSubmitted };
        let mut tx = self.db.begin().await.unwrap();
        j1msky_db::testing::emit_raw(&mut tx, self.db.backend(), kind, Some(cus), &serde_json::json!({}), self.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn a_customer_in_berlin_gets_day_0_to_30_through_real_smtp_at_the_right_local_times() {
    let Some(python) = smtp_python() else { return };
    let sink = start_sink(&python, 0);
    let t = TestDb::new().await;
    // 2026-03-02 12:00 UTC, a Monday, 13:00 in Berlin (CET); Berlin moves to summer time
    // (CEST) on 2026-03-29, before day 30.
    let clock = ManualClock::new(utc("2026-03-02T12:00:00Z"));
    let w = World { db: t.db.clone(), ctx: ctx(&t.db, catalogue(false), &clock, sink.port), clock };
    let delivery_cfg = w.ctx.catalogue.lifecycle.delivery.clone();
    let input = j1msky_accounts::customers::NewCustomer {
        name: "Brandt".into(),
        contact_email: Some("brandt@example.com".into()),
        time_zone: Some("Europe/Berlin".into()),
        ..Default::default()
    };
    let cus =
        j1msky_accounts::customers::create(&w.db, &w.ctx.catalogue, &Actor::cli(), input, w.now()).await.unwrap().id;
    sqlx::query("UPDATE customers SET plan = 'pro' WHERE id = $1").bind(&cus).execute(w.db.pool()).await.unwrap();
    w.run_to(w.now()).await;
    w.run_to(utc("2026-03-02T14:00:00Z")).await;
    w.task(&cus, "research", "submitted").await;
    // The first successes come late at night (23:30 in Berlin): the celebration waits
    // for the end of quiet hours, 08:00 local.
    w.run_to(utc("2026-03-04T22:30:00Z")).await;
    w.task(&cus, "research", "succeeded").await;
    w.task(&cus, "content", "succeeded").await;
    w.task(&cus, "research", "succeeded").await;
    w.run_to(utc("2026-03-06T09:00:00Z")).await;
    let mut tx = w.db.begin().await.unwrap();
    j1msky_db::testing::emit_raw(
        &mut tx,
        w.db.backend(),
        Kind::PlanLimitHit,
        Some(&cus),
        &serde_json::json!({}),
        w.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    w.run_to(utc("2026-04-02T12:00:00Z")).await;

    // What was queued was sent, each once.
    let rows: Vec<(String, String, String, Option<i64>, String)> = sqlx::query(
        "SELECT template, state, message_id, sent_at, category FROM lifecycle_messages
         WHERE customer_id = $1 ORDER BY sent_at, template",
    )
    .bind(&cus)
    .fetch_all(w.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect();
    let mails = delivered(sink.maildir.path());
    assert_eq!(mails.len(), rows.len(), "{rows:?}");
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let local = |at: i64| {
        chrono::DateTime::from_timestamp_micros(at).unwrap().with_timezone(&berlin).format("%m-%d %H:%M").to_string()
    };
    let mut arrivals = Vec::new();
    let mut last_date = i64::MIN;
    for (template, state, message_id, sent_at, category) in &rows {
        assert_eq!(state, "sent", "{template}");
        let sent_at = sent_at.unwrap();
        let id = format!("<{message_id}>");
        let found: Vec<&String> = mails.iter().filter(|m| header(m, "Message-ID").as_deref() == Some(&id)).collect();
        assert_eq!(found.len(), 1, "{template} arrived once");
        let m = found[0];
        assert_eq!(
            header(m, "From").unwrap(),
            format!("{} <{}>", delivery_cfg.from_name, delivery_cfg.from_address),
            "{template}"
        );
        assert_eq!(header(m, "To").as_deref(), Some("brandt@example.com"));
        let subject = header(m, "Subject").unwrap();
        assert!(!subject.is_empty() && !subject.contains("{{"), "{template}: {subject}");
        let date = chrono::DateTime::parse_from_rfc2822(&header(m, "Date").unwrap()).unwrap().timestamp_micros();
        assert_eq!(date, sent_at / 1_000_000 * 1_000_000, "{template}: Date is the send time");
        assert!(date >= last_date, "{template}: Dates in sending order");
        last_date = date;
        assert!(header(m, "Content-Type").unwrap().starts_with("multipart/alternative"), "{template}");
        let parts = parts(m);
        assert_eq!(parts.len(), 2, "{template}: text and HTML");
        assert!(parts[0].0.starts_with("text/plain") && parts[1].0.starts_with("text/html"), "{template}");
        for (kind, body) in &parts {
            assert!(body.contains(delivery_cfg.physical_address.as_str()), "{template} {kind}: footer");
            assert!(!body.contains("{{") && body.len() > 200, "{template} {kind}: rendered");
        }
        assert!(parts[1].1.contains("</html>") || parts[1].1.contains("</p>"), "{template}: HTML");
        let unsubscribe = header(m, "List-Unsubscribe");
        if category == "transactional" {
            assert!(unsubscribe.is_none(), "{template}");
        } else {
            assert!(unsubscribe.unwrap().starts_with("<https://app.example.test/u/"), "{template}");
            assert_eq!(header(m, "List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
        }
        arrivals.push(format!("{} {template}", local(sent_at)));
    }
    // Day 0 at once; 10:00 local for the scheduled steps, before (CET, UTC+1) and after
    // (CEST, UTC+2) the change to summer time; 08:00 after a night in quiet hours.
    assert_eq!(
        arrivals,
        [
            "03-02 13:00 welcome",
            "03-03 10:00 activation_tips",
            "03-05 08:00 first_task_celebration",
            "03-05 08:00 nps",
            // The limit hit (10:00 local) starts the upgrade-prompt journey at once.
            "03-06 10:00 upgrade_prompt",
            "03-09 10:00 checkin_upgrade",
            "03-09 10:00 week_in_review",
            "03-16 10:00 community_invite",
            "03-16 10:00 optimisation_tips",
            "04-01 10:00 monthly_report",
        ],
        "arrivals, Berlin time"
    );
    let sent_at = |template: &str| rows.iter().find(|r| r.0 == template).unwrap().3.unwrap();
    assert_eq!(sent_at("week_in_review"), utc("2026-03-09T09:00:00Z"));
    assert_eq!(sent_at("monthly_report"), utc("2026-04-01T08:00:00Z"));
}
