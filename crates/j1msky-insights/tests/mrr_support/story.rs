//! The hand-computed MRR story of five customers (upgrade with its prorated invoice, a
//! cancellation and a win-back discount that ends without an event, a pause and resume,
//! a trial, an enterprise contract starting just after midnight in Berlin): Stripe's
//! events as Stripe writes them, and the months worked out by hand in the comments,
//! counted in Europe/Berlin. Shown through the library here, through the board (web) and
//! through `j1msky kpi` (CLI), which include this file.

use j1msky_insights::kpis::{Mrr, PlanMrr};
use serde_json::{json, Value};

use super::{Discount, Item, Snapshot, World};

// Noon UTC on the day named, unless said otherwise.
pub const JAN_03: i64 = 1_767_441_600;
pub const JAN_05: i64 = 1_767_614_400;
pub const JAN_10: i64 = 1_768_046_400;
pub const FEB_01: i64 = 1_769_947_200;
pub const FEB_15: i64 = 1_771_156_800;
pub const FEB_20: i64 = 1_771_588_800;
pub const MAR_05: i64 = 1_772_712_000;
pub const MAR_10: i64 = 1_773_144_000;
/// 2026-03-31 23:30 UTC is 2026-04-01 01:30 in Berlin: an April event.
pub const MAR_31_LATE: i64 = 1_774_999_800;
pub const APR_12: i64 = 1_775_995_200;
pub const APR_20: i64 = 1_776_686_400;
pub const MAY_10: i64 = 1_778_414_400;
pub const JUN_15: i64 = 1_781_524_800;

pub struct Story {
    pub events: Vec<Value>,
    pub ids: [String; 5],
}

pub async fn story(w: &World) -> Story {
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
pub fn mrr_of(
    start: i64,
    new: i64,
    exp: i64,
    contr: i64,
    churn: i64,
    react: i64,
    end: i64,
    by_plan: Vec<PlanMrr>,
) -> Mrr {
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

pub fn plan(plan: &str, customers: i64, cents: i64) -> PlanMrr {
    PlanMrr { plan: plan.into(), customers, cents }
}

/// The hand-computed months (customer counts checked separately).
pub fn expected() -> Vec<(&'static str, Mrr)> {
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

/// Customers paying at the month's start and end, new, churned and reactivated in it.
pub fn expected_counts(month: &str) -> (i64, i64, i64, i64, i64) {
    match month {
        "2026-01" => (0, 3, 3, 0, 0),
        "2026-02" => (3, 3, 1, 1, 0),
        "2026-03" => (3, 4, 0, 0, 1),
        "2026-04" => (4, 4, 1, 1, 0),
        _ => (4, 4, 0, 0, 0),
    }
}

/// A month, its customer churn, gross and net revenue churn (basis points) and ARPA (cents).
pub type Rates = (&'static str, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// The rates derived from the months above (docs/KPIS.md: every division rounded once,
/// to the nearest unit, halves away from zero), as (month, customer churn, gross revenue
/// churn, net revenue churn in basis points, ARPA in cents). January has no paying
/// customer at its start, so no rate; its ARPA is 227.00 ÷ 3.
pub fn expected_rates() -> Vec<Rates> {
    vec![
        ("2026-01", None, None, None, Some(7_567)),
        // 1 of 3 churned; (99 + 0) ÷ 227 = 43.61 %; (99 + 0 − 70 − 0) ÷ 227 = 12.775 %;
        // 227.00 ÷ 3 = 75.6667.
        ("2026-02", Some(3_333), Some(4_361), Some(1_278), Some(7_567)),
        // None of 3; (0 + 94) ÷ 227 = 41.41 %; (94 − 59.40) ÷ 227 = 15.242 %; 192.40 ÷ 4.
        ("2026-03", Some(0), Some(4_141), Some(1_524), Some(4_810)),
        // 1 of 4; 29 ÷ 192.40 = 15.073 %; (29 − 94) ÷ 192.40 = −33.784 %; 707.40 ÷ 4.
        ("2026-04", Some(2_500), Some(1_507), Some(-3_378), Some(17_685)),
        // None of 4; 0 ÷ 707.40; −39.60 ÷ 707.40 = −5.598 %; 747.00 ÷ 4.
        ("2026-05", Some(0), Some(0), Some(-560), Some(18_675)),
        ("2026-06", Some(0), Some(0), Some(0), Some(18_675)),
    ]
}
