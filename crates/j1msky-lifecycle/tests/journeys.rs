// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The onboarding journeys, day 0 → 30, on a hand-driven clock: which messages are
//! queued when (in the customer's zone, across a DST change), the to-dos, the branches,
//! the global exits, a journey edited while enrolled, catch-up after downtime and the
//! wait_until race.

use std::sync::Arc;

use j1msky_core::catalogue::lifecycle::Step;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::events::Kind;
use j1msky_db::consumers::{self, Runner};
use j1msky_db::testing::TestDb;
use j1msky_db::{timers, Db};
use j1msky_lifecycle::journeys::{self, attributes};
use j1msky_lifecycle::{transport::Recording, Ctx};
use sqlx::Row;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

/// 2026-03-02 12:00 UTC, a Monday; New York moves to summer time on 2026-03-08.
fn t0() -> i64 {
    chrono::DateTime::parse_from_rfc3339("2026-03-02T12:00:00Z").unwrap().timestamp_micros()
}

fn utc(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
}

struct World {
    db: Db,
    ctx: Ctx,
    clock: ManualClock,
}

fn world_with(db: &Db, catalogue: Catalogue, clock: &ManualClock) -> World {
    let ctx = Ctx {
        db: db.clone(),
        catalogue: Arc::new(catalogue).into(),
        clock: Arc::new(clock.clone()),
        transport: Arc::new(Recording::default()),
        stripe: None,
        base_url: "https://app.example.com".into(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    };
    World { db: db.clone(), ctx, clock: clock.clone() }
}

fn world(db: &Db) -> World {
    world_with(db, Catalogue::from_json_str(SHIPPED).unwrap(), &ManualClock::new(t0()))
}

impl World {
    fn now(&self) -> i64 {
        j1msky_core::Clock::now_micros(&self.clock)
    }

    /// Moves the clock to `at` and runs consumers and timers until nothing moves.
    async fn run_to(&self, at: i64) {
        let now = self.now();
        assert!(at >= now, "time runs forward");
        self.clock.advance_micros(at - now);
        let runner = Runner::new("test");
        let cons = j1msky_lifecycle::consumers(&self.ctx);
        let handlers = j1msky_lifecycle::timer_handlers(&self.ctx);
        for _ in 0..50 {
            let moved = consumers::run_once(&self.db, &runner, &cons, &self.clock).await.unwrap().moved();
            let fired = timers::run_due_once(&self.db, &handlers, at).await.unwrap();
            if !moved && fired == 0 {
                return;
            }
        }
        panic!("consumers and timers never settled");
    }

    /// Advances by `d` and settles.
    async fn run_for(&self, d: i64) {
        self.run_to(self.now() + d).await;
    }

    async fn customer(&self, name: &str, tz: &str, plan: Option<&str>) -> String {
        let input = j1msky_accounts::customers::NewCustomer {
            name: name.into(),
            contact_email: Some(format!("{}@example.com", name.to_lowercase())),
            time_zone: Some(tz.into()),
            ..Default::default()
        };
        let c = j1msky_accounts::customers::create(
            &self.db,
            &self.ctx.catalogue,
            &j1msky_audit::Actor::cli(),
            input,
            self.now(),
        )
        .await
        .unwrap();
        if let Some(plan) = plan {
            sqlx::query("UPDATE customers SET plan = $1 WHERE id = $2")
                .bind(plan)
                .bind(&c.id)
                .execute(self.db.pool())
                .await
                .unwrap();
        }
        c.id
    }

    async fn emit(&self, cus: &str, kind: Kind) {
        let mut tx = self.db.begin().await.unwrap();
        j1msky_db::testing::emit_raw(&mut tx, self.db.backend(), kind, Some(cus), &serde_json::json!({}), self.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// A task in `state` (queued now), and its event.
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
        self.emit(cus, kind).await;
    }

    /// (template, created_at) of the customer's queued messages, oldest first.
    async fn messages(&self, cus: &str) -> Vec<(String, i64)> {
        sqlx::query(
            "SELECT template, created_at FROM lifecycle_messages WHERE customer_id = $1 ORDER BY created_at, template",
        )
        .bind(cus)
        .fetch_all(self.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    async fn templates(&self, cus: &str) -> Vec<String> {
        self.messages(cus).await.into_iter().map(|(t, _)| t).collect()
    }

    async fn todos(&self, cus: &str) -> Vec<String> {
        sqlx::query("SELECT reason FROM lifecycle_todos WHERE customer_id = $1 ORDER BY created_at")
            .bind(cus)
            .fetch_all(self.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn enrollment(&self, cus: &str, journey: &str) -> journeys::Enrollment {
        journeys::of_customer(&self.db, cus).await.unwrap().into_iter().find(|e| e.journey == journey).unwrap()
    }
}

#[tokio::test]
async fn an_active_pro_customer_in_new_york_goes_from_day_0_to_day_30() {
    let t = TestDb::new().await;
    // The operator has a community (the invite needs its link); no referral programme.
    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    catalogue.lifecycle.delivery.links.community = Some("https://chat.example.org/j1msky".into());
    let w = world_with(&t.db, catalogue, &ManualClock::new(t0()));
    let cus = w.customer("Active", "America/New_York", Some("pro")).await;
    w.run_for(0).await;
    // Day 0: the welcome, at once, with the links and the checklist.
    assert_eq!(w.messages(&cus).await, vec![("welcome".to_string(), t0())]);
    let (subject, text, html): (String, String, String) =
        sqlx::query_as("SELECT subject, body_text, body_html FROM lifecycle_messages WHERE customer_id = $1")
            .bind(&cus)
            .fetch_one(w.db.pool())
            .await
            .unwrap();
    assert!(subject.contains("Active"), "{subject}");
    for link in ["https://app.example.com/login", "https://app.example.com/app/tasks"] {
        assert!(text.contains(link), "{link} missing");
        assert!(html.contains(&link.replace('/', "&#x2f;")), "{link} missing in {html}");
    }
    // No link to a page the server does not have; without a booking link, a reply does.
    assert!(!text.contains("/help/") && !text.contains("/community"), "{text}");
    assert!(text.contains("Reply to this mail and we will set up a call."), "{text}");
    assert!(text.contains("Quick start"));

    // A task is submitted before day 1: not stalled, so tips (not help) at 10:00 New York
    // time on day 1 (EST, UTC-5).
    w.run_for(2 * HOUR).await;
    w.task(&cus, "research", "submitted").await;
    w.run_to(utc("2026-03-03T14:59:00Z")).await;
    assert_eq!(w.templates(&cus).await, vec!["welcome"]);
    w.run_to(utc("2026-03-03T15:00:00Z")).await;
    assert_eq!(w.messages(&cus).await.last().unwrap(), &("activation_tips".to_string(), utc("2026-03-03T15:00:00Z")));
    assert!(w.todos(&cus).await.is_empty(), "an active customer is not a stalled one");

    // Day 2: the first success is celebrated; two more reach the goal (activated).
    w.run_to(utc("2026-03-04T09:00:00Z")).await;
    w.task(&cus, "research", "succeeded").await;
    w.run_for(0).await;
    assert_eq!(w.templates(&cus).await.last().unwrap(), "first_task_celebration");
    w.task(&cus, "content", "succeeded").await;
    w.task(&cus, "research", "succeeded").await;
    w.run_for(0).await;
    let e = w.enrollment(&cus, "activation").await;
    assert_eq!((e.state.as_str(), e.end_reason.as_deref()), ("completed", Some("exit step done")));
    let mut conn = w.db.pool().acquire().await.unwrap();
    assert_eq!(attributes::get(&mut conn, &cus, "activated").await.unwrap().as_deref(), Some("yes"));

    // A limit hit and an NPS of 9 before day 7; day 7 is after the DST change: 10:00 EDT = 14:00 UTC.
    w.emit(&cus, Kind::PlanLimitHit).await;
    // The activated customer was sent an NPS survey; they answer 9 through its one-time
    // link (the condition's one source), taken from the mail as they would click it.
    drop(conn);
    assert_eq!(w.templates(&cus).await.last().unwrap(), "nps");
    let body: String =
        sqlx::query_scalar("SELECT body_text FROM lifecycle_messages WHERE customer_id = $1 AND template = 'nps'")
            .bind(&cus)
            .fetch_one(w.db.pool())
            .await
            .unwrap();
    let token = body.split("/s/").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let answer =
        j1msky_lifecycle::surveys::Answer { score: Some("9"), comment: "", testimonial: "", consent_to_publish: false };
    j1msky_lifecycle::surveys::answer(&w.db, 30, &token, &answer, w.now()).await.unwrap();
    w.run_to(utc("2026-03-09T13:59:00Z")).await;
    assert!(!w.templates(&cus).await.contains(&"week_in_review".to_string()));
    w.run_to(utc("2026-03-09T14:00:00Z")).await;
    let day7: Vec<_> =
        w.messages(&cus).await.into_iter().filter(|(_, at)| *at == utc("2026-03-09T14:00:00Z")).collect();
    let day7: Vec<_> = day7.into_iter().map(|(t, _)| t).collect();
    assert_eq!(day7, vec!["checkin_upgrade", "testimonial", "week_in_review"]);
    let review: String = sqlx::query_scalar(
        "SELECT body_text FROM lifecycle_messages WHERE customer_id = $1 AND template = 'week_in_review'",
    )
    .bind(&cus)
    .fetch_one(w.db.pool())
    .await
    .unwrap();
    assert!(review.contains("ran 4 task(s): 3 succeeded, 0 failed"), "{review}");
    assert!(review.contains("$6.00") && review.contains("research: 3 task(s)"), "{review}");
    // And staff are asked to call: the plan's day-7 check-in call.
    let todos = w.todos(&cus).await;
    assert_eq!(todos.len(), 1, "{todos:?}");
    assert!(todos[0].starts_with("Day 7 check-in call"), "{todos:?}");

    // Day 14: recommendations, and the community invite (Pro, and a community is set:
    // without one the step is skipped).
    w.run_to(utc("2026-03-16T14:00:00Z")).await;
    let day14: Vec<_> = w
        .messages(&cus)
        .await
        .into_iter()
        .filter(|(_, at)| *at == utc("2026-03-16T14:00:00Z"))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(day14, vec!["community_invite", "optimisation_tips"]);

    // Day 30: the monthly report (no referral sentence: the catalogue sets no link).
    w.run_to(utc("2026-04-01T13:59:00Z")).await;
    assert!(!w.templates(&cus).await.contains(&"monthly_report".to_string()));
    w.run_to(utc("2026-04-01T14:00:00Z")).await;
    assert_eq!(w.messages(&cus).await.last().unwrap(), &("monthly_report".to_string(), utc("2026-04-01T14:00:00Z")));
    let report: String = sqlx::query_scalar(
        "SELECT body_text FROM lifecycle_messages WHERE customer_id = $1 AND template = 'monthly_report'",
    )
    .bind(&cus)
    .fetch_one(w.db.pool())
    .await
    .unwrap();
    assert!(!report.contains("referral") && report.contains("3 succeeded"), "{report}");

    // Every journey ran to its end; nothing was queued twice.
    for e in journeys::of_customer(&w.db, &cus).await.unwrap() {
        assert_eq!(e.state, "completed", "{e:?}");
    }
    // The limit hit also fired the retention trigger's upgrade prompt (its own journey).
    let all = w.templates(&cus).await;
    assert_eq!(
        all,
        vec![
            "welcome",
            "activation_tips",
            "first_task_celebration",
            "nps",
            "upgrade_prompt",
            "checkin_upgrade",
            "testimonial",
            "week_in_review",
            "community_invite",
            "optimisation_tips",
            "monthly_report"
        ]
    );
}

#[tokio::test]
async fn a_stalled_customer_gets_help_and_a_staff_todo_and_no_extras() {
    let t = TestDb::new().await;
    let w = world(&t.db);
    let cus = w.customer("Stalled", "UTC", None).await;
    w.run_for(0).await;
    // Day 1, 10:00 UTC: no task yet → help mail, a staff to-do, then the tips.
    w.run_to(utc("2026-03-03T10:00:00Z")).await;
    assert_eq!(w.templates(&cus).await, vec!["welcome", "activation_help", "activation_tips"]);
    let todos = w.todos(&cus).await;
    assert_eq!(todos.len(), 1);
    assert!(todos[0].contains("No task a day after sign-up"), "{todos:?}");
    // Nothing happens; both waits time out and activation ends without celebration.
    w.run_to(utc("2026-03-08T00:00:00Z")).await;
    let e = w.enrollment(&cus, "activation").await;
    assert_eq!(e.state, "completed");
    let steps: Vec<_> =
        journeys::history(&w.db, &e.id).await.unwrap().into_iter().map(|s| (s.step, s.outcome)).collect();
    assert!(steps.contains(&("first_success".into(), "timed_out".into())), "{steps:?}");
    assert!(steps.contains(&("goal".into(), "timed_out".into())), "{steps:?}");
    // Day 7 without a limit hit or NPS, day 14 without Pro: only the review and the tips.
    w.run_to(utc("2026-03-09T12:00:00Z")).await;
    w.run_to(utc("2026-03-17T00:00:00Z")).await;
    assert_eq!(
        w.templates(&cus).await,
        vec!["welcome", "activation_help", "activation_tips", "week_in_review", "optimisation_tips"]
    );
    let todos = w.todos(&cus).await;
    assert_eq!(todos.len(), 2, "the stalled to-do once, then day 7's check-in call: {todos:?}");
    assert!(
        todos[0].contains("No task a day after sign-up") && todos[1].starts_with("Day 7 check-in call"),
        "{todos:?}"
    );
}

#[tokio::test]
async fn cancel_and_pause_end_activation() {
    let t = TestDb::new().await;
    let w = world(&t.db);
    let cancelled = w.customer("Gone", "UTC", None).await;
    let paused = w.customer("Resting", "UTC", None).await;
    w.run_for(HOUR).await;
    w.emit(&cancelled, Kind::SubscriptionCancelled).await;
    w.emit(&paused, Kind::SubscriptionPaused).await;
    w.run_for(0).await;
    let e = w.enrollment(&cancelled, "activation").await;
    assert_eq!((e.state.as_str(), e.end_reason.as_deref()), ("exited", Some("subscription.cancelled")));
    assert_eq!(w.enrollment(&cancelled, "checkin").await.state, "exited");
    assert_eq!(w.enrollment(&paused, "activation").await.state, "exited");
    assert_eq!(w.enrollment(&paused, "checkin").await.state, "active", "pause ends activation only");
    w.run_to(utc("2026-03-10T00:00:00Z")).await;
    assert_eq!(w.templates(&cancelled).await, vec!["welcome"]);
    assert_eq!(w.templates(&paused).await, vec!["welcome", "week_in_review"]);
    assert!(w.todos(&cancelled).await.is_empty(), "a cancelled customer gets no call");
    let paused_todos = w.todos(&paused).await;
    assert_eq!(paused_todos.len(), 1, "a paused customer still gets day 7's call: {paused_todos:?}");
    assert!(paused_todos[0].starts_with("Day 7 check-in call"), "{paused_todos:?}");
}

#[tokio::test]
async fn an_edited_journey_leaves_running_enrollments_on_their_version() {
    let t = TestDb::new().await;
    let clock = ManualClock::new(t0());
    let old = world_with(&t.db, Catalogue::from_json_str(SHIPPED).unwrap(), &clock);
    let cus = old.customer("Pinned", "UTC", None).await;
    old.run_for(0).await;
    // The operator edits activation: version 2 waits 3 days and sends another template.
    let mut edited = Catalogue::from_json_str(SHIPPED).unwrap();
    let j = edited.lifecycle.journeys.get_mut("activation").unwrap();
    j.version = 2;
    j.steps[0] = Step::Wait { id: "first_day".into(), days: 3, hours: 0, until_local_time: None, grace_percent: None };
    j.steps[4] =
        Step::Send { id: "tips".into(), template: "welcome".into(), stale_after_hours: None, needs_link: None };
    let new = world_with(&t.db, edited, &clock);
    let later = new.customer("Later", "UTC", None).await;
    new.task(&cus, "research", "submitted").await;
    new.run_to(utc("2026-03-03T10:00:00Z")).await;
    // The first customer keeps version 1: tips on day 1 at 10:00.
    assert_eq!(new.enrollment(&cus, "activation").await.version, 1);
    assert_eq!(new.templates(&cus).await, vec!["welcome", "activation_tips"]);
    // The one enrolled after the edit follows version 2.
    assert_eq!(new.enrollment(&later, "activation").await.version, 2);
    assert_eq!(new.templates(&later).await, vec!["welcome"]);
    new.run_to(t0() + 3 * DAY).await;
    assert_eq!(new.templates(&later).await, vec!["welcome", "activation_help", "welcome"]);
}

#[tokio::test]
async fn after_downtime_stale_sends_are_skipped_and_nothing_is_doubled() {
    let t = TestDb::new().await;
    let w = world(&t.db);
    let cus = w.customer("Sleepy", "UTC", None).await;
    w.run_for(0).await;
    // Down from day 0 to day 10: activation's day-1 mails (24 h) and day 7's review
    // (48 h) are too late; the to-dos (the stalled one, day 7's call) are still opened.
    w.run_to(utc("2026-03-12T12:00:00Z")).await;
    w.run_for(HOUR).await;
    assert_eq!(w.templates(&cus).await, vec!["welcome"]);
    assert_eq!(w.todos(&cus).await.len(), 2);
    let e = w.enrollment(&cus, "activation").await;
    let skipped: Vec<_> = journeys::history(&w.db, &e.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.outcome == "skipped_stale")
        .map(|s| s.step)
        .collect();
    assert_eq!(skipped, vec!["stalled_help", "tips"]);
    let c = w.enrollment(&cus, "checkin").await;
    assert!(journeys::history(&w.db, &c.id)
        .await
        .unwrap()
        .iter()
        .any(|s| s.step == "review" && s.outcome == "skipped_stale"));
    // Day 14's tips are on time again, once.
    w.run_to(utc("2026-03-16T10:00:00Z")).await;
    w.run_for(DAY).await;
    assert_eq!(w.templates(&cus).await, vec!["welcome", "optimisation_tips"]);
}

#[tokio::test]
async fn the_event_and_the_timeout_of_a_wait_until_take_one_branch_only() {
    let t = TestDb::new().await;
    let w = world(&t.db);
    let cus = w.customer("Racer", "UTC", None).await;
    w.task(&cus, "research", "submitted").await;
    w.run_to(utc("2026-03-03T10:00:00Z")).await;
    // Parked on first_success until 2026-03-05 10:00. At the timeout the success event
    // arrives too; consumer and timer run at the same moment.
    w.clock.advance_micros(utc("2026-03-05T10:00:00Z") - w.now());
    w.task(&cus, "research", "succeeded").await;
    let cons = j1msky_lifecycle::consumers(&w.ctx);
    let handlers = j1msky_lifecycle::timer_handlers(&w.ctx);
    let (r1, r2) = (Runner::new("a"), w.now());
    let (a, b) =
        tokio::join!(consumers::run_once(&w.db, &r1, &cons, &w.clock), timers::run_due_once(&w.db, &handlers, r2));
    a.unwrap();
    b.unwrap();
    w.run_for(0).await;
    let e = w.enrollment(&cus, "activation").await;
    let h = journeys::history(&w.db, &e.id).await.unwrap();
    let outcomes: Vec<_> = h.iter().filter(|s| s.step == "first_success").map(|s| s.outcome.clone()).collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let celebrated = w.templates(&cus).await.contains(&"first_task_celebration".to_string());
    assert_eq!(celebrated, outcomes[0] == "happened", "{outcomes:?}");
    let waits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lifecycle_waits WHERE enrollment_id = $1")
        .bind(&e.id)
        .fetch_one(w.db.pool())
        .await
        .unwrap();
    // Either branch leads to the goal wait (one row) — never two parked waits.
    assert!(waits <= 1);
}

#[tokio::test]
async fn a_triggered_journey_sets_attributes_branches_on_them_and_turns_an_offer_into_a_todo_without_stripe() {
    use j1msky_core::catalogue::lifecycle::{Entry, Journey, ReEntry};
    let t = TestDb::new().await;
    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    catalogue.lifecycle.journeys.insert(
        "probe".into(),
        Journey {
            version: 1,
            description: String::new(),
            category: "retention".into(),
            entry: Entry { on: "trigger:probe".into(), re_entry: ReEntry::Never },
            exit_on: vec!["activity".into()],
            steps: vec![
                Step::SetAttribute { id: "mark".into(), name: "tier".into(), value: "gold".into() },
                Step::Branch {
                    id: "gold".into(),
                    condition: "attribute:tier=gold".into(),
                    then: "offer".into(),
                    otherwise: "done".into(),
                },
                Step::Offer { id: "offer".into(), offer: "we_miss_you".into(), on_refused: None },
                Step::Wait { id: "pause".into(), days: 1, hours: 0, until_local_time: None, grace_percent: None },
                Step::Send { id: "late".into(), template: "welcome".into(), stale_after_hours: None, needs_link: None },
                Step::Exit { id: "done".into() },
            ],
        },
    );
    let w = world_with(&t.db, catalogue, &ManualClock::new(t0()));
    let cus = w.customer("Gold", "UTC", None).await;
    let mut tx = w.db.begin().await.unwrap();
    let id = journeys::enroll(&mut tx, w.db.backend(), &w.ctx, &cus, "probe", "trigger:probe:1", w.now())
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let todos = w.todos(&cus).await;
    assert_eq!(todos.len(), 1);
    assert!(todos[0].contains("we_miss_you") && todos[0].contains("no Stripe client"), "{todos:?}");
    let h: Vec<_> = journeys::history(&w.db, &id).await.unwrap().into_iter().map(|s| (s.step, s.outcome)).collect();
    assert_eq!(
        h[..3],
        [("mark".into(), "set".into()), ("gold".into(), "then".into()), ("offer".into(), "offer_todo".into())]
    );
    // Activity (a login) ends it before the wait is over: nothing is sent.
    w.run_for(HOUR).await;
    w.emit(&cus, Kind::UserLoggedIn).await;
    w.run_for(2 * DAY).await;
    let e = w.enrollment(&cus, "probe").await;
    assert_eq!((e.state.as_str(), e.end_reason.as_deref()), ("exited", Some("user.logged_in")));
    assert!(!journeys::history(&w.db, &id).await.unwrap().iter().any(|s| s.step == "late"));
}

#[tokio::test]
async fn nps_at_least_reads_the_latest_answered_nps_survey_and_nothing_else() {
    use j1msky_lifecycle::journeys::conditions::holds;
    use j1msky_lifecycle::surveys::{self, Answer, SurveyKind};
    let t = TestDb::new().await;
    let w = world(&t.db);
    let cus = w.customer("Scored", "UTC", None).await;
    let mut conn = w.db.pool().acquire().await.unwrap();
    // No survey answered: the condition does not hold, and an attribute named `nps` is
    // not a score.
    assert!(!holds(&mut conn, "nps_at_least:9", &cus, 0).await.unwrap());
    attributes::set(&mut conn, &cus, "nps", "10", w.now()).await.unwrap();
    assert!(!holds(&mut conn, "nps_at_least:9", &cus, 0).await.unwrap());
    let mut answer_with = async |score: &str, at: i64| {
        let link = surveys::create(&mut conn, &cus, SurveyKind::Nps, at).await.unwrap();
        let a = Answer { score: Some(score), comment: "", testimonial: "", consent_to_publish: false };
        surveys::answer(&w.db, 30, &link.token, &a, at).await.unwrap();
    };
    answer_with("8", w.now()).await;
    answer_with("9", w.now() + HOUR).await;
    assert!(holds(&mut conn, "nps_at_least:9", &cus, 0).await.unwrap());
    assert!(!holds(&mut conn, "nps_at_least:10", &cus, 0).await.unwrap());
}

/// Dunning spreads its three mails over the catalogue's grace period: the reminder at
/// 40 % and the final notice at 85 %, each at 10:00 in the customer's zone, all before
/// access is restricted at the grace period's end.
#[tokio::test]
async fn dunning_follows_the_catalogues_grace_period() {
    // (grace days, reminder due, final due): Berlin is UTC+1 in March before the 29th.
    let cases = [
        // 7 days: 40 % = Thu 07:12 UTC → Thu 10:00 Berlin; 85 % = Sun 10:48 UTC → Mon 10:00 Berlin.
        (7, "2026-03-05T09:00:00Z", "2026-03-09T09:00:00Z"),
        // 3 days: 40 % = Tue 16:48 UTC → Wed 10:00 Berlin; 85 % = Thu 01:12 UTC → Thu 10:00 Berlin.
        (3, "2026-03-04T09:00:00Z", "2026-03-05T09:00:00Z"),
    ];
    for (grace, reminder, last) in cases {
        let t = TestDb::new().await;
        let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
        catalogue.stripe.past_due_grace_days = grace;
        let w = world_with(&t.db, catalogue, &ManualClock::new(t0()));
        let cus = w.customer("Late", "Europe/Berlin", Some("pro")).await;
        let mut tx = w.db.begin().await.unwrap();
        journeys::enroll(&mut tx, w.db.backend(), &w.ctx, &cus, "dunning", "trigger:payment_failed:in_1", w.now())
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        w.run_for(0).await;
        let dunning = |all: Vec<String>| all.into_iter().filter(|t| t.starts_with("dunning")).collect::<Vec<_>>();
        assert_eq!(dunning(w.templates(&cus).await), vec!["dunning_first"], "grace {grace}");
        w.run_to(utc(reminder) - 60_000_000).await;
        assert_eq!(dunning(w.templates(&cus).await).len(), 1, "grace {grace}: not before {reminder}");
        w.run_to(utc(reminder)).await;
        assert_eq!(dunning(w.templates(&cus).await), vec!["dunning_first", "dunning_reminder"], "grace {grace}");
        w.run_to(utc(last) - 60_000_000).await;
        assert_eq!(dunning(w.templates(&cus).await).len(), 2, "grace {grace}: not before {last}");
        w.run_to(utc(last)).await;
        assert_eq!(
            dunning(w.templates(&cus).await),
            vec!["dunning_first", "dunning_reminder", "dunning_final"],
            "grace {grace}"
        );
        assert!(utc(last) < t0() + i64::from(grace) * DAY, "the final notice comes before access is restricted");
    }
}

/// An offer billing refuses (here: granted before, within its rule) is never announced:
/// the we-miss-you and at-risk journeys end at the offer step, logged `offer_refused`
/// with billing's reason; with `on_refused` the journey goes there instead.
#[tokio::test]
async fn a_refused_offer_is_not_announced_and_the_journey_takes_its_refusal_branch() {
    let t = TestDb::new().await;
    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    let mut probe = catalogue.lifecycle.journeys["we_miss_you"].clone();
    probe.entry.on = "trigger:probe".into();
    probe.steps = vec![
        Step::Offer { id: "grant".into(), offer: "we_miss_you".into(), on_refused: Some("instead".into()) },
        Step::Send { id: "tell".into(), template: "we_miss_you".into(), stale_after_hours: None, needs_link: None },
        Step::Exit { id: "done".into() },
        Step::Todo { id: "instead".into(), reason: "Call them: the offer was refused".into(), due_days: 1 },
    ];
    catalogue.lifecycle.journeys.insert("probe".into(), probe);
    let w = world_with(&t.db, catalogue, &ManualClock::new(t0()));
    let fresh = w.customer("Fresh", "UTC", Some("pro")).await;
    let had = w.customer("Had", "UTC", Some("pro")).await;
    sqlx::query(
        "INSERT INTO offer_grants (id, customer_id, offer, granted_by, created_at) VALUES ('ofg_old', $1, 'we_miss_you', 'operator', $2)",
    )
    .bind(&had)
    .bind(t0() - DAY)
    .execute(w.db.pool())
    .await
    .unwrap();
    let enroll = |cus: String, journey: &'static str| {
        let w = &w;
        async move {
            let mut tx = w.db.begin().await.unwrap();
            let id = journeys::enroll(&mut tx, w.db.backend(), &w.ctx, &cus, journey, "trigger:x:1", w.now())
                .await
                .unwrap()
                .unwrap();
            tx.commit().await.unwrap();
            id
        }
    };
    let outcome = |id: String| {
        let w = &w;
        async move {
            journeys::history(&w.db, &id)
                .await
                .unwrap()
                .into_iter()
                .map(|s| (s.step, s.outcome, s.detail.unwrap_or_default()))
                .collect::<Vec<_>>()
        }
    };

    // Not granted before: the offer is handed on (a to-do without Stripe) and announced.
    let ok = enroll(fresh.clone(), "we_miss_you").await;
    assert!(w.templates(&fresh).await.contains(&"we_miss_you".to_string()));
    assert_eq!(outcome(ok).await[0].1, "offer_todo");

    for journey in ["we_miss_you", "at_risk_offer"] {
        let id = enroll(had.clone(), journey).await;
        w.run_for(HOUR).await;
        assert!(
            !w.templates(&had).await.contains(&"we_miss_you".to_string()),
            "{journey}: the refused offer is not announced"
        );
        assert!(
            !w.todos(&had).await.iter().any(|t| t.contains("Grant offer")),
            "{journey}: nobody is asked to grant it by hand"
        );
        let log = outcome(id).await;
        assert_eq!(log.len(), 1, "{journey}: {log:?}");
        assert_eq!((log[0].0.as_str(), log[0].1.as_str()), ("grant", "offer_refused"));
        assert!(log[0].2.contains("already granted (by operator)"), "{log:?}");
        let e = w.enrollment(&had, journey).await;
        assert_eq!((e.state.as_str(), e.end_reason.as_deref()), ("exited", Some("offer refused")));
    }

    // With `on_refused`, the journey goes there (and still sends nothing about the offer).
    let id = enroll(had.clone(), "probe").await;
    let steps: Vec<_> = outcome(id).await.into_iter().map(|(s, o, _)| (s, o)).collect();
    assert_eq!(steps, vec![("grant".into(), "offer_refused".into()), ("instead".into(), "todo".into())]);
    assert!(w.todos(&had).await.contains(&"Call them: the offer was refused".to_string()));
    assert!(!w.templates(&had).await.contains(&"we_miss_you".to_string()));
}
