// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The customer numbers on a real database (SQLite, or PostgreSQL with
//! `J1MSKY_TEST_BACKEND=postgres`): customers, stage changes, tasks and NPS answers made
//! through the owning crates' functions (tasks as the worker writes them), the rollups
//! kept by the `insights.people` consumer, then rebuilt from the source tables, and
//! every number checked against the hand computation written next to it.

use std::sync::Arc;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::events::TaskSucceeded;
use j1msky_core::vocab::Stage;
use j1msky_db::consumers::{self, Runner};
use j1msky_db::outbox;
use j1msky_db::testing::TestDb;
use j1msky_insights::kpis::{self, Customers, Filter, FunnelStage, Mrr, Nps, Usage};
use j1msky_insights::{people, rollups, Ctx, Month};
use j1msky_lifecycle::surveys::{self, Answer, SurveyKind};
use sqlx::Row;

const H: i64 = 3_600_000_000;
const D: i64 = 24 * H;
/// The month under test (business zone Europe/Berlin).
const M: Month = Month { year: 2026, month: 3 };

struct Fixture {
    ctx: Ctx,
    clock: ManualClock,
    _db: TestDb,
}

async fn fixture() -> Fixture {
    let t = TestDb::new().await;
    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    catalogue.business.time_zone = "Europe/Berlin".into();
    let (start, _) = M.bounds("Europe/Berlin".parse().unwrap());
    // "Now" is the 20th of the month under test.
    let clock = ManualClock::new(start + 19 * D);
    let ctx = Ctx { db: t.db.clone(), catalogue: Arc::new(catalogue).into(), clock: Arc::new(clock.clone()) };
    Fixture { ctx, clock, _db: t }
}

impl Fixture {
    fn start(&self) -> i64 {
        M.bounds(self.ctx.tz()).0
    }

    async fn customer(&self, name: &str, plan: &str, stage: Stage, at: i64) -> String {
        let input =
            NewCustomer { name: name.into(), plan: Some(plan.into()), stage: Some(stage), ..Default::default() };
        customers::create(&self.ctx.db, &self.ctx.catalogue, &Actor::cli(), input, at).await.unwrap().id
    }

    async fn stage(&self, id: &str, to: Stage, at: i64) {
        customers::set_stage(&self.ctx.db, &Actor::cli(), id, to, at).await.unwrap();
    }

    /// A task that succeeded at `at`, written as the worker writes it: the row and its
    /// `task.succeeded` event in one transaction.
    async fn task_succeeded(&self, customer: &str, at: i64) {
        let id = j1msky_core::ids::new_id("tsk");
        let mut tx = self.ctx.db.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO tasks (id, customer_id, team, category, title, prompt, priority, state, not_before, queued_at,
                started_at, finished_at) VALUES ($1, $2, 'code', 'code', 't', 'p', 0, 'succeeded', $3, $3, $3, $4)",
        )
        .bind(&id)
        .bind(customer)
        .bind(at - H)
        .bind(at)
        .execute(&mut *tx)
        .await
        .unwrap();
        let event = TaskSucceeded {
            task_id: id,
            team: "code".into(),
            steps: 1,
            cost_micros: 0,
            tier: None,
            charge_micros: None,
        };
        outbox::emit_typed(&mut tx, self.ctx.db.backend(), event, Some(customer), at).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn nps(&self, customer: &str, score: u8, at: i64) {
        let mut conn = self.ctx.db.pool().acquire().await.unwrap();
        let link = surveys::create(&mut conn, customer, SurveyKind::Nps, at - D).await.unwrap();
        drop(conn);
        let s = score.to_string();
        let answer = Answer { score: Some(&s), ..Answer::default() };
        surveys::answer(&self.ctx.db, 30, &link.token, &answer, at).await.unwrap();
    }

    async fn catch_up(&self) {
        let runner = Runner::new("test");
        let all = rollups::consumers(&self.ctx);
        loop {
            let p = consumers::run_once(&self.ctx.db, &runner, &all, &self.clock).await.unwrap();
            assert_eq!(p.failed, 0, "a rollup handler failed");
            if p.handled + p.passed == 0 {
                return;
            }
        }
    }

    async fn customers(&self, filter: &Filter) -> Customers {
        kpis::for_month(&self.ctx, M, filter).await.unwrap().customers
    }
}

fn stage(name: &str, entered: i64, conversion_bp: Option<i64>, median: Option<i64>) -> FunnelStage {
    FunnelStage { stage: name.into(), entered, conversion_bp, median_hours_from_previous: median }
}

/// The story of March 2026 (S = March 1st 00:00 in Berlin):
/// - A (pro): lead at S+1d, qualified +10h, trial +30h, active +100h; first task
///   succeeds 2 days after creation: activated.
/// - B (pro): lead at S+2d, straight to trial at +20h (skips qualified); first task on
///   day 8 (7 days and 1 hour after creation): not activated.
/// - C (pro): lead at S+3d, qualified +4h; no task.
/// - D (enterprise): created active at S+4d (signed up by checkout: every stage at once);
///   first task 6 days 23 hours after creation: activated.
/// - E (pro): lead on February 19th (S−10d), qualified at S+5d; no task.
async fn story(f: &Fixture) -> [String; 5] {
    let s = f.start();
    let a = f.customer("A", "pro", Stage::Lead, s + D).await;
    f.stage(&a, Stage::Qualified, s + D + 10 * H).await;
    f.stage(&a, Stage::Trial, s + D + 30 * H).await;
    f.stage(&a, Stage::Active, s + D + 100 * H).await;
    f.task_succeeded(&a, s + 3 * D).await;
    let b = f.customer("B", "pro", Stage::Lead, s + 2 * D).await;
    f.stage(&b, Stage::Trial, s + 2 * D + 20 * H).await;
    f.task_succeeded(&b, s + 2 * D + 7 * D + H).await;
    let c = f.customer("C", "pro", Stage::Lead, s + 3 * D).await;
    f.stage(&c, Stage::Qualified, s + 3 * D + 4 * H).await;
    let d = f.customer("D", "enterprise", Stage::Active, s + 4 * D).await;
    f.task_succeeded(&d, s + 4 * D + 7 * D - H).await;
    f.task_succeeded(&d, s + 4 * D + 8 * D).await;
    let e = f.customer("E", "pro", Stage::Lead, s - 10 * D).await;
    f.stage(&e, Stage::Qualified, s + 5 * D).await;
    // NPS in March: 10, 9, 9 promoters; 8 passive; 6, 0 detractors. One answer in
    // February (0) that March does not count.
    for (who, score, day) in [(&a, 10, 6), (&b, 9, 7), (&c, 9, 8), (&e, 8, 9), (&c, 6, 10), (&d, 0, 11)] {
        f.nps(who, score, s + day * D).await;
    }
    f.nps(&e, 0, s - 2 * D).await;
    [a, b, c, d, e]
}

fn expected_funnel() -> Vec<FunnelStage> {
    vec![
        // Reached lead in March: A, B, C, D (E was a lead in February).
        stage("lead", 4, None, None),
        // Reached qualified in March: A, B (skipped: at its trial), C, D (created active), E.
        // All 4 March leads got at least that far: 100 %. Hours from lead, skips left
        // out: A 10, B 20, C 4, E 15 days = 360 → [4, 10, 20, 360] → (10 + 20) / 2 = 15.
        stage("qualified", 5, Some(10_000), Some(15)),
        // Reached trial in March: A, B, D. Of the 5 qualified in March, A, B and D did:
        // 60 %. Hours from qualified: A 20 (B and D skipped) → 20.
        stage("trial", 3, Some(6_000), Some(20)),
        // Paid (active) in March: A, D. Of the 3 trials, 2: 66.67 % → 6667 bp.
        // Hours from trial: A 70 (D skipped).
        stage("paid", 2, Some(6_667), Some(70)),
    ]
}

fn check_people(c: &Customers) {
    // Cohorts October → March. March: A, B, C, D signed up; A and D activated (B on
    // day 8 did not): 2 of 4 = 50 %. February: E, not activated: 0 %. Earlier: empty.
    let months: Vec<String> = c.activation.iter().map(|x| x.month.to_string()).collect();
    assert_eq!(months, ["2025-10", "2025-11", "2025-12", "2026-01", "2026-02", "2026-03"]);
    let counts: Vec<(i64, i64, Option<i64>)> =
        c.activation.iter().map(|x| (x.customers, x.activated, x.rate_bp)).collect();
    assert_eq!(counts, [(0, 0, None), (0, 0, None), (0, 0, None), (0, 0, None), (1, 0, Some(0)), (4, 2, Some(5_000))]);
    assert_eq!(c.funnel.stages, expected_funnel());
    // 3 promoters, 1 passive, 2 detractors of 6: 50 % − 33.3 % = 16.7 → 16.
    assert_eq!(c.nps, Some(Nps { responses: 6, promoters: 3, passives: 1, detractors: 2, score: 16 }));
}

#[tokio::test]
async fn customer_numbers_from_the_consumer_and_from_a_rebuild_agree_with_the_hand_computation() {
    let f = fixture().await;
    story(&f).await;
    f.catch_up().await;
    let live = f.customers(&Filter::default()).await;
    check_people(&live);
    // No spend entered and no paying customers: no CAC, no LTV, no rates.
    assert_eq!((live.acquisition_spend_cents, live.cac_cents, live.ltv_cents), (None, None, None));

    // A rebuild from the source tables gives the same rollups; events handled again
    // after it (a consumer replaying) change nothing.
    rollups::rebuild(&f.ctx).await.unwrap();
    assert_eq!(f.customers(&Filter::default()).await, live);
    let reset = sqlx::query("DELETE FROM consumer_cursors WHERE consumer = $1")
        .bind(people::CONSUMER)
        .execute(f.ctx.db.pool())
        .await
        .unwrap();
    assert_eq!(reset.rows_affected(), 1, "the consumer's cursor is gone: it replays every event");
    f.catch_up().await;
    assert_eq!(f.customers(&Filter::default()).await, live);
}

#[tokio::test]
async fn the_drill_down_lists_the_customers_behind_each_tile() {
    let f = fixture().await;
    story(&f).await;
    f.catch_up().await;
    let all = Filter::default();
    let rows = |v: Vec<kpis::Behind>| v.into_iter().map(|b| (b.name, b.value, b.detail)).collect::<Vec<_>>();
    // March's signups in order: A after 48 h, B and C not, D 6 days 23 hours = 167 h.
    assert_eq!(
        rows(people::behind(&f.ctx, M, people::Tile::Signups, &all).await.unwrap()),
        vec![
            ("A".into(), 48, "first task succeeded after 48 h".into()),
            ("B".into(), -1, "not activated".into()),
            ("C".into(), -1, "not activated".into()),
            ("D".into(), 167, "first task succeeded after 167 h".into()),
        ]
    );
    // Trials of March: A 20 h after qualifying; B and D skipped qualified.
    assert_eq!(
        rows(people::behind(&f.ctx, M, people::Tile::Trial, &all).await.unwrap()),
        vec![
            ("A".into(), 20, "20 h after the previous stage".into()),
            ("B".into(), 0, "skipped the previous stage".into()),
            ("D".into(), 0, "skipped the previous stage".into()),
        ]
    );
    let nps = people::behind(&f.ctx, M, people::Tile::Nps, &all).await.unwrap();
    let scores: Vec<(String, i64, String)> = rows(nps);
    assert_eq!(scores.len(), 6);
    assert_eq!(scores[0], ("A".into(), 10, "promoter".into()));
    assert_eq!(scores[5], ("D".into(), 0, "detractor".into()));
    let enterprise = Filter { plan: Some("enterprise".into()), team: None };
    let paid = people::behind(&f.ctx, M, people::Tile::Paid, &enterprise).await.unwrap();
    assert_eq!(paid.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["D"]);
}

#[tokio::test]
async fn a_plan_filter_narrows_to_the_customers_on_the_plan() {
    let f = fixture().await;
    let [a, ..] = story(&f).await;
    f.catch_up().await;
    let enterprise = Filter { plan: Some("enterprise".into()), team: None };
    let c = f.customers(&enterprise).await;
    // Only D: one March signup, activated; every stage reached at creation (no waits).
    assert_eq!(c.activation.last().map(|x| (x.customers, x.activated)), Some((1, 1)));
    assert_eq!(
        c.funnel.stages,
        vec![
            stage("lead", 1, None, None),
            stage("qualified", 1, Some(10_000), None),
            stage("trial", 1, Some(10_000), None),
            stage("paid", 1, Some(10_000), None),
        ]
    );
    // D's one March answer: 0, a detractor: −100.
    assert_eq!(c.nps, Some(Nps { responses: 1, promoters: 0, passives: 0, detractors: 1, score: -100 }));

    // A moves to enterprise: the rollup follows the customer's current plan.
    let mut tx = f.ctx.db.begin().await.unwrap();
    let event = j1msky_core::events::CustomerPlanChanged { from: Some("pro".into()), to: "enterprise".into() };
    sqlx::query("UPDATE customers SET plan = 'enterprise' WHERE id = $1").bind(&a).execute(&mut *tx).await.unwrap();
    outbox::emit_typed(&mut tx, f.ctx.db.backend(), event, Some(&a), f.start() + 12 * D).await.unwrap();
    tx.commit().await.unwrap();
    f.catch_up().await;
    let c = f.customers(&enterprise).await;
    assert_eq!(c.activation.last().map(|x| (x.customers, x.activated)), Some((2, 2)));
    assert_eq!(c.nps.map(|n| (n.responses, n.score)), Some((2, 0)));
}

#[tokio::test]
async fn spend_is_stored_audited_refused_when_wrong_and_gives_cac_and_ltv_to_cac() {
    let f = fixture().await;
    let op = Actor::user("usr_op");
    for (month, cents) in [(M, 120_000), (M, 150_000), (M.prev(), 90_000)] {
        people::set_spend(&f.ctx, month, cents, &op).await.unwrap();
        f.clock.advance_secs(60);
    }
    assert_eq!(people::spend(&f.ctx).await.unwrap(), vec![(M, 150_000), (M.prev(), 90_000)]);
    // The change from $1,200 to $1,500 is in the audit log with both figures.
    let row = sqlx::query("SELECT actor, detail FROM audit_log WHERE action = 'insights.spend_set' ORDER BY at, id")
        .fetch_all(f.ctx.db.pool())
        .await
        .unwrap();
    assert_eq!(row.len(), 3);
    let detail: serde_json::Value = serde_json::from_str(&row[1].get::<String, _>(1)).unwrap();
    assert_eq!(detail, serde_json::json!({"month": "2026-03", "from_cents": 120_000, "to_cents": 150_000}));
    assert_eq!(row[1].get::<String, _>(0), op.as_str());

    for (month, cents, field) in [(M, -1, "amount"), (M, people::MAX_CENTS + 1, "amount"), (M.next(), 100, "month")] {
        let e = people::set_spend(&f.ctx, month, cents, &op).await.unwrap_err().to_string();
        assert!(e.starts_with(&format!("{field}:")), "{month} {cents}: {e}");
    }
    assert_eq!(people::spend(&f.ctx).await.unwrap()[0], (M, 150_000), "a refused figure changed nothing");

    // The board with billing's stubs (no new paying customers): spend shown, no CAC, no
    // division by zero.
    let c = f.customers(&Filter::default()).await;
    assert_eq!((c.acquisition_spend_cents, c.cac_cents, c.ltv_to_cac_x100), (Some(150_000), None, None));

    // With the month's MRR section: 10 paying at the start ($1,000.00), 3 new at $99,
    // 1 churned at $49: ending $1,248.00 with 12 paying. Revenue $1,000, margin $700.
    let mrr = Mrr {
        starting_cents: 100_000,
        new_cents: 29_700,
        churn_cents: 4_900,
        ending_cents: 124_800,
        paying_start: 10,
        paying_end: 12,
        new_customers: 3,
        churned_customers: 1,
        ..Mrr::default()
    };
    let usage = Usage { revenue_micros: 1_000_000_000, gross_margin_micros: 700_000_000, ..Usage::default() };
    let c = people::month(&f.ctx, M, &Filter::default(), &mrr, &usage).await.unwrap();
    assert_eq!(c.churn_rate_bp, Some(1_000)); // 1 of 10
    assert_eq!(c.gross_revenue_churn_bp, Some(490)); // 4,900 of 100,000
    assert_eq!(c.net_revenue_churn_bp, Some(490)); // nothing grew back
    assert_eq!(c.arpa_cents, Some(10_400)); // 124,800 / 12
                                            // LTV (earlier months have no billing data): $104 × 70 % ÷ 10 % = $728.00.
    assert_eq!(c.ltv_cents, Some(72_800));
    // CAC = $1,500 ÷ 3 = $500; LTV:CAC = 728 ÷ 500 = 1.456 → 146.
    assert_eq!((c.cac_cents, c.ltv_to_cac_x100), (Some(50_000), Some(146)));
    // Under a plan filter the whole business's spend is not divided by one plan's customers.
    let pro = Filter { plan: Some("pro".into()), team: None };
    let c = people::month(&f.ctx, M, &pro, &mrr, &usage).await.unwrap();
    assert_eq!((c.acquisition_spend_cents, c.cac_cents), (Some(150_000), None));
}
