// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Alerts that reach people, on both engines: a real SMTP server (aiosmtpd on loopback)
//! and a webhook receiver (a small axum server in the test) get an alert exactly once
//! even when it is raised twice; the per-kind hourly limit holds the rest for one
//! digest; a failing webhook is retried with back-off and its failure is visible; the
//! cost-spike check escalates the cost mode once; the report mails go out at the local
//! hour once a day.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use j1msky_audit::alerts;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::Clock;
use j1msky_db::consumers::{self, Runner};
use j1msky_db::testing::TestDb;
use j1msky_db::{timers, Db};
use j1msky_gateway::policy::Mode;
use j1msky_lifecycle::delivery;
use j1msky_ops::notify::{self, Notifier};
use sqlx::Row;

const HOUR: i64 = 3_600_000_000;
/// 2026-03-02 10:00:00 UTC, on an hour boundary.
const T0: i64 = 1_772_445_600_000_000;

/// The webhook receiver: every body it got, answering 500 to the first `fail_first`.
#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    calls: Arc<AtomicUsize>,
    fail_first: usize,
}

async fn receive(
    axum::extract::State(h): axum::extract::State<Hook>,
    axum::Json(v): axum::Json<serde_json::Value>,
) -> axum::http::StatusCode {
    let n = h.calls.fetch_add(1, Ordering::SeqCst);
    if n < h.fail_first {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    }
    h.bodies.lock().unwrap().push(v);
    axum::http::StatusCode::OK
}

impl Hook {
    async fn start(fail_first: usize) -> (Hook, String) {
        let hook = Hook { fail_first, ..Hook::default() };
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hook, format!("http://127.0.0.1:{port}/hook"))
    }

    fn texts(&self) -> Vec<String> {
        self.bodies.lock().unwrap().iter().map(|b| b["text"].as_str().unwrap().to_string()).collect()
    }
}

struct World {
    db: Db,
    clock: ManualClock,
    notifier: Notifier,
}

impl World {
    fn new(db: &Db, catalogue: Catalogue, webhook: Option<String>) -> World {
        let clock = ManualClock::new(T0);
        let ops =
            j1msky_ops::Ctx { db: db.clone(), catalogue: Arc::new(catalogue).into(), clock: Arc::new(clock.clone()) };
        let notifier =
            Notifier::new(ops, repo().join("config/templates"), "https://app.example.test").with_webhook(webhook);
        World { db: db.clone(), clock, notifier }
    }

    fn now(&self) -> i64 {
        self.clock.now_micros()
    }

    /// The alert consumer and ops' timers at the current time until nothing moves.
    async fn settle(&self) {
        let runner = Runner::new("test");
        let cons = vec![notify::consumer(&self.notifier)];
        let handlers = j1msky_ops::timers::handlers(&self.notifier);
        for _ in 0..20 {
            let moved = consumers::run_once(&self.db, &runner, &cons, &self.clock).await.unwrap().moved();
            let fired = timers::run_due_once(&self.db, &handlers, self.now()).await.unwrap();
            if !moved && fired == 0 {
                return;
            }
        }
        panic!("never settled");
    }

    async fn raise(&self, id: &str, kind: &str, message: &str) -> bool {
        alerts::raise(&self.db, id, kind, message, &serde_json::json!({}), self.now()).await.unwrap()
    }

    /// Queued operator mail whose source starts with `prefix`: (to, subject, text).
    async fn queued(&self, prefix: &str) -> Vec<(String, String, String)> {
        sqlx::query(
            "SELECT recipient, subject, body_text FROM lifecycle_messages WHERE source LIKE $1 ORDER BY source, recipient",
        )
        .bind(format!("{prefix}%"))
        .fetch_all(self.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<Option<String>, _>(0).unwrap(), r.get(1), r.get(2)))
        .collect()
    }

    async fn delivery_states(&self, channel: &str) -> Vec<(String, String, i64)> {
        sqlx::query("SELECT alert_id, state, attempts FROM ops_alert_deliveries WHERE channel = $1 ORDER BY alert_id")
            .bind(channel)
            .fetch_all(self.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

fn catalogue() -> Catalogue {
    let mut c = Catalogue::from_json_str(SHIPPED).unwrap();
    c.alerts.recipients = vec!["founder@example.com".into(), "ops@example.com".into()];
    c
}

#[tokio::test]
async fn an_alert_raised_twice_reaches_smtp_and_the_webhook_exactly_once() {
    let Some(python) = smtp_python() else { return };
    let sink = start_sink(&python, 0);
    let t = TestDb::new().await;
    let (hook, url) = Hook::start(0).await;
    // No list in the catalogue: the mail goes to the operators who can sign in.
    let c = Catalogue::from_json_str(SHIPPED).unwrap();
    assert!(c.alerts.recipients.is_empty());
    let w = World::new(&t.db, c.clone(), Some(url));
    let input = j1msky_accounts::users::NewUser {
        email: "op@example.com".into(),
        display_name: "Op".into(),
        password: "a long enough password".into(),
        role: j1msky_core::vocab::UserRole::Operator,
        customer_id: None,
    };
    j1msky_accounts::users::create(&t.db, &j1msky_audit::Actor::cli(), input, T0).await.unwrap();

    assert!(w.raise("alr_budget_1", "budget_level", "daily spend crossed 80%").await);
    w.settle().await;
    assert!(!w.raise("alr_budget_1", "budget_level", "daily spend crossed 80%").await, "same id: recorded once");
    w.settle().await;

    // The mail leaves through lifecycle's sender to the real SMTP server.
    let smtp = j1msky_lifecycle::transport::Smtp::from_url(&format!("smtp://127.0.0.1:{}", sink.port), 2).unwrap();
    let mail = j1msky_lifecycle::Ctx {
        db: t.db.clone(),
        catalogue: Arc::new(c).into(),
        clock: Arc::new(w.clock.clone()),
        transport: Arc::new(smtp),
        stripe: None,
        base_url: "https://app.example.test".into(),
        templates_dir: repo().join("config/templates"),
    };
    for _ in 0..2 {
        delivery::send_due_once(&mail, "sender", w.now(), 50).await.unwrap();
        w.settle().await;
    }
    let got = delivered(sink.maildir.path());
    assert_eq!(got.len(), 1, "one mail, to the one operator");
    assert_eq!(header(&got[0], "To").as_deref(), Some("op@example.com"));
    assert!(header(&got[0], "Subject").unwrap().contains("budget_level"), "{}", got[0]);
    assert!(got[0].contains("daily spend crossed 80%"));
    assert!(header(&got[0], "List-Unsubscribe").is_none(), "operator mail is transactional");

    assert_eq!(hook.texts().len(), 1, "{:?}", hook.texts());
    assert!(hook.texts()[0].contains("[budget_level] daily spend crossed 80%"));
    assert!(hook.texts()[0].contains("https://app.example.test/admin/alerts"));
    assert_eq!(w.delivery_states("webhook").await, vec![("alr_budget_1".into(), "sent".into(), 1)]);
    assert_eq!(w.delivery_states("mail").await, vec![("alr_budget_1".into(), "queued".into(), 0)]);
    let sent: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM lifecycle_messages WHERE source = 'alert:alr_budget_1' AND state = 'sent'",
    )
    .fetch_one(t.db.pool())
    .await
    .unwrap();
    assert_eq!(sent, 1);
}

#[tokio::test]
async fn past_the_hourly_limit_a_kind_is_held_and_sent_as_one_digest() {
    let t = TestDb::new().await;
    let (hook, url) = Hook::start(0).await;
    let mut c = catalogue();
    c.alerts.max_per_kind_per_hour = 2;
    let w = World::new(&t.db, c, Some(url));
    for i in 0..5 {
        w.raise(&format!("alr_q_{i}"), "queue_stuck", &format!("queue stuck #{i}")).await;
        w.clock.advance_secs(60);
    }
    w.raise("alr_other", "provider_auth", "provider sim rejected our key").await;
    w.settle().await;
    // Two of the kind, and the other kind, one mail per recipient each; the rest held.
    assert_eq!(w.queued("alert:alr_q_").await.len(), 4);
    assert_eq!(w.queued("alert:alr_other").await.len(), 2);
    assert_eq!(hook.texts().len(), 3);
    let held: Vec<_> = w.delivery_states("mail").await.into_iter().filter(|d| d.1 == "held").map(|d| d.0).collect();
    assert_eq!(held, vec!["alr_q_2", "alr_q_3", "alr_q_4"]);

    // At the end of the hour: one digest per channel naming the three held alerts.
    w.clock.advance_micros(T0 + HOUR - w.now());
    w.settle().await;
    let digests = w.queued("alert:digest:queue_stuck:").await;
    assert_eq!(digests.len(), 2, "{digests:?}");
    assert!(digests[0].1.contains("3 more queue_stuck alerts"), "{}", digests[0].1);
    for i in 2..5 {
        assert!(digests[0].2.contains(&format!("queue stuck #{i}")), "{}", digests[0].2);
    }
    let texts = hook.texts();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert!(texts[3].contains("3 more alert(s) this hour") && texts[3].contains("queue stuck #4"), "{}", texts[3]);
    for channel in ["mail", "webhook"] {
        let states: Vec<String> = w
            .delivery_states(channel)
            .await
            .into_iter()
            .filter(|d| ["alr_q_2", "alr_q_3", "alr_q_4"].contains(&d.0.as_str()))
            .map(|d| d.1)
            .collect();
        assert_eq!(states, vec!["summarised"; 3], "{channel}");
    }
    // A later hour starts counting again.
    w.raise("alr_q_next", "queue_stuck", "queue stuck again").await;
    w.settle().await;
    assert_eq!(w.queued("alert:alr_q_next").await.len(), 2);
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_back_off_and_the_failure_is_visible() {
    let t = TestDb::new().await;
    let (hook, url) = Hook::start(2).await;
    let w = World::new(&t.db, catalogue(), Some(url));
    w.raise("alr_circuit", "circuit_open", "provider sim keeps failing").await;
    w.settle().await;
    let d = notify::deliveries(&t.db, &["alr_circuit".to_string()]).await.unwrap();
    let hook_row = d.iter().find(|d| d.channel == "webhook").unwrap();
    assert_eq!((hook_row.state.as_str(), hook_row.attempts), ("retrying", 1));
    assert_eq!(hook_row.last_error.as_deref(), Some("webhook answered 500 Internal Server Error"));
    // Not before its back-off (30 s), then again (60 s later), then it gets through.
    w.clock.advance_secs(29);
    w.settle().await;
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
    w.clock.advance_secs(1);
    w.settle().await;
    assert_eq!(hook.calls.load(Ordering::SeqCst), 2);
    w.clock.advance_secs(60);
    w.settle().await;
    assert_eq!(hook.texts().len(), 1);
    assert_eq!(w.delivery_states("webhook").await, vec![("alr_circuit".into(), "sent".into(), 3)]);
    w.clock.advance_secs(3600);
    w.settle().await;
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3, "nothing sent after success");
}

async fn spend(db: &Db, at: i64, micros: i64) {
    let attempt = j1msky_gateway::ledger::Attempt {
        request_id: format!("req_{at}"),
        attempt: 0,
        customer_id: None,
        task_id: None,
        team: None,
        role: None,
        category: None,
        provider: "sim".into(),
        model_requested: "claude-opus".into(),
        model_used: "claude-opus".into(),
        input_tokens: 10,
        output_tokens: 10,
        cost: j1msky_core::Money::from_micros(micros),
        latency_micros: 1,
        outcome: "ok".into(),
        fallback_reason: None,
        created_at: at,
    };
    let mut tx = db.begin().await.unwrap();
    j1msky_gateway::ledger::record(&mut tx, &[attempt]).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_cost_spike_raises_an_alert_and_escalates_the_mode_once() {
    let t = TestDb::new().await;
    let w = World::new(&t.db, catalogue(), None);
    // A day of $0.50 an hour, then an hour of $1.40 (2.8×: no spike), then $2.00 (4×).
    for h in 1..=24 {
        spend(&t.db, T0 - h * HOUR + 60_000_000, 500_000).await;
    }
    spend(&t.db, T0 + 5 * 60_000_000, 1_400_000).await;
    spend(&t.db, T0 + HOUR + 5 * 60_000_000, 1_500_000).await;
    spend(&t.db, T0 + HOUR + 6 * 60_000_000, 500_000).await;
    let handlers = j1msky_ops::timers::handlers(&w.notifier);
    handlers.schedule_recurring(&t.db, T0).await.unwrap();

    // At 11:00 the hour 10-11 is checked: 2.8× the average, no spike.
    w.clock.advance_micros(HOUR);
    w.settle().await;
    assert!(alerts::list(&t.db, alerts::Status::All, 10).await.unwrap().is_empty());
    assert_eq!(j1msky_gateway::controls::load(&t.db).await.unwrap().mode, Mode::Normal);

    // At 12:00 the hour 11-12: $2.00 against an average of about $0.54.
    w.clock.advance_micros(HOUR);
    w.settle().await;
    let raised = alerts::list(&t.db, alerts::Status::Open, 10).await.unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].kind, "cost_spike");
    assert!(raised[0].message.contains("$2.00"), "{}", raised[0].message);
    assert_eq!(j1msky_gateway::controls::load(&t.db).await.unwrap().mode, Mode::OpusPaused);
    // Checked again (a retry): the same alert, the same mode, not one step further.
    let again = notify::spike::check_cost_spike(&w.notifier.ops, T0 + HOUR, w.now()).await.unwrap();
    assert_eq!(again.escalated_to, Some(Mode::OpusPaused));
    assert_eq!(j1msky_gateway::controls::load(&t.db).await.unwrap().mode, Mode::OpusPaused);
    assert_eq!(alerts::list(&t.db, alerts::Status::All, 10).await.unwrap().len(), 1);
    // The change went through the one path for modes: announced once.
    let changed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = 'gateway.mode_changed'")
        .fetch_one(t.db.pool())
        .await
        .unwrap();
    assert_eq!(changed, 1);
    // And it reached the operators like every alert.
    assert_eq!(w.queued("alert:alr_cost_spike_").await.len(), 2);
}

#[tokio::test]
async fn the_report_mails_go_at_the_local_hour_once_a_day() {
    let t = TestDb::new().await;
    let mut c = catalogue();
    c.business.time_zone = "Europe/Berlin".into();
    let w = World::new(&t.db, c, None);
    // 2026-03-02 06:59 UTC is 07:59 in Berlin.
    w.clock.advance_micros(-3 * HOUR - 60_000_000);
    j1msky_ops::reports::schedule(&w.notifier.ops, w.now()).await.unwrap();
    j1msky_ops::reports::schedule(&w.notifier.ops, w.now()).await.unwrap();
    w.settle().await;
    assert!(w.queued("report:").await.is_empty());
    w.clock.advance_secs(60);
    w.settle().await;
    let mails = w.queued("report:morning:").await;
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert!(mails[0].1.contains("Morning review, 2026-03-02"), "{}", mails[0].1);
    assert!(mails[0].2.contains("Critical") && mails[0].2.contains("/admin/review/morning"), "{}", mails[0].2);
    w.clock.advance_secs(3 * 3600);
    w.settle().await;
    assert_eq!(w.queued("report:morning:").await.len(), 2, "once a day");
    // 18:00 Berlin = 17:00 UTC: the evening review; the next morning: one more morning.
    w.clock.advance_micros(T0 + 7 * HOUR - w.now());
    w.settle().await;
    let evening = w.queued("report:evening:").await;
    assert_eq!(evening.len(), 2);
    assert!(evening[0].1.contains("Evening review, 2026-03-02"), "{}", evening[0].1);
    w.clock.advance_micros(T0 + 21 * HOUR - w.now());
    w.settle().await;
    let mornings = w.queued("report:morning:").await;
    assert_eq!(mornings.len(), 4);
    assert!(mornings.iter().any(|m| m.1.contains("2026-03-03")));
}

/// The SLA sold with a plan (`sla.max_queue_wait_secs`, 5 min for the shipped Enterprise):
/// checked every minute, a task of such a plan queued longer than that raises one
/// `sla_breach` alert an hour, which reaches the operators, and heads the morning review;
/// a task of a plan without an SLA waiting as long raises nothing of the kind.
#[tokio::test]
async fn a_task_waiting_past_its_plan_s_sla_raises_an_alert_within_a_minute() {
    use j1msky_accounts::customers::{self, NewCustomer};
    let t = TestDb::new().await;
    let w = World::new(&t.db, catalogue(), None);
    let cat = Arc::new(catalogue());
    let customer = |name: &'static str, plan: &'static str| {
        let (db, cat, now) = (t.db.clone(), cat.clone(), w.now());
        async move {
            let new = NewCustomer {
                name: name.into(),
                stage: Some(j1msky_core::vocab::Stage::Active),
                plan: Some(plan.into()),
                ..NewCustomer::default()
            };
            customers::create(&db, &cat, &j1msky_audit::Actor::cli(), new, now).await.unwrap().id
        }
    };
    let big = customer("Big Co", "enterprise").await;
    let small = customer("Small", "pro").await;
    let submit = |id: String| {
        let (db, cat, now) = (t.db.clone(), cat.clone(), w.now());
        async move {
            let input = j1msky_tasks::NewTask { team: "code".into(), prompt: Some("x".into()), ..Default::default() };
            j1msky_tasks::submit(&db, &cat, &id, &input, None, now).await.unwrap()
        }
    };
    // The Pro task has waited ten minutes by the time the Enterprise one is queued.
    submit(small.clone()).await;
    w.clock.advance_micros(10 * 60_000_000);
    submit(big.clone()).await;
    j1msky_ops::timers::handlers(&w.notifier).schedule_recurring(&t.db, w.now()).await.unwrap();
    let sla_alerts = || async {
        alerts::list(&t.db, alerts::Status::All, 10)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == "sla_breach")
            .collect::<Vec<_>>()
    };
    for _ in 0..5 {
        w.clock.advance_micros(60_000_000);
        w.settle().await;
    }
    assert!(sla_alerts().await.is_empty(), "5 min is within the SLA; the Pro task has none");
    w.clock.advance_micros(60_000_000);
    w.settle().await;
    let raised = sla_alerts().await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert!(raised[0].message.starts_with("1 task(s) of Enterprise"), "{}", raised[0].message);
    assert!(raised[0].message.contains("the SLA's 5 min (the oldest 6 min; 1 queued)"), "{}", raised[0].message);
    assert_eq!(w.queued("alert:alr_sla_breach_").await.len(), 2, "to both operators");
    // Still waiting a minute later: the same alert, not another.
    w.clock.advance_micros(60_000_000);
    w.settle().await;
    assert_eq!(sla_alerts().await.len(), 1);
    // The morning review puts it first.
    let review = j1msky_insights::morning::review(&j1msky_insights::Ctx {
        db: t.db.clone(),
        catalogue: cat.clone().into(),
        clock: Arc::new(w.clock.clone()),
    })
    .await
    .unwrap();
    assert_eq!(review[0].title, "1 task(s) of Enterprise waiting past the SLA's 5 min", "{review:#?}");
    assert!(review[0].detail.starts_with("the oldest has waited 7 min"), "{:?}", review[0]);
    // Once it runs (cancelled here), the lane is clear.
    let queued: Vec<String> = sqlx::query_scalar("SELECT id FROM tasks WHERE customer_id = $1")
        .bind(&big)
        .fetch_all(t.db.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET state = 'running' WHERE id = $1")
        .bind(&queued[0])
        .execute(t.db.pool())
        .await
        .unwrap();
    assert!(j1msky_tasks::sla_lanes(&t.db, &cat, w.now()).await.unwrap().is_empty());
}

/// A webhook that cannot be reached: the failure is visible, but not the URL (a chat
/// webhook's path is its secret; the error is stored, logged and shown on a page).
#[tokio::test]
async fn an_unreachable_webhook_s_failure_does_not_show_its_secret_url() {
    let t = TestDb::new().await;
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let w = World::new(&t.db, catalogue(), Some(format!("http://127.0.0.1:{port}/hooks/T0SECRETPATH")));
    w.raise("alr_down", "circuit_open", "provider sim keeps failing").await;
    w.settle().await;
    let d = notify::deliveries(&t.db, &["alr_down".to_string()]).await.unwrap();
    let error = d.iter().find(|d| d.channel == "webhook").unwrap().last_error.clone().unwrap_or_default();
    assert!(error.starts_with("webhook request failed"), "{error}");
    assert!(!error.contains("T0SECRETPATH"), "{error}");
}
