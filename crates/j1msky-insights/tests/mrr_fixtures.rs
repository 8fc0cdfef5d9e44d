// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! MRR and its movements on a hand-computed story of five customers, Stripe's events
//! delivered newest first through billing's real webhook store and applier, the months
//! counted in Europe/Berlin. The numbers below are worked out by hand in the comments.

mod mrr_support;

use j1msky_insights::kpis::{Filter, Mrr, PlanMrr};
use j1msky_insights::mrr::{self, Movement};
use j1msky_insights::Month;
use mrr_support::{world, Discount, Item, Snapshot, World};
use serde_json::{json, Value};

// Noon UTC on the day named, unless said otherwise.
const JAN_03: i64 = 1_767_441_600;
const JAN_05: i64 = 1_767_614_400;
const JAN_10: i64 = 1_768_046_400;
const FEB_01: i64 = 1_769_947_200;
const FEB_15: i64 = 1_771_156_800;
const FEB_20: i64 = 1_771_588_800;
const MAR_05: i64 = 1_772_712_000;
const MAR_10: i64 = 1_773_144_000;
/// 2026-03-31 23:30 UTC is 2026-04-01 01:30 in Berlin: an April event.
const MAR_31_LATE: i64 = 1_774_999_800;
const APR_12: i64 = 1_775_995_200;
const APR_20: i64 = 1_776_686_400;
const MAY_10: i64 = 1_778_414_400;
const JUN_15: i64 = 1_781_524_800;

fn m(text: &str) -> Month {
    Month::parse(text).unwrap()
}

struct Story {
    events: Vec<Value>,
    ids: [String; 5],
}

async fn story(w: &World) -> Story {
    let a = w.customer("Upgrade Ltd").await;
    let b = w.customer("Winback GmbH").await;
    let c = w.customer("Pause SA").await;
    let d = w.customer("Trial Inc").await;
    let e = w.customer("Contract AG").await;
    let mut n = 0;
    let mut snap = |created, sub: &str, cus: &str, ours: &str, status, items: Vec<Item>, discount| {
        n += 1;
        Snapshot {
            event: format!("evt_fixture_{n:03}"),
            created,
            subscription: sub.into(),
            stripe_customer: cus.into(),
            status,
            items,
            discount,
            ours: Some(ours.to_string()),
        }
        .event()
    };
    // The pay-per-task item is metered: never MRR.
    let metered = Item { metered: true, lookup_key: "j1msky_payg_per_task".into(), ..Item::plan("payg", 50) };
    let starter = || vec![Item::plan("starter", 2900), metered.clone()];
    let pro = || vec![Item::plan("pro", 9900)];
    let contract = Item { contract_for: Some(("enterprise".into(), e.clone())), ..Item::plan("enterprise", 45_000) };
    let mut events = vec![
        // A: starter from Jan 10 (Jan: new 29.00); upgraded to Pro on Feb 15 (Feb:
        // expansion 70.00). The upgrade's prorated invoice is money, not MRR.
        snap(JAN_10, "sub_A", "cus_SA", &a, "active", starter(), None),
        snap(FEB_15, "sub_A", "cus_SA", &a, "active", pro(), None),
        // B: Pro from Jan 5 (Jan: new 99.00), cancelled Feb 20 (Feb: churn 99.00); back on
        // Mar 10 with the win-back offer, 40 % off until May 10 (Mar: reactivation 59.40);
        // the discount ends without any event (May: expansion 39.60).
        snap(JAN_05, "sub_B1", "cus_SB", &b, "active", pro(), None),
        snap(FEB_20, "sub_B1", "cus_SB", &b, "canceled", pro(), None),
        snap(
            MAR_10,
            "sub_B2",
            "cus_SB",
            &b,
            "active",
            pro(),
            Some(Discount::Percent { percent: 40.0, end: Some(MAY_10) }),
        ),
        // C: Pro from Jan 3 (Jan: new 99.00); paused on Mar 5, which is the $5 pause plan
        // (Mar: contraction 94.00); resumed on Apr 12 (Apr: expansion 94.00).
        snap(JAN_03, "sub_C", "cus_SC", &c, "active", pro(), None),
        snap(MAR_05, "sub_C", "cus_SC", &c, "active", vec![Item::plan("paused", 500)], None),
        snap(APR_12, "sub_C", "cus_SC", &c, "active", pro(), None),
        // D: a trial from Feb 1 counts nothing; paying from Feb 15 (Feb: new 29.00);
        // cancelled Apr 20 (Apr: churn 29.00).
        snap(FEB_01, "sub_D", "cus_SD", &d, "trialing", starter(), None),
        snap(FEB_15, "sub_D", "cus_SD", &d, "active", starter(), None),
        snap(APR_20, "sub_D", "cus_SD", &d, "canceled", starter(), None),
        // E: Enterprise at its $450 contract price from 2026-04-01 01:30 Berlin time
        // (Apr: new 450.00; in UTC it would still be March).
        snap(MAR_31_LATE, "sub_E", "cus_SE", &e, "active", vec![contract], None),
    ];
    events.push(json!({"id": "evt_fixture_proration", "object": "event", "type": "invoice.paid", "created": FEB_15,
        "livemode": false, "data": {"object": {"id": "in_prorate", "object": "invoice", "customer": "cus_SA",
        "subscription": "sub_A", "amount_paid": 4667, "currency": "usd",
        "lines": {"data": [{"price": {"lookup_key": "j1msky_pro_monthly"}, "amount": 4667, "proration": true}]}}}}));
    Story { events, ids: [a, b, c, d, e] }
}

#[allow(clippy::too_many_arguments)]
fn mrr_of(start: i64, new: i64, exp: i64, contr: i64, churn: i64, react: i64, end: i64, by_plan: Vec<PlanMrr>) -> Mrr {
    Mrr {
        currency: "usd".into(),
        starting_cents: start,
        new_cents: new,
        expansion_cents: exp,
        contraction_cents: contr,
        churn_cents: churn,
        reactivation_cents: react,
        ending_cents: end,
        by_plan,
        ..Mrr::default()
    }
}

fn plan(plan: &str, customers: i64, cents: i64) -> PlanMrr {
    PlanMrr { plan: plan.into(), customers, cents }
}

/// The hand-computed months (customer counts checked separately).
fn expected() -> Vec<(&'static str, Mrr)> {
    vec![
        // A 29 + B 99 + C 99, all new.
        ("2026-01", mrr_of(0, 22_700, 0, 0, 0, 0, 22_700, vec![plan("pro", 2, 19_800), plan("starter", 1, 2_900)])),
        // + A 70 expansion − B 99 churn + D 29 new = 227.00.
        (
            "2026-02",
            mrr_of(22_700, 2_900, 7_000, 0, 9_900, 0, 22_700, vec![plan("pro", 2, 19_800), plan("starter", 1, 2_900)]),
        ),
        // + B 59.40 reactivation − C 94 contraction = 192.40.
        (
            "2026-03",
            mrr_of(
                22_700,
                0,
                0,
                9_400,
                0,
                5_940,
                19_240,
                vec![plan("pro", 2, 15_840), plan("starter", 1, 2_900), plan("paused", 1, 500)],
            ),
        ),
        // + C 94 expansion − D 29 churn + E 450 new = 707.40.
        (
            "2026-04",
            mrr_of(
                19_240,
                45_000,
                9_400,
                0,
                2_900,
                0,
                70_740,
                vec![plan("enterprise", 1, 45_000), plan("pro", 3, 25_740)],
            ),
        ),
        // B's discount ended on May 10: + 39.60 expansion = 747.00.
        (
            "2026-05",
            mrr_of(70_740, 0, 3_960, 0, 0, 0, 74_700, vec![plan("enterprise", 1, 45_000), plan("pro", 3, 29_700)]),
        ),
        ("2026-06", mrr_of(74_700, 0, 0, 0, 0, 0, 74_700, vec![plan("enterprise", 1, 45_000), plan("pro", 3, 29_700)])),
    ]
}

async fn check_months(w: &World) {
    let all = Filter::default();
    for (month, want) in expected() {
        let got = mrr::month(&w.ctx, m(month), &all).await.unwrap();
        let counts =
            (got.paying_start, got.paying_end, got.new_customers, got.churned_customers, got.reactivated_customers);
        let got = Mrr {
            paying_start: 0,
            paying_end: 0,
            new_customers: 0,
            churned_customers: 0,
            reactivated_customers: 0,
            ..got
        };
        assert_eq!(got, want, "{month}");
        let want_counts = match month {
            "2026-01" => (0, 3, 3, 0, 0),
            "2026-02" => (3, 3, 1, 1, 0),
            "2026-03" => (3, 4, 0, 0, 1),
            "2026-04" => (4, 4, 1, 1, 0),
            _ => (4, 4, 0, 0, 0),
        };
        assert_eq!(counts, want_counts, "{month}: paying start/end, new, churned, reactivated");
    }
}

#[tokio::test]
async fn hand_computed_story_through_the_applier_consumer_and_rebuild() {
    let w = world("Europe/Berlin", JUN_15).await;
    let s = story(&w).await;
    // Newest first: every snapshot but the first of each subscription arrives before an
    // older one (the older ones are stale to the mirror, not to the history).
    let mut reversed = s.events.clone();
    reversed.reverse();
    w.deliver(&reversed).await;
    let (rows,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM subscription_history").fetch_one(w.t.db.pool()).await.unwrap();
    assert_eq!(rows, 12, "one history row per snapshot, stale ones included");
    w.consume().await;
    check_months(&w).await;

    // The drill-downs name the customers behind each movement.
    let [a, b, c, d, e] = &s.ids;
    let all = Filter::default();
    let behind = |month: &'static str, movement| {
        let ctx = w.ctx.clone();
        async move {
            mrr::behind(&ctx, m(month), movement, &Filter::default())
                .await
                .unwrap()
                .into_iter()
                .map(|b| (b.customer_id, b.value))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(behind("2026-02", Movement::Churn).await, vec![(b.clone(), 9_900)]);
    assert_eq!(behind("2026-02", Movement::Expansion).await, vec![(a.clone(), 7_000)]);
    assert_eq!(behind("2026-02", Movement::New).await, vec![(d.clone(), 2_900)]);
    assert_eq!(behind("2026-03", Movement::Reactivation).await, vec![(b.clone(), 5_940)]);
    assert_eq!(behind("2026-03", Movement::Contraction).await, vec![(c.clone(), 9_400)]);
    assert_eq!(behind("2026-04", Movement::New).await, vec![(e.clone(), 45_000)]);
    assert_eq!(behind("2026-05", Movement::Expansion).await, vec![(b.clone(), 3_960)]);
    let paying = behind("2026-06", Movement::Paying).await;
    assert_eq!(paying[0], (e.clone(), 45_000));
    assert_eq!(paying.len(), 4);
    let named = mrr::behind(&w.ctx, m("2026-04"), Movement::New, &all).await.unwrap();
    assert_eq!((named[0].name.as_str(), named[0].plan.as_deref()), ("Contract AG", Some("enterprise")));

    // The plan filter narrows to the customers on the plan; its months add up too. In
    // April, Pro: A 99 and B 59.40 steady, C back from the pause plan (5 → 99).
    let pro = Filter { plan: Some("pro".into()), team: None };
    let april = mrr::month(&w.ctx, m("2026-04"), &pro).await.unwrap();
    assert_eq!(
        (april.starting_cents, april.expansion_cents, april.ending_cents, april.paying_end),
        (16_340, 9_400, 25_740, 3)
    );
    assert_eq!(april.by_plan, vec![plan("pro", 3, 25_740)]);
    // The team filter does not narrow MRR.
    let team = Filter { plan: None, team: Some("code".into()) };
    assert_eq!(mrr::month(&w.ctx, m("2026-04"), &team).await.unwrap().ending_cents, 70_740);

    // A rebuild from the history gives the same numbers.
    mrr::rebuild(&w.ctx).await.unwrap();
    check_months(&w).await;

    // History lost (events stored before it existed): the rebuild's backfill restores it
    // from the stored Stripe events, and running it again changes nothing.
    sqlx::query("DELETE FROM subscription_history").execute(w.t.db.pool()).await.unwrap();
    mrr::rebuild(&w.ctx).await.unwrap();
    mrr::rebuild(&w.ctx).await.unwrap();
    let (rows,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM subscription_history").fetch_one(w.t.db.pool()).await.unwrap();
    assert_eq!(rows, 12);
    check_months(&w).await;
}

#[tokio::test]
async fn a_month_not_begun_is_refused_and_a_new_month_is_covered_when_the_clock_reaches_it() {
    let w = world("Europe/Berlin", APR_12 + 3600).await;
    let s = story(&w).await;
    w.deliver(&s.events).await;
    w.consume().await;
    let err = mrr::month(&w.ctx, m("2026-05"), &Filter::default()).await.unwrap_err().to_string();
    assert!(err.starts_with("month: 2026-05 has not begun"), "{err}");
    // April is covered as Stripe's events stood (the later ones already known included).
    let april = mrr::month(&w.ctx, m("2026-04"), &Filter::default()).await.unwrap();
    assert_eq!(april.ending_cents, 70_740);
    // May and June arrive with no event at all: B's discount ends in May all the same.
    w.set_now(JUN_15);
    let may = mrr::month(&w.ctx, m("2026-05"), &Filter::default()).await.unwrap();
    assert_eq!((may.starting_cents, may.expansion_cents, may.ending_cents), (70_740, 3_960, 74_700));
    check_months(&w).await;
}
