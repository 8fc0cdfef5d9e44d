// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! MRR and its movements on a hand-computed story of five customers, Stripe's events
//! delivered newest first through billing's real webhook store and applier, the months
//! counted in Europe/Berlin. The numbers below are worked out by hand in the comments.

use crate::mrr_support;

use j1msky_insights::kpis::{Filter, Mrr};
use j1msky_insights::mrr::{self, Movement};
use j1msky_insights::Month;
use mrr_support::story::*;
use mrr_support::{world, World};

fn m(text: &str) -> Month {
    Month::parse(text).unwrap()
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
        let want_counts = expected_counts(month);
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
        sqlx::query_as("SELECT COUNT(*) FROM subscription_history").fetch_one(w.db.pool()).await.unwrap();
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
    sqlx::query("DELETE FROM subscription_history").execute(w.db.pool()).await.unwrap();
    mrr::rebuild(&w.ctx).await.unwrap();
    mrr::rebuild(&w.ctx).await.unwrap();
    let (rows,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM subscription_history").fetch_one(w.db.pool()).await.unwrap();
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
