// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Revenue, cost and margins of one hand-computed month (November 2026, business zone
//! UTC, worked out in `usage_support`), on whichever engine `J1MSKY_TEST_BACKEND` names.
//! Tasks and their ledger rows are written as the worker writes them, with their events;
//! invoices and refunds go through billing's real webhook applier. The consumer's rollups,
//! the rebuild's and the numbers worked out by hand must all agree.

use crate::usage_support;

use std::sync::Arc;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_core::vocab::Stage;
use j1msky_db::consumers::{self, Runner};
use j1msky_db::testing::TestDb;
use j1msky_db::{outbox, Db};
use j1msky_insights::evening::{self, Scenario};
use j1msky_insights::kpis::{Filter, MarginRow, TeamTimes, Usage};
use j1msky_insights::{usage, Ctx, Month};
use serde_json::json;
use usage_support::*;

struct Fixture {
    ctx: Ctx,
    clock: Arc<ManualClock>,
    acme: String,
    bolt: String,
    cold: String,
    dud: String,
    _t: TestDb,
}

async fn fixture() -> Fixture {
    let t = TestDb::new().await;
    let db = t.db.clone();
    let clock = Arc::new(ManualClock::new(at(28, 12)));
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: clock.clone() };
    let November { acme, bolt, cold, dud } = november(&db, &catalogue).await;
    Fixture { ctx, clock, acme, bolt, cold, dud, _t: t }
}

async fn catch_up(f: &Fixture) {
    let all = usage::consumers(&f.ctx);
    let runner = Runner::new("test");
    loop {
        let p = consumers::run_once(&f.ctx.db, &runner, &all, f.clock.as_ref()).await.unwrap();
        assert_eq!(p.failed, 0, "the usage consumer failed an event");
        if p.handled + p.passed == 0 {
            return;
        }
    }
}

/// Every rollup row, sorted: what "the same rollups" means.
async fn snapshot(db: &Db) -> Vec<String> {
    let queries = [
        "SELECT task_id, month, customer_id, team, outcome, duration_ms, cost_micros, charge_micros, ledger_until,
                plan FROM insights_tasks",
        "SELECT month, customer_id, team, tasks_completed, tasks_failed, cost_micros, charge_micros FROM insights_usage
         WHERE tasks_completed <> 0 OR tasks_failed <> 0 OR cost_micros <> 0 OR charge_micros <> 0",
        "SELECT month, customer_id, team, model, calls, input_tokens, output_tokens, cost_micros
         FROM insights_model_cost WHERE calls <> 0",
        "SELECT month, customer_id, plan, subscription_cents, refunds_cents, fees_cents FROM insights_revenue
         WHERE subscription_cents <> 0 OR refunds_cents <> 0 OR fees_cents <> 0",
        "SELECT month, customer_id, team, model, plan, subscription_micros, refunds_micros, charge_micros,
                cost_micros, fees_micros FROM insights_pieces",
        "SELECT month, customer_id, team, plan, revenue_micros, cost_micros, margin_micros FROM insights_margins",
        "SELECT source_id, kind, month, customer_id, plan, amount_cents FROM insights_revenue_seen",
    ];
    let mut out = Vec::new();
    for q in queries {
        for row in sqlx::query(q).fetch_all(db.pool()).await.unwrap() {
            use sqlx::Row;
            let cells: Vec<String> = (0..row.len())
                .map(|i| {
                    row.try_get::<String, _>(i).or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string())).unwrap()
                })
                .collect();
            out.push(format!("{}|{}", &q[7..20], cells.join("|")));
        }
    }
    out.sort();
    out
}

/// The board's numbers (grouped in SQL) are the what-if's (computed in memory) to the
/// micro-dollar.
async fn same_in_sql_and_in_memory(ctx: &Ctx, filter: &Filter) {
    let in_sql = usage::month(ctx, NOV, filter).await.unwrap();
    let in_memory = usage::compute(&usage::data::load(ctx, NOV, filter).await.unwrap(), filter);
    assert_eq!(Usage { completion: Vec::new(), ..in_sql }, in_memory);
}

fn row(rows: &[MarginRow], key: &str) -> (i64, i64, i64, i64) {
    let r = rows.iter().find(|r| r.key == key).unwrap_or_else(|| panic!("no row {key} in {rows:?}"));
    (r.revenue_micros, r.cost_micros, r.margin_micros, r.tasks)
}

fn keys(rows: &[MarginRow]) -> Vec<&str> {
    rows.iter().map(|r| r.key.as_str()).collect()
}

#[tokio::test]
async fn the_month_matches_the_hand_computed_figures_from_the_consumer_and_the_rebuild() {
    let f = fixture().await;
    catch_up(&f).await;
    let by_consumer = snapshot(&f.ctx.db).await;
    // 16 tasks, their usage and model rows, 5 revenue entries: something to compare.
    assert!(by_consumer.len() >= 35, "{by_consumer:?}");
    let all = Filter::default();
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();

    assert_eq!(u.subscription_revenue_cents, 20_200);
    assert_eq!(u.usage_revenue_cents, 550);
    assert_eq!(u.refunds_cents, 3_000);
    assert_eq!(u.revenue_micros, 177_500_000);
    assert_eq!(u.model_cost_micros, 61_180_000);
    assert_eq!(u.stripe_fees_micros, None, "nothing stores Stripe's fees: unknown, not zero");
    assert_eq!(u.gross_margin_micros, 116_320_000);
    assert_eq!(u.gross_margin_bp, Some(6_553));
    assert_eq!((u.tasks_completed, u.tasks_failed), (15, 1));
    assert_eq!(u.success_rate_bp, Some(9_375));
    assert_eq!(u.cost_per_completed_task_micros, Some(4_078_666));
    // The same numbers as the board's and `kpi --json`'s tests read them (`usage_support`).
    let printed = serde_json::to_value(&u).unwrap();
    for (field, value) in TOTALS {
        assert_eq!(printed[field], *value, "{field}");
    }

    // Loss-makers first.
    assert_eq!(keys(&u.by_customer), vec![f.dud.as_str(), &f.bolt, &f.cold, &f.acme]);
    assert_eq!(row(&u.by_customer, &f.dud), (49_000_000, 60_000_000, -11_000_000, 1));
    assert_eq!(row(&u.by_customer, &f.bolt), (10_500_000, 1_100_000, 9_400_000, 11));
    assert_eq!(row(&u.by_customer, &f.cold), (49_000_000, 0, 49_000_000, 0));
    assert_eq!(row(&u.by_customer, &f.acme), (69_000_000, 80_000, 68_920_000, 3));
    assert_eq!(u.by_customer[0].label, "Dud");
    let listed: Vec<(&str, i64, i64, i64, i64)> = u
        .by_customer
        .iter()
        .map(|r| (r.label.as_str(), r.revenue_micros, r.cost_micros, r.margin_micros, r.tasks))
        .collect();
    assert_eq!(listed, BY_CUSTOMER);

    assert_eq!(keys(&u.by_plan), vec!["pay-per-task", "starter", "pro"]);
    assert_eq!(row(&u.by_plan, "starter"), (98_000_000, 60_000_000, 38_000_000, 1));

    // Code: Acme's 51,750,000 + Dud's 49,000,000; cost 60,000 + 60,000,000.
    assert_eq!(keys(&u.by_team), vec!["research", "content", "code", "unattributed"]);
    assert_eq!(row(&u.by_team, "code"), (100_750_000, 60_060_000, 40_690_000, 3));
    assert_eq!(row(&u.by_team, "content"), (17_250_000, 20_000, 17_230_000, 1));
    assert_eq!(row(&u.by_team, "research"), (10_500_000, 1_100_000, 9_400_000, 11));
    assert_eq!(row(&u.by_team, "unattributed"), (49_000_000, 0, 49_000_000, 0));

    // Opus: Bolt's 10,500,000 + Dud's 49,000,000 against 61,100,000 of cost.
    assert_eq!(keys(&u.by_model), vec!["claude-opus", "kimi-k2.5", "unattributed", "claude-sonnet"]);
    // Per model, `tasks` counts ledger calls: 11 (Bolt) + 1 (Dud).
    assert_eq!(row(&u.by_model, "claude-opus"), (59_500_000, 61_100_000, -1_600_000, 12));
    assert_eq!(row(&u.by_model, "kimi-k2.5").3, 3);
    // Acme's 9,900 ¢ over its pairs in (team, model) order, by cost (code/sonnet 42,000,
    // code/kimi 18,000, content/sonnet 20,000 of 80,000): ⌊9,900·42/80⌋ = 5,197, then
    // ⌊9,900·60/80⌋ − 5,197 = 2,228, then 9,900 − 7,425 = 2,475; the 3,000 ¢ refund:
    // 1,575, 675, 750.
    assert_eq!(row(&u.by_model, "kimi-k2.5").0, (2_228 - 675) * 10_000);
    assert_eq!(row(&u.by_model, "claude-sonnet").0, (5_197 - 1_575 + 2_475 - 750) * 10_000);

    // Nearest rank: code [60, 90, 300] s; research 10..110 s (6th and 10th).
    assert_eq!(
        u.completion,
        vec![
            TeamTimes { team: "code".into(), tasks: 3, median_ms: 90_000, p90_ms: 300_000 },
            TeamTimes { team: "content".into(), tasks: 1, median_ms: 120_000, p90_ms: 120_000 },
            TeamTimes { team: "research".into(), tasks: 11, median_ms: 60_000, p90_ms: 100_000 },
        ]
    );
    let times: Vec<(&str, i64, i64, i64)> =
        u.completion.iter().map(|t| (t.team.as_str(), t.tasks, t.median_ms, t.p90_ms)).collect();
    assert_eq!(times, COMPLETION);

    same_in_sql_and_in_memory(&f.ctx, &all).await;

    let behind = usage::behind_margin(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!(behind[0].customer_id, f.dud);
    assert_eq!(behind[0].value, -11_000_000);
    assert_eq!(behind[0].plan.as_deref(), Some("starter"));

    // Handling every event again changes nothing (a consumer crash before its commit
    // replays the event in a new transaction: the same settle runs).
    let events = outbox::after(&f.ctx.db, 0, 10_000).await.unwrap();
    let mut tx = f.ctx.db.begin().await.unwrap();
    for e in &events {
        usage::on_event(&mut tx, f.ctx.tz(), e).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(snapshot(&f.ctx.db).await, by_consumer);

    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(snapshot(&f.ctx.db).await, by_consumer, "the rebuild and the consumer disagree");
    assert_eq!(usage::month(&f.ctx, NOV, &all).await.unwrap(), u);
}

#[tokio::test]
async fn filters_narrow_to_a_team_and_a_plan() {
    let f = fixture().await;
    catch_up(&f).await;
    // Code's share of the subscriptions: 74,250,000 (Acme) + 49,000,000 (Dud); of the
    // refund 22,500,000.
    let code = Filter { plan: None, team: Some("code".into()) };
    let u = usage::month(&f.ctx, NOV, &code).await.unwrap();
    assert_eq!(u.subscription_revenue_cents, 12_325);
    assert_eq!(u.refunds_cents, 2_250);
    assert_eq!(u.usage_revenue_cents, 0);
    assert_eq!(u.revenue_micros, 100_750_000);
    assert_eq!(u.model_cost_micros, 60_060_000);
    assert_eq!((u.tasks_completed, u.tasks_failed), (3, 1));
    assert_eq!(keys(&u.by_team), vec!["code"]);
    assert_eq!(u.completion.len(), 1);

    same_in_sql_and_in_memory(&f.ctx, &code).await;
    let starter = Filter { plan: Some("starter".into()), team: None };
    same_in_sql_and_in_memory(&f.ctx, &starter).await;
    let u = usage::month(&f.ctx, NOV, &starter).await.unwrap();
    assert_eq!(u.revenue_micros, 98_000_000);
    assert_eq!(u.model_cost_micros, 60_000_000);
    assert_eq!(keys(&u.by_customer), vec![f.dud.as_str(), &f.cold]);
    assert_eq!(u.completion, vec![TeamTimes { team: "code".into(), tasks: 1, median_ms: 90_000, p90_ms: 90_000 }]);

    let ppt = Filter { plan: Some("pay-per-task".into()), team: None };
    let u = usage::month(&f.ctx, NOV, &ppt).await.unwrap();
    assert_eq!(u.usage_revenue_cents, 550);
    assert_eq!(u.completion[0].tasks, 11);

    // A filter naming nothing that exists is refused, naming the field.
    for (bad, field) in [
        (Filter { plan: Some("gold".into()), team: None }, "plan"),
        (Filter { plan: None, team: Some("cooking".into()) }, "team"),
    ] {
        let e = usage::month(&f.ctx, NOV, &bad).await.unwrap_err().to_string();
        assert!(e.starts_with(&format!("{field}:")), "{e}");
    }

    // Another month has nothing.
    let empty = usage::month(&f.ctx, NOV.next(), &Filter::default()).await.unwrap();
    assert_eq!((empty.revenue_micros, empty.gross_margin_bp, empty.success_rate_bp), (0, None, None));
}

#[tokio::test]
async fn what_if_reprices_the_ledger_and_the_plans_by_hand() {
    let f = fixture().await;
    catch_up(&f).await;
    let all = Filter::default();
    // Opus routed to kimi ($0.60 / $3.00 per million): Bolt's 11,000 in + 41,800 out →
    // 6,600,000,000 + 125,400,000,000 = 132,000 µ$; Dud's 2,000,000 + 2,000,000 →
    // 1,200,000 + 6,000,000 = 7,200,000. Cost 61,180,000 − 61,100,000 + 7,332,000.
    let routed = Scenario { routing: [("claude-opus".into(), "kimi-k2.5".into())].into(), ..Scenario::default() };
    let w = evening::what_if(&f.ctx, NOV, &all, &routed).await.unwrap();
    assert_eq!(
        (w.actual_revenue_micros, w.actual_cost_micros, w.actual_margin_micros),
        (177_500_000, 61_180_000, 116_320_000)
    );
    assert_eq!((w.revenue_micros, w.cost_micros, w.margin_micros), (177_500_000, 7_412_000, 170_088_000));
    assert_eq!(w.by_customer[0].0.key, f.dud, "the biggest change first");
    assert_eq!((w.by_customer[0].0.margin_micros, w.by_customer[0].1.margin_micros), (-11_000_000, 41_800_000));
    assert_eq!((w.by_customer[1].0.key.as_str(), w.by_customer[1].1.margin_micros), (f.bolt.as_str(), 10_368_000));

    // Opus at half price ($2.50 / $12.50): exactly half of its 61,100,000.
    let half =
        Scenario { model_prices: [("claude-opus".into(), (2_500_000, 12_500_000))].into(), ..Scenario::default() };
    let w = evening::what_if(&f.ctx, NOV, &all, &half).await.unwrap();
    assert_eq!(w.cost_micros, 80_000 + 30_550_000);

    // Starter at $59: Cold's and Dud's $49 invoices become $59 each.
    let dearer = Scenario { plan_prices: [("starter".into(), 5_900)].into(), ..Scenario::default() };
    let w = evening::what_if(&f.ctx, NOV, &all, &dearer).await.unwrap();
    assert_eq!((w.revenue_micros, w.cost_micros, w.margin_micros), (197_500_000, 61_180_000, 136_320_000));

    // Nothing changed: the actual month, to the micro-dollar.
    let w = evening::what_if(&f.ctx, NOV, &all, &Scenario::default()).await.unwrap();
    assert_eq!((w.revenue_micros, w.cost_micros), (w.actual_revenue_micros, w.actual_cost_micros));

    for (bad, field) in [
        (Scenario { routing: [("claude-opus".into(), "gpt-9".into())].into(), ..Scenario::default() }, "routing"),
        (Scenario { plan_prices: [("gold".into(), 100)].into(), ..Scenario::default() }, "plan_prices"),
        (Scenario { plan_prices: [("pro".into(), -1)].into(), ..Scenario::default() }, "plan_prices"),
        (Scenario { model_prices: [("kimi-k2.5".into(), (-1, 0))].into(), ..Scenario::default() }, "model_prices"),
    ] {
        let e = evening::what_if(&f.ctx, NOV, &all, &bad).await.unwrap_err().to_string();
        assert!(e.starts_with(&format!("{field}:")), "{e}");
    }
}

#[tokio::test]
async fn the_evening_review_shows_the_days_spend_and_the_months_loss_makers() {
    let f = fixture().await;
    catch_up(&f).await;
    let e = evening::review(&f.ctx, at(10, 20)).await.unwrap();
    assert_eq!((e.start, e.end), (at(10, 0), at(11, 0)));
    // The 10th: Acme's 80,000 (kimi 18,000, sonnet 62,000) and Bolt's 1,100,000 of opus.
    assert_eq!(e.spend_micros, 1_180_000);
    let spend: Vec<(&str, i64)> = e.by_model.iter().map(|r| (r.key.as_str(), r.cost_micros)).collect();
    assert_eq!(spend, vec![("claude-opus", 1_100_000), ("claude-sonnet", 62_000), ("kimi-k2.5", 18_000)]);
    let teams: Vec<(&str, i64)> = e.by_team.iter().map(|r| (r.key.as_str(), r.cost_micros)).collect();
    assert_eq!(teams, vec![("research", 1_100_000), ("code", 60_000), ("content", 20_000)]);
    // The day's spend per customer, most first, named as on the board, with its calls:
    // Bolt's eleven opus calls of 100,000; Acme's six rows (a1 two, a2, a3, a4 twice).
    let customers: Vec<(&str, &str, i64, i64)> =
        e.spend_by_customer.iter().map(|r| (r.key.as_str(), r.label.as_str(), r.cost_micros, r.tasks)).collect();
    assert_eq!(customers, vec![(f.bolt.as_str(), "Bolt", 1_100_000, 11), (f.acme.as_str(), "Acme", 80_000, 6)]);
    assert_eq!(e.by_customer[0].key, f.dud, "month to date, the loss-maker first");
    assert_eq!(e.by_customer[0].margin_micros, -11_000_000);
}

#[tokio::test]
async fn a_metered_day_of_direct_api_calls_is_pay_per_task_revenue_of_team_api() {
    let t = TestDb::new().await;
    let db = t.db.clone();
    let clock = Arc::new(ManualClock::new(at(13, 12)));
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: clock.clone() };
    let dev = customer(&db, "Dev", None, "cus_E").await;
    // Two calls outside any task on the 11th: kimi 3,000 + sonnet 1,000 = 4,000 µ$.
    direct_calls(&db, &dev, 11, &[("kimi-k2.5", 3_000), ("claude-sonnet", 1_000)]).await;
    // Charged at 3× cost rounded up to the cent: 12,000 → 20,000 µ$ (2 ¢).
    assert_eq!(j1msky_tasks::api_usage::meter_api_calls(&db, &catalogue, at(13, 12)).await.unwrap(), 1);
    let f =
        Fixture { ctx, clock, acme: String::new(), bolt: dev.clone(), cold: String::new(), dud: String::new(), _t: t };
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &Filter::default()).await.unwrap();
    assert_eq!((u.usage_revenue_cents, u.revenue_micros, u.model_cost_micros), (2, 20_000, 4_000));
    assert_eq!((u.tasks_completed, u.cost_per_completed_task_micros), (0, None), "API calls are no tasks");
    assert_eq!(keys(&u.by_team), vec!["api"]);
    same_in_sql_and_in_memory(&f.ctx, &Filter::default()).await;
    // The 2 ¢ split by cost in model order: sonnet (1,000 of 4,000) ⌊2·1/4⌋ = 0 ¢, kimi 2 ¢.
    assert_eq!(row(&u.by_model, "kimi-k2.5"), (20_000, 3_000, 17_000, 1));
    assert_eq!(row(&u.by_model, "claude-sonnet"), (0, 1_000, -1_000, 1));
    let by_consumer = snapshot(&f.ctx.db).await;
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(snapshot(&f.ctx.db).await, by_consumer);
}

/// A plan customer's direct API calls are no charge, but their model cost is the
/// business's: it is in the month's model cost and margin (team `api`), from the consumer
/// and the rebuild alike, and a day its plan paid for is never charged later.
#[tokio::test]
async fn a_plan_customer_s_direct_api_calls_cost_the_business_and_are_never_charged() {
    let t = TestDb::new().await;
    let db = t.db.clone();
    let clock = Arc::new(ManualClock::new(at(13, 12)));
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: clock.clone() };
    let pro = customer(&db, "Pro Dev", Some("pro"), "cus_P").await;
    direct_calls(&db, &pro, 11, &[("claude-sonnet", 700_000), ("kimi-k2.5", 50_000)]).await;
    stripe(
        &db,
        &catalogue,
        "evt_p",
        "invoice.paid",
        at(2, 9),
        invoice("in_P", "cus_P", at(2, 9), vec![plan_line("pro", 9_900)]),
    )
    .await;
    assert_eq!(j1msky_tasks::api_usage::meter_api_calls(&db, &catalogue, at(13, 12)).await.unwrap(), 1);
    let charges: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_charges").fetch_one(db.pool()).await.unwrap();
    assert_eq!(charges, 0, "the plan paid for the day");
    let f =
        Fixture { ctx, clock, acme: pro.clone(), bolt: String::new(), cold: String::new(), dud: String::new(), _t: t };
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &Filter::default()).await.unwrap();
    assert_eq!((u.revenue_micros, u.usage_revenue_cents, u.model_cost_micros), (99_000_000, 0, 750_000));
    // The plan's revenue is split over the teams by what they cost: all of it to `api`.
    assert_eq!(row(&u.by_team, "api"), (99_000_000, 750_000, 98_250_000, 0));
    same_in_sql_and_in_memory(&f.ctx, &Filter::default()).await;
    let by_consumer = snapshot(&f.ctx.db).await;
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(snapshot(&f.ctx.db).await, by_consumer, "the rebuild counts the day as the consumer did");

    // The customer leaves its plan: the day the plan paid for stays uncharged.
    sqlx::query("UPDATE customers SET plan = NULL, plan_since = NULL WHERE id = $1")
        .bind(&pro)
        .execute(f.ctx.db.pool())
        .await
        .unwrap();
    assert_eq!(j1msky_tasks::api_usage::meter_api_calls(&f.ctx.db, &catalogue, at(14, 12)).await.unwrap(), 0);
    let charges: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM usage_charges").fetch_one(f.ctx.db.pool()).await.unwrap();
    assert_eq!(charges, 0, "metered once: no charge after the plan ended");
}

#[tokio::test]
async fn months_are_the_business_zones_in_the_consumer_and_the_rebuild() {
    let t = TestDb::new().await;
    let db = t.db.clone();
    let clock = Arc::new(ManualClock::new(at(28, 12)));
    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    catalogue.business.time_zone = "Europe/Berlin".into();
    let catalogue = Arc::new(catalogue);
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: clock.clone() };
    let acme = customer(&db, "Acme", Some("pro"), "cus_A").await;
    let utc = |y, m, d, h, min| {
        chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(h, min, 0).unwrap().and_utc().timestamp_micros()
    };
    // Finished 2026-10-31 23:30 UTC = November 1st, 00:30 in Berlin (CET): November's.
    let late = utc(2026, 10, 31, 23, 0);
    ledger(&db, &acme, "n1", "code", &[("kimi-k2.5", 0, 0, 7_000, late)]).await;
    finish(&db, &acme, "n1", "code", "succeeded", late, 1_800, None).await;
    // Finished 2026-10-31 22:30 UTC = 23:30 in Berlin: October's.
    let early = utc(2026, 10, 31, 22, 0);
    ledger(&db, &acme, "o1", "code", &[("kimi-k2.5", 0, 0, 3_000, early)]).await;
    finish(&db, &acme, "o1", "code", "succeeded", early, 1_800, None).await;
    // Paid 2026-11-30 23:30 UTC = December 1st in Berlin: December's.
    let paid = utc(2026, 11, 30, 23, 30);
    stripe(
        &db,
        &catalogue,
        "evt_p",
        "invoice.paid",
        paid,
        invoice("in_P", "cus_A", paid, vec![plan_line("pro", 9_900)]),
    )
    .await;
    let f = Fixture { ctx, clock, acme, bolt: String::new(), cold: String::new(), dud: String::new(), _t: t };
    catch_up(&f).await;
    let by_consumer = snapshot(&f.ctx.db).await;
    let oct = Month { year: 2026, month: 10 };
    let all = Filter::default();
    let (o, n, d) = (
        usage::month(&f.ctx, oct, &all).await.unwrap(),
        usage::month(&f.ctx, NOV, &all).await.unwrap(),
        usage::month(&f.ctx, NOV.next(), &all).await.unwrap(),
    );
    assert_eq!((o.model_cost_micros, n.model_cost_micros, d.model_cost_micros), (3_000, 7_000, 0));
    assert_eq!(
        (o.subscription_revenue_cents, n.subscription_revenue_cents, d.subscription_revenue_cents),
        (0, 0, 9_900)
    );
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(snapshot(&f.ctx.db).await, by_consumer, "three months: the rebuild and the consumer disagree");
}

#[tokio::test]
async fn revenue_billing_has_not_linked_yet_is_unattributed_until_a_rebuild() {
    let t = TestDb::new().await;
    let db = t.db.clone();
    let clock = Arc::new(ManualClock::new(at(28, 12)));
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: clock.clone() };
    let input =
        NewCustomer { name: "Late".into(), stage: Some(Stage::Active), plan: Some("pro".into()), ..Default::default() };
    let late = customers::create(&db, &catalogue, &j1msky_audit::Actor::cli(), input, at(1, 0)).await.unwrap().id;
    // Stripe's invoice arrives before the checkout that links cus_L to our customer.
    let d15 = at(15, 9);
    stripe(&db, &catalogue, "evt_l", "invoice.paid", d15, invoice("in_L", "cus_L", d15, vec![plan_line("pro", 9_900)]))
        .await;
    let f =
        Fixture { ctx, clock, acme: late.clone(), bolt: String::new(), cold: String::new(), dud: String::new(), _t: t };
    catch_up(&f).await;
    let all = Filter::default();
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!((u.subscription_revenue_cents, keys(&u.by_customer)), (9_900, vec![""]));
    assert_eq!((u.by_customer[0].label.as_str(), keys(&u.by_plan)), ("unattributed", vec!["unattributed"]));

    // The link, and what billing's applier then does to the entries that came first.
    let mut tx = db.begin().await.unwrap();
    assert!(j1msky_accounts::customer_links::link_stripe(&mut tx, &late, "cus_L", d15).await.unwrap());
    sqlx::query("UPDATE revenue_entries SET customer_id = $1 WHERE stripe_customer_id = 'cus_L'")
        .bind(&late)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    usage::rebuild(&f.ctx).await.unwrap();
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!((keys(&u.by_customer), keys(&u.by_plan)), (vec![late.as_str()], vec!["pro"]));
}

/// The split's rollups (each customer's pieces, their sums, the customers' margins), sorted.
async fn split_snapshot(db: &Db) -> Vec<String> {
    let queries = [
        "SELECT month, customer_id, team, model, plan, subscription_micros, refunds_micros, charge_micros,
                cost_micros, calls, completed, failed FROM insights_pieces",
        "SELECT month, team, model, plan, pieces, subscription_micros, refunds_micros, charge_micros, cost_micros,
                calls, completed, failed FROM insights_split WHERE pieces <> 0",
        "SELECT month, customer_id, team, plan, revenue_micros, cost_micros, margin_micros, completed
         FROM insights_margins",
    ];
    let mut out = Vec::new();
    for q in queries {
        for row in sqlx::query(q).fetch_all(db.pool()).await.unwrap() {
            use sqlx::Row;
            let cells: Vec<String> = (0..row.len())
                .map(|i| {
                    row.try_get::<String, _>(i).or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string())).unwrap()
                })
                .collect();
            out.push(format!("{}|{}", q.split("FROM").nth(1).unwrap().trim(), cells.join("|")));
        }
    }
    out.sort();
    out
}

/// What accounts does when billing says a customer's plan changed: the column and the
/// event, in one transaction.
async fn change_plan(db: &Db, customer: &str, from: Option<&str>, to: &str, now: i64) {
    let mut tx = db.begin().await.unwrap();
    sqlx::query("UPDATE customers SET plan = $1 WHERE id = $2")
        .bind(to)
        .bind(customer)
        .execute(&mut *tx)
        .await
        .unwrap();
    let event = j1msky_core::events::CustomerPlanChanged { from: from.map(String::from), to: to.into() };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(customer), now).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_split_is_kept_by_the_consumer_as_the_rebuild_computes_it_and_follows_plan_changes() {
    let f = fixture().await;
    catch_up(&f).await;
    let by_consumer = split_snapshot(&f.ctx.db).await;
    // Acme: 3 pairs + 2 task-count pieces; Bolt: 1 + 1; Cold: unattributed; Dud: 1 + 1.
    let pieces = by_consumer.iter().filter(|r| r.starts_with("insights_pieces|")).count();
    assert_eq!(pieces, 10, "{by_consumer:#?}");
    // Dud's code row and its all-teams row: the loss-maker's margin, read from the index.
    let dud_code = format!("insights_margins|2026-11|{}|code|starter|49000000|60000000|-11000000|1", f.dud);
    assert!(by_consumer.contains(&dud_code), "{by_consumer:#?}");
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(split_snapshot(&f.ctx.db).await, by_consumer, "the rebuild and the consumer disagree on the split");

    // Cold moves from starter to pro: its month's pieces move with it, and the numbers
    // by plan follow (pro now has Acme's 69,000,000 and Cold's 49,000,000).
    f.clock.advance_secs(60);
    change_plan(&f.ctx.db, &f.cold, Some("starter"), "pro", at(28, 13)).await;
    catch_up(&f).await;
    let all = Filter::default();
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!(row(&u.by_plan, "pro"), (118_000_000, 80_000, 117_920_000, 3));
    assert_eq!(row(&u.by_plan, "starter"), (49_000_000, 60_000_000, -11_000_000, 1));
    let pro = Filter { plan: Some("pro".into()), team: None };
    assert_eq!(keys(&usage::month(&f.ctx, NOV, &pro).await.unwrap().by_customer), vec![f.cold.as_str(), &f.acme]);
    same_in_sql_and_in_memory(&f.ctx, &pro).await;
    let moved = split_snapshot(&f.ctx.db).await;
    assert_ne!(moved, by_consumer);
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(split_snapshot(&f.ctx.db).await, moved, "after the plan change the rebuild and the consumer disagree");

    // A team and a plan together: code on starter is Dud's alone.
    let both = Filter { plan: Some("starter".into()), team: Some("code".into()) };
    let u = usage::month(&f.ctx, NOV, &both).await.unwrap();
    assert_eq!(
        (keys(&u.by_customer), u.revenue_micros, u.model_cost_micros),
        (vec![f.dud.as_str()], 49_000_000, 60_000_000)
    );
    same_in_sql_and_in_memory(&f.ctx, &both).await;
}

#[tokio::test]
async fn a_task_retried_into_another_month_moves_its_customer_months_split() {
    let f = fixture().await;
    catch_up(&f).await;
    // Dud's task is retried on December 2nd and succeeds again (no new ledger rows):
    // November keeps only Dud's $49 unattributed, December gets the task and its cost.
    let dec2 = chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap().and_hms_opt(9, 0, 0).unwrap();
    let dec2 = dec2.and_utc().timestamp_micros();
    f.clock.advance_micros(dec2 - at(28, 12));
    retry(&f.ctx.db, &f.dud, "d1", dec2).await;
    finish(&f.ctx.db, &f.dud, "d1", "code", "succeeded", dec2, 90, None).await;
    catch_up(&f).await;
    let all = Filter::default();
    let nov = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!(row(&nov.by_customer, &f.dud), (49_000_000, 0, 49_000_000, 0));
    assert_eq!(nov.model_cost_micros, 1_180_000);
    same_in_sql_and_in_memory(&f.ctx, &all).await;
    let dec = usage::month(&f.ctx, NOV.next(), &all).await.unwrap();
    assert_eq!(
        (dec.model_cost_micros, dec.tasks_completed, keys(&dec.by_customer)),
        (60_000_000, 1, vec![f.dud.as_str()])
    );
    let by_consumer = split_snapshot(&f.ctx.db).await;
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(split_snapshot(&f.ctx.db).await, by_consumer);
}

#[tokio::test]
async fn migration_0029_fills_the_split_from_the_rollups_already_there() {
    let f = fixture().await;
    catch_up(&f).await;
    let by_consumer = split_snapshot(&f.ctx.db).await;
    // A database upgraded with its rollups: the split's tables empty, then the
    // migration's filling statements (after its marker line) run as written.
    let engine = if f.ctx.db.backend() == j1msky_db::Backend::Postgres { "postgres" } else { "sqlite" };
    let path = format!("{}/../j1msky-db/migrations/{engine}/0029_insights_split.sql", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let (_, fill) = text.split_once("-- Filled from the rollups already there").unwrap();
    let (_, fill) = fill.split_once('\n').unwrap();
    for table in ["insights_pieces", "insights_split", "insights_margins"] {
        sqlx::query(&format!("DELETE FROM {table}")).execute(f.ctx.db.pool()).await.unwrap();
    }
    let statements: Vec<&str> = fill.split(";\n").map(str::trim).filter(|s| s.contains("INSERT")).collect();
    assert_eq!(statements.len(), 3);
    for s in statements {
        let s = s.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
        sqlx::query(&s).execute(f.ctx.db.pool()).await.unwrap();
    }
    assert_eq!(split_snapshot(&f.ctx.db).await, by_consumer);
}

#[tokio::test]
async fn completion_times_per_plan_follow_a_plan_change_in_the_consumer_and_the_rebuild() {
    let f = fixture().await;
    catch_up(&f).await;
    let pro = Filter { plan: Some("pro".into()), team: None };
    let starter = Filter { plan: Some("starter".into()), team: None };
    let times = |team: &str, tasks, median_s: i64, p90_s: i64| TeamTimes {
        team: team.into(),
        tasks,
        median_ms: median_s * 1000,
        p90_ms: p90_s * 1000,
    };
    // Acme's: code a1 60 s and a4 300 s (a3 failed), content a2 120 s; Dud's code 90 s.
    let acme_only = vec![times("code", 2, 60, 300), times("content", 1, 120, 120)];
    assert_eq!(usage::completion(&f.ctx, NOV, &pro).await.unwrap(), acme_only);
    assert_eq!(usage::completion(&f.ctx, NOV, &starter).await.unwrap(), vec![times("code", 1, 90, 90)]);

    // Dud moves from starter to pro: its task's time moves with it.
    f.clock.advance_secs(60);
    change_plan(&f.ctx.db, &f.dud, Some("starter"), "pro", at(28, 13)).await;
    catch_up(&f).await;
    let with_dud = vec![times("code", 3, 90, 300), times("content", 1, 120, 120)];
    assert_eq!(usage::completion(&f.ctx, NOV, &pro).await.unwrap(), with_dud);
    assert_eq!(usage::completion(&f.ctx, NOV, &starter).await.unwrap(), Vec::new());
    let code_pro = Filter { plan: Some("pro".into()), team: Some("code".into()) };
    assert_eq!(usage::completion(&f.ctx, NOV, &code_pro).await.unwrap(), vec![times("code", 3, 90, 300)]);
    // Pay-per-task is Bolt's 11 research tasks (10·i s): median the 6th, p90 the 10th.
    let ppt = Filter { plan: Some("pay-per-task".into()), team: None };
    assert_eq!(usage::completion(&f.ctx, NOV, &ppt).await.unwrap(), vec![times("research", 11, 60, 100)]);

    let by_consumer = snapshot(&f.ctx.db).await;
    let dud_row = by_consumer.iter().find(|r| r.contains("|d1|")).unwrap();
    assert!(dud_row.ends_with("|pro"), "{dud_row}");
    // The rebuild drops the rollups' secondary indexes while it writes (SQLite) and must
    // leave every one of them as the migrations made it.
    let indexes = || async {
        let sql = if f.ctx.db.backend() == j1msky_db::Backend::Postgres {
            "SELECT indexdef FROM pg_indexes WHERE tablename LIKE 'insights_%' ORDER BY indexdef"
        } else {
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name LIKE 'insights_%' AND sql IS NOT NULL
             ORDER BY sql"
        };
        sqlx::query_scalar::<_, String>(sql).fetch_all(f.ctx.db.pool()).await.unwrap()
    };
    let before = indexes().await;
    assert!(before.iter().any(|i| i.contains("insights_tasks_times") && i.contains("plan")), "{before:#?}");
    usage::rebuild(&f.ctx).await.unwrap();
    j1msky_insights::rollups::rebuild(&f.ctx).await.unwrap();
    assert_eq!(indexes().await, before);
    assert_eq!(snapshot(&f.ctx.db).await, by_consumer, "the rebuild and the consumer disagree on the plans");
    assert_eq!(usage::completion(&f.ctx, NOV, &pro).await.unwrap(), with_dud);
}

#[tokio::test]
async fn migration_0030_puts_each_customers_plan_on_its_tasks() {
    let f = fixture().await;
    catch_up(&f).await;
    let by_consumer = snapshot(&f.ctx.db).await;
    // A database upgraded with its rollups: the column at its default, then the
    // migration's filling statement as written.
    let engine = if f.ctx.db.backend() == j1msky_db::Backend::Postgres { "postgres" } else { "sqlite" };
    let path = format!("{}/../j1msky-db/migrations/{engine}/0030_insights_tasks_plan.sql", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let fill = text.split(";\n").map(str::trim).find(|s| s.starts_with("UPDATE")).unwrap();
    sqlx::query("UPDATE insights_tasks SET plan = ''").execute(f.ctx.db.pool()).await.unwrap();
    sqlx::query(fill).execute(f.ctx.db.pool()).await.unwrap();
    assert_eq!(snapshot(&f.ctx.db).await, by_consumer);
    let plans: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT plan FROM insights_tasks ORDER BY plan")
        .fetch_all(f.ctx.db.pool())
        .await
        .unwrap();
    let plans: Vec<&str> = plans.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(plans, vec!["pay-per-task", "pro", "starter"]);
}

/// A disputed charge: its amount counts as given back (like a refund) from the moment
/// Stripe takes it, and the win gives it back; the consumer and the rebuild agree.
#[tokio::test]
async fn a_disputed_charge_is_given_back_until_won_in_the_consumer_and_the_rebuild() {
    let t = TestDb::new().await;
    let db = t.db.clone();
    let clock = Arc::new(ManualClock::new(at(28, 12)));
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: clock.clone() };
    let acme = customer(&db, "Acme", Some("pro"), "cus_A").await;
    let d15 = at(15, 9);
    let mut paid = invoice("in_A", "cus_A", d15, vec![plan_line("pro", 9_900)]);
    paid["charge"] = json!("ch_A");
    stripe(&db, &catalogue, "evt_p", "invoice.paid", d15, paid).await;
    let dispute = |status: &str| {
        json!({"id": "du_A", "object": "dispute", "amount": 9_900, "charge": "ch_A", "currency": "usd",
               "created": at(20, 9) / SEC, "reason": "fraudulent", "status": status,
               "evidence_details": {"due_by": at(27, 9) / SEC}})
    };
    stripe(&db, &catalogue, "evt_d1", "charge.dispute.created", at(20, 9), dispute("needs_response")).await;
    let f =
        Fixture { ctx, clock, acme: acme.clone(), bolt: String::new(), cold: String::new(), dud: String::new(), _t: t };
    catch_up(&f).await;
    let all = Filter::default();
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!((u.subscription_revenue_cents, u.refunds_cents), (9_900, 9_900), "the disputed amount is given back");
    let kept = snapshot(&db).await;
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(snapshot(&db).await, kept, "the rebuild counts the dispute as the consumer did");

    stripe(&db, &catalogue, "evt_d2", "charge.dispute.closed", at(25, 9), dispute("won")).await;
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!((u.subscription_revenue_cents, u.refunds_cents), (9_900, 0), "won: the money came back");
    let kept = snapshot(&db).await;
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(snapshot(&db).await, kept);
    assert_eq!(keys(&u.by_customer), vec![acme.as_str()]);
}

/// A fresh database with Acme (pro) and Bolt (pays per task), and nothing else.
async fn taxed_world() -> (Fixture, Arc<Catalogue>) {
    let t = TestDb::new().await;
    let db = t.db.clone();
    let clock = Arc::new(ManualClock::new(at(28, 12)));
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).unwrap());
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: clock.clone() };
    let acme = customer(&db, "Acme", Some("pro"), "cus_A").await;
    let bolt = customer(&db, "Bolt", None, "cus_B").await;
    let f = Fixture { ctx, clock, acme, bolt, cold: String::new(), dud: String::new(), _t: t };
    (f, catalogue)
}

/// Acme's $99.00 invoice with 10 % tax on top ($9.90, in the API's newer `total_taxes`),
/// paid on the 15th by charge `ch_T`.
fn taxed_invoice() -> serde_json::Value {
    let d15 = at(15, 9);
    let mut paid = invoice("in_T", "cus_A", d15, vec![plan_line("pro", 9_900)]);
    paid["amount_paid"] = json!(10_890);
    paid["total"] = json!(10_890);
    paid["total_excluding_tax"] = json!(9_900);
    paid["total_taxes"] = json!([{"amount": 990, "tax_behavior": "exclusive", "taxability_reason": "standard_rated"}]);
    paid["charge"] = json!("ch_T");
    paid
}

fn refund_of_taxed(refunded: i64) -> serde_json::Value {
    json!({"id": "ch_T", "object": "charge", "customer": "cus_A", "invoice": "in_T",
           "amount_refunded": refunded, "currency": "usd"})
}

/// (amount, tax) of each revenue entry, by source.
async fn entries(db: &Db) -> Vec<(String, i64, i64)> {
    sqlx::query_as("SELECT source_id, amount_cents, tax_cents FROM revenue_entries ORDER BY source_id")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

/// Tax is collected for the tax authority, not earned: a taxed invoice books its price,
/// and a refund on its charge gives back revenue net of the same share of tax
/// (30.00 × 990 ÷ 10,890 = 2.727… → $2.73 of it is tax), so a full refund gives back
/// exactly what was booked. The consumer and the rebuild agree.
#[tokio::test]
async fn tax_on_an_invoice_is_not_revenue_and_a_refund_gives_back_its_share_of_tax_too() {
    let (f, catalogue) = taxed_world().await;
    let db = f.ctx.db.clone();
    let all = Filter::default();
    stripe(&db, &catalogue, "evt_p", "invoice.paid", at(15, 9), taxed_invoice()).await;
    stripe(&db, &catalogue, "evt_r1", "charge.refunded", at(20, 9), refund_of_taxed(3_000)).await;
    assert_eq!(entries(&db).await, vec![("ch_T:refunded".to_string(), -2_727, -273), ("in_T".to_string(), 9_900, 990)]);
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!((u.subscription_revenue_cents, u.refunds_cents), (9_900, 2_727));
    assert_eq!(u.revenue_micros, (9_900 - 2_727) * 10_000);
    let kept = snapshot(&db).await;
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(snapshot(&db).await, kept, "the rebuild counts the tax as the consumer did");

    // All of it refunded: all of the price comes back, none of the tax is left as revenue.
    stripe(&db, &catalogue, "evt_r2", "charge.refunded", at(21, 9), refund_of_taxed(10_890)).await;
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!((u.subscription_revenue_cents, u.refunds_cents, u.revenue_micros), (9_900, 9_900, 0));
    // An older refund notice delivered late changes nothing.
    stripe(&db, &catalogue, "evt_r1b", "charge.refunded", at(20, 9), refund_of_taxed(3_000)).await;
    assert!(entries(&db).await.contains(&("ch_T:refunded".to_string(), -9_900, -990)));

    // The older API's `tax` field books the same.
    let mut older = taxed_invoice();
    for field in ["total_taxes", "total_excluding_tax"] {
        older.as_object_mut().unwrap().remove(field);
    }
    older["id"] = json!("in_T2");
    older["charge"] = json!("ch_T2");
    older["tax"] = json!(990);
    stripe(&db, &catalogue, "evt_p2", "invoice.paid", at(16, 9), older).await;
    assert!(entries(&db).await.contains(&("in_T2".to_string(), 9_900, 990)));
}

/// Delivery order is not Stripe's: a refund that arrives before its invoice's payment is
/// booked whole, then netted of its share of tax when the payment arrives, and the
/// rollups follow.
#[tokio::test]
async fn a_refund_delivered_before_its_taxed_invoice_is_netted_when_the_invoice_arrives() {
    let (f, catalogue) = taxed_world().await;
    let db = f.ctx.db.clone();
    stripe(&db, &catalogue, "evt_r1", "charge.refunded", at(20, 9), refund_of_taxed(3_000)).await;
    catch_up(&f).await;
    assert_eq!(entries(&db).await, vec![("ch_T:refunded".to_string(), -3_000, 0)]);
    stripe(&db, &catalogue, "evt_p", "invoice.paid", at(15, 9), taxed_invoice()).await;
    assert_eq!(entries(&db).await, vec![("ch_T:refunded".to_string(), -2_727, -273), ("in_T".to_string(), 9_900, 990)]);
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &Filter::default()).await.unwrap();
    assert_eq!((u.subscription_revenue_cents, u.refunds_cents), (9_900, 2_727));
    let kept = snapshot(&db).await;
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(snapshot(&db).await, kept);
}

/// A dispute on a taxed charge takes back, and a win returns, the price without the tax.
#[tokio::test]
async fn a_dispute_on_a_taxed_charge_gives_back_the_price_without_the_tax() {
    let (f, catalogue) = taxed_world().await;
    let db = f.ctx.db.clone();
    stripe(&db, &catalogue, "evt_p", "invoice.paid", at(15, 9), taxed_invoice()).await;
    let dispute = |status: &str| {
        json!({"id": "du_T", "object": "dispute", "amount": 10_890, "charge": "ch_T", "currency": "usd",
               "created": at(20, 9) / SEC, "reason": "fraudulent", "status": status,
               "evidence_details": {"due_by": at(27, 9) / SEC}})
    };
    stripe(&db, &catalogue, "evt_d1", "charge.dispute.created", at(20, 9), dispute("needs_response")).await;
    assert!(entries(&db).await.contains(&("du_T:withdrawn".to_string(), -9_900, -990)));
    catch_up(&f).await;
    let all = Filter::default();
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!((u.subscription_revenue_cents, u.refunds_cents), (9_900, 9_900));
    stripe(&db, &catalogue, "evt_d2", "charge.dispute.closed", at(25, 9), dispute("won")).await;
    assert!(entries(&db).await.contains(&("du_T:reinstated".to_string(), 9_900, 990)));
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!((u.subscription_revenue_cents, u.refunds_cents), (9_900, 0));
}

/// Pay-per-task lines with tax included in their price: each charge is booked without
/// its tax, and the invoice's tax is not left behind as a subscription part.
#[tokio::test]
async fn a_pay_per_task_line_with_tax_included_is_booked_without_it() {
    let (f, catalogue) = taxed_world().await;
    let db = f.ctx.db.clone();
    let d10 = at(10, 9);
    let mut lines = Vec::new();
    for i in 1..=2 {
        let task = format!("b{i}");
        ledger(&db, &f.bolt, &task, "research", &[("claude-opus", 1_000, 3_800, 100_000, d10)]).await;
        finish(&db, &f.bolt, &task, "research", "succeeded", d10, 10, Some(550_000)).await;
        // 55 ¢ with 5 ¢ of tax in it (inclusive pricing, the older API's `tax_amounts`).
        lines.push(json!({"id": format!("il_b{i}"), "amount": 55, "metadata": {"j1msky_task": task},
                          "tax_amounts": [{"amount": 5, "inclusive": true}]}));
    }
    let mut paid = invoice("in_B", "cus_B", at(15, 9), lines);
    paid["tax"] = json!(10);
    stripe(&db, &catalogue, "evt_b", "invoice.paid", at(15, 9), paid).await;
    let booked: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, amount_cents FROM revenue_entries ORDER BY kind, source_id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        booked,
        vec![("invoice_paid".to_string(), 0), ("usage_charge".to_string(), 50), ("usage_charge".to_string(), 50)]
    );
}

/// Stripe's fees are known as billing books them (here a dispute's $15.00 fee, carried by
/// the dispute's balance transaction; the dispute is then won, so only the fee is lost),
/// and come off the margin: the customer's, and its teams' and models' by the split rule,
/// in proportion to model cost like refunds. Worked out by hand:
/// - Acme (pro) paid $99.00 (charge `ch_A`); tasks: a1 code, kimi 10,000 µ$ + sonnet
///   30,000 µ$; a2 content, sonnet 20,000 µ$. Pairs in (team, model) order: (code, sonnet)
///   30,000, (code, kimi) 10,000, (content, sonnet) 20,000, of 60,000.
/// - The fee's 1,500 ¢: ⌊1,500·30,000÷60,000⌋ = 750, ⌊1,500·40,000÷60,000⌋ − 750 = 250,
///   1,500 − 1,000 = 500. The price's 9,900 ¢: 4,950, 1,650, 3,300.
/// - Code: revenue 66,000,000, cost 40,000, fees 10,000,000, margin 55,960,000. Content:
///   33,000,000 − 20,000 − 5,000,000 = 27,980,000. Kimi: 16,500,000 − 10,000 − 2,500,000
///   = 13,990,000; sonnet: 82,500,000 − 50,000 − 12,500,000 = 69,950,000.
/// - The month: revenue 99,000,000, cost 60,000, fees 15,000,000, margin 83,940,000
///   (8,478 bp).
#[tokio::test]
async fn stripes_fees_come_off_the_margin_of_the_customer_its_teams_and_models() {
    let (f, catalogue) = taxed_world().await;
    let db = f.ctx.db.clone();
    let d10 = at(10, 9);
    ledger(&db, &f.acme, "a1", "code", &[("kimi-k2.5", 0, 0, 10_000, d10), ("claude-sonnet", 0, 0, 30_000, d10)]).await;
    finish(&db, &f.acme, "a1", "code", "succeeded", d10, 60, None).await;
    ledger(&db, &f.acme, "a2", "content", &[("claude-sonnet", 0, 0, 20_000, d10)]).await;
    finish(&db, &f.acme, "a2", "content", "succeeded", d10, 60, None).await;
    let mut paid = invoice("in_A", "cus_A", at(15, 9), vec![plan_line("pro", 9_900)]);
    paid["charge"] = json!("ch_A");
    stripe(&db, &catalogue, "evt_p", "invoice.paid", at(15, 9), paid).await;
    let all = Filter::default();
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!(u.stripe_fees_micros, None, "no fee booked yet: unknown, not free");
    assert_eq!(u.gross_margin_micros, 99_000_000 - 60_000);

    let withdrawn = json!({"id": "txn_D", "object": "balance_transaction", "amount": -9_900, "fee": 1_500,
                           "currency": "usd", "created": at(20, 9) / SEC, "type": "adjustment",
                           "reporting_category": "dispute", "source": "du_A"});
    let dispute = |status: &str| {
        json!({"id": "du_A", "object": "dispute", "amount": 9_900, "charge": "ch_A", "currency": "usd",
               "created": at(20, 9) / SEC, "reason": "fraudulent", "status": status,
               "balance_transactions": [withdrawn.clone()], "evidence_details": {"due_by": at(27, 9) / SEC}})
    };
    stripe(&db, &catalogue, "evt_d1", "charge.dispute.created", at(20, 9), dispute("needs_response")).await;
    stripe(&db, &catalogue, "evt_d2", "charge.dispute.closed", at(25, 9), dispute("won")).await;
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!(u.stripe_fees_micros, Some(15_000_000));
    assert_eq!((u.revenue_micros, u.model_cost_micros), (99_000_000, 60_000));
    assert_eq!((u.gross_margin_micros, u.gross_margin_bp), (83_940_000, Some(8_478)));
    assert_eq!(row(&u.by_customer, &f.acme), (99_000_000, 60_000, 83_940_000, 2));
    assert_eq!(row(&u.by_team, "code"), (66_000_000, 40_000, 55_960_000, 1));
    assert_eq!(row(&u.by_team, "content"), (33_000_000, 20_000, 27_980_000, 1));
    assert_eq!(row(&u.by_model, "kimi-k2.5").2, 13_990_000);
    assert_eq!(row(&u.by_model, "claude-sonnet").2, 69_950_000);
    assert_eq!(row(&u.by_plan, "pro").2, 83_940_000);
    // The customers behind the margin tile say what the margin leaves out.
    let behind = usage::behind_margin(&f.ctx, NOV, &all).await.unwrap();
    assert_eq!(behind[0].value, 83_940_000);
    assert_eq!(behind[0].detail, "revenue 99000000 µ$, model cost 60000 µ$, Stripe fees 15000000 µ$");
    same_in_sql_and_in_memory(&f.ctx, &all).await;
    same_in_sql_and_in_memory(&f.ctx, &Filter { team: Some("code".into()), ..Filter::default() }).await;
    let kept = snapshot(&db).await;
    usage::rebuild(&f.ctx).await.unwrap();
    assert_eq!(snapshot(&db).await, kept, "the rebuild counts the fee as the consumer did");
}

/// However many movements give a taxed payment back, their shares of tax add up to exactly
/// the invoice's tax: each share is taken on the charge's running total. £100.00 + £20.00
/// VAT; a £10.05 refund carries ⌊1,005 × 2,000 ÷ 12,000⌉ = 167.5 → 168; a dispute of the
/// other £109.95 brings the total to 12,000, whose share is 2,000, so it carries 1,832 (not
/// its own 1,832.5 → 1,833). All 10,000 of revenue is given back, not 9,999.
#[tokio::test]
async fn tax_shares_of_several_give_backs_add_up_to_the_invoices_tax() {
    let (f, catalogue) = taxed_world().await;
    let db = f.ctx.db.clone();
    let mut paid = invoice("in_V", "cus_A", at(15, 9), vec![plan_line("pro", 10_000)]);
    paid["amount_paid"] = json!(12_000);
    paid["total_taxes"] = json!([{"amount": 2_000, "tax_behavior": "exclusive"}]);
    paid["charge"] = json!("ch_V");
    stripe(&db, &catalogue, "evt_p", "invoice.paid", at(15, 9), paid).await;
    let refund = json!({"id": "ch_V", "object": "charge", "customer": "cus_A", "invoice": "in_V",
                        "amount_refunded": 1_005, "currency": "usd"});
    stripe(&db, &catalogue, "evt_r", "charge.refunded", at(18, 9), refund).await;
    let dispute = json!({"id": "du_V", "object": "dispute", "amount": 10_995, "charge": "ch_V", "currency": "usd",
                         "created": at(20, 9) / SEC, "reason": "fraudulent", "status": "needs_response",
                         "evidence_details": {"due_by": at(27, 9) / SEC}});
    stripe(&db, &catalogue, "evt_d", "charge.dispute.created", at(20, 9), dispute).await;
    assert_eq!(
        entries(&db).await,
        vec![
            ("ch_V:refunded".to_string(), -837, -168),
            ("du_V:withdrawn".to_string(), -9_163, -1_832),
            ("in_V".to_string(), 10_000, 2_000),
        ]
    );
    catch_up(&f).await;
    let u = usage::month(&f.ctx, NOV, &Filter::default()).await.unwrap();
    assert_eq!((u.subscription_revenue_cents, u.refunds_cents, u.revenue_micros), (10_000, 10_000, 0));
}
