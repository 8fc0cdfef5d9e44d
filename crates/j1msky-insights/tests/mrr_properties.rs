// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! MRR over random histories (seeded): many customers and subscriptions, snapshots
//! delivered in any order in chunks while the clock moves on, discounts that end,
//! pauses, cancels, trials, reactivations, Stripe customers linked late or never.
//! For every month and plan filter: the rollup equals a recomputation written here from
//! the generated events alone, starting + movements = ending, and the rollups the
//! consumer kept equal a `rebuild()`.

use crate::mrr_support;

use j1msky_insights::kpis::{Filter, Mrr};
use j1msky_insights::mrr::{self, Movement};
use j1msky_insights::Month;
use mrr_support::{world, Discount, Item, Snapshot, World};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// 2025-01-01 00:00 UTC.
const T0: i64 = 1_735_689_600;
const DAY: i64 = 86_400;
const SPAN_DAYS: i64 = 300;
const PLANS: [(&str, i64); 3] = [("starter", 2900), ("pro", 9900), ("paused", 500)];
const STATUSES: [&str; 11] = [
    "active",
    "active",
    "active",
    "active",
    "past_due",
    "trialing",
    "canceled",
    "paused",
    "unpaid",
    "incomplete",
    "active",
];

struct Gen {
    snaps: Vec<Snapshot>,
    /// (our id, Stripe id, linked at all)
    customers: Vec<(String, String, bool)>,
}

async fn generate(w: &World, rng: &mut StdRng, seed: u64) -> Gen {
    let mut snaps = Vec::new();
    let mut customers = Vec::new();
    let mut n = 0u32;
    for i in 0..rng.gen_range(3..8) {
        let ours = w.customer(&format!("Customer {seed}-{i}")).await;
        let stripe = format!("cus_S{seed}x{i}");
        // 0: every snapshot names ours; 1: only some (linked late); 2: never linked.
        let policy = rng.gen_range(0..3);
        let mut linked = false;
        for s in 0..rng.gen_range(1..4) {
            let sub = format!("sub_{seed}x{i}x{s}");
            for _ in 0..rng.gen_range(1..7) {
                n += 1;
                // Coarse times: snapshots often share a second (then the event id orders them).
                let created = T0 + rng.gen_range(0..SPAN_DAYS) * DAY + rng.gen_range(0..3) * 43_200;
                let (plan, cents) = PLANS[rng.gen_range(0..PLANS.len())];
                let mut item = Item::plan(plan, cents);
                item.quantity = rng.gen_range(1..4);
                if rng.gen_bool(0.2) {
                    item.interval = "year";
                    item.cents = cents * 10 + rng.gen_range(0..13);
                }
                let mut items = vec![item];
                if rng.gen_bool(0.3) {
                    items.push(Item {
                        metered: true,
                        lookup_key: "j1msky_payg_per_task".into(),
                        ..Item::plan("payg", 50)
                    });
                }
                let end = Some(T0 + rng.gen_range(0..SPAN_DAYS + 60) * DAY);
                let discount = match rng.gen_range(0..6) {
                    0 => Some(Discount::Percent { percent: [10.0, 25.0, 33.33, 40.0, 100.0][n as usize % 5], end }),
                    1 => Some(Discount::Percent { percent: 40.0, end: None }),
                    2 => Some(Discount::AmountOff { cents: 100 * (n as i64 % 40), end }),
                    _ => None,
                };
                let named = match policy {
                    0 => true,
                    1 => rng.gen_bool(0.3),
                    _ => false,
                };
                linked |= named;
                snaps.push(Snapshot {
                    event: format!("evt_{:08x}{n:05}", rng.gen::<u32>()),
                    created,
                    subscription: sub.clone(),
                    stripe_customer: stripe.clone(),
                    status: STATUSES[rng.gen_range(0..STATUSES.len())],
                    items,
                    discount,
                    ours: named.then(|| ours.clone()),
                });
            }
        }
        customers.push((ours, stripe, linked));
    }
    Gen { snaps, customers }
}

// ---- The oracle: MRR straight from the generated snapshots, written without the crate's rules.

fn half_up(num: i64, den: i64) -> i64 {
    (2 * num + den) / (2 * den)
}

/// (monthly amount, the fixed discount per month) of a snapshot.
fn monthly(s: &Snapshot) -> (i64, Option<i64>) {
    let mut amount = 0;
    let mut first_den = None;
    for it in s.items.iter().filter(|i| !i.metered) {
        let den = if it.interval == "year" { 12 } else { 1 };
        amount += half_up(it.cents * it.quantity, den);
        first_den.get_or_insert(den);
    }
    let off = match &s.discount {
        Some(Discount::AmountOff { cents, .. }) => Some(half_up(*cents, first_den.unwrap_or(1))),
        _ => None,
    };
    (amount, off)
}

fn value(s: &Snapshot, t: i64) -> i64 {
    if !matches!(s.status, "active" | "past_due") {
        return 0;
    }
    let (amount, off) = monthly(s);
    let (end, pct) = match &s.discount {
        Some(Discount::Percent { percent, end }) => (*end, Some((percent * 100.0).round() as i64)),
        Some(Discount::AmountOff { end, .. }) => (*end, None),
        None => return amount,
    };
    if end.is_some_and(|e| t >= e * 1_000_000) {
        return amount;
    }
    let net = amount - pct.map_or(0, |bp| half_up(amount * bp, 10_000)) - off.unwrap_or(0);
    net.max(0)
}

/// A customer's MRR at `t` and the plan of its largest paying subscription (ties: the
/// first subscription by id).
fn at<'a>(snaps: &[&'a Snapshot], t: i64) -> (i64, Option<&'a str>) {
    let mut subs: Vec<&str> = snaps.iter().map(|s| s.subscription.as_str()).collect();
    subs.sort();
    subs.dedup();
    let (mut total, mut best) = (0, None::<(i64, &str)>);
    for sub in subs {
        let latest = snaps
            .iter()
            .filter(|s| s.subscription == sub && s.created * 1_000_000 <= t)
            .max_by(|a, b| (a.created, &a.event).cmp(&(b.created, &b.event)));
        if let Some(s) = latest {
            let v = value(s, t);
            total += v;
            if v > 0 && best.is_none_or(|(b, _)| v > b) {
                let plan = s.items[0].lookup_key.trim_start_matches("j1msky_").trim_end_matches("_monthly");
                best = Some((v, plan));
            }
        }
    }
    (total, best.map(|b| b.1))
}

fn expected(g: &Gen, tz: chrono_tz::Tz, months: &[Month], plan: Option<&str>) -> Vec<Mrr> {
    let mut out: Vec<Mrr> = months.iter().map(|_| Mrr { currency: "usd".into(), ..Mrr::default() }).collect();
    for (ours, stripe, _) in &g.customers {
        let snaps: Vec<&Snapshot> = g.snaps.iter().filter(|s| &s.stripe_customer == stripe).collect();
        let _ = ours;
        // The first instant it paid: MRR only changes at a snapshot or a discount's end.
        let mut instants: Vec<i64> = snaps.iter().map(|s| s.created * 1_000_000).collect();
        for s in &snaps {
            if let Some(Discount::Percent { end: Some(e), .. } | Discount::AmountOff { end: Some(e), .. }) = &s.discount
            {
                instants.push(e * 1_000_000);
            }
        }
        instants.sort();
        let first_paid = instants.into_iter().find(|t| at(&snaps, *t).0 > 0);
        for (i, m) in months.iter().enumerate() {
            let (start, end) = m.bounds(tz);
            let (s, sp) = at(&snaps, start - 1);
            let (e, ep) = at(&snaps, end - 1);
            if s == 0 && e == 0 {
                continue;
            }
            let row_plan = if e > 0 { ep } else { sp }.unwrap_or("");
            if plan.is_some_and(|p| p != row_plan) {
                continue;
            }
            let o = &mut out[i];
            o.starting_cents += s;
            o.ending_cents += e;
            o.paying_start += i64::from(s > 0);
            o.paying_end += i64::from(e > 0);
            if s == 0 && first_paid.is_some_and(|f| f < start) {
                o.reactivation_cents += e;
                o.reactivated_customers += 1;
            } else if s == 0 {
                o.new_cents += e;
                o.new_customers += 1;
            } else if e == 0 {
                o.churn_cents += s;
                o.churned_customers += 1;
            } else if e > s {
                o.expansion_cents += e - s;
            } else {
                o.contraction_cents += s - e;
            }
        }
    }
    out
}

async fn rollups(w: &World) -> (Vec<(String, String, i64, i64, String, String)>, Vec<Vec<i64>>) {
    let rows: Vec<(String, String, i64, i64, String, String)> = sqlx::query_as(
        "SELECT month, customer_key, starting_cents, ending_cents, movement, plan FROM insights_mrr_customer_months
         ORDER BY month, customer_key",
    )
    .fetch_all(w.db.pool())
    .await
    .unwrap();
    type Sums = (String, String, i64, i64, i64, i64, i64, i64, i64, i64, i64);
    let totals: Vec<Sums> = sqlx::query_as(
        "SELECT month, plan, starting_cents, new_cents, expansion_cents, contraction_cents, churn_cents,
             reactivation_cents, ending_cents, paying_start, paying_end FROM insights_mrr_months ORDER BY month, plan",
    )
    .fetch_all(w.db.pool())
    .await
    .unwrap();
    // A sum the consumer brought back to zero may stay as a row of zeros.
    let totals = totals
        .into_iter()
        .map(|t| vec![t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9, t.10])
        .filter(|v| v.iter().any(|x| *x != 0))
        .collect();
    (rows, totals)
}

async fn one_history(seed: u64, seen: &mut [i64; 5]) {
    let mut rng = StdRng::seed_from_u64(seed);
    let zone = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"][seed as usize % 4];
    let w = world(zone, T0).await;
    let g = generate(&w, &mut rng, seed).await;
    let mut events: Vec<_> = g.snaps.iter().map(Snapshot::event).collect();
    events.shuffle(&mut rng);
    // Delivered in chunks while the clock moves through the months (new months are
    // covered as the clock reaches them); some events are of months still to come.
    let chunks = rng.gen_range(1..5);
    let per = events.len().div_ceil(chunks);
    for (i, chunk) in events.chunks(per).enumerate() {
        w.set_now(T0 + (SPAN_DAYS * DAY) * (i as i64 + 1) / chunks as i64);
        w.deliver(chunk).await;
        w.consume().await;
    }
    w.set_now(T0 + (SPAN_DAYS + 45) * DAY);
    w.consume().await;
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let months = Month::of(tz, T0 * 1_000_000 - 1).through(w.ctx.this_month());
    for plan in [None, Some("starter"), Some("pro"), Some("paused")] {
        let filter = Filter { plan: plan.map(String::from), team: None };
        let want = expected(&g, tz, &months, plan);
        for (m, want) in months.iter().zip(want) {
            let got = mrr::month(&w.ctx, *m, &filter).await.unwrap();
            assert_eq!(
                got.starting_cents + got.new_cents + got.expansion_cents + got.reactivation_cents
                    - got.contraction_cents
                    - got.churn_cents,
                got.ending_cents,
                "seed {seed} {m} {plan:?}: starting + movements = ending"
            );
            // The drill-downs add up to their tiles.
            for (movement, cents, customers) in [
                (Movement::Paying, got.ending_cents, Some(got.paying_end)),
                (Movement::New, got.new_cents, Some(got.new_customers)),
                (Movement::Expansion, got.expansion_cents, None),
                (Movement::Contraction, got.contraction_cents, None),
                (Movement::Churn, got.churn_cents, Some(got.churned_customers)),
                (Movement::Reactivation, got.reactivation_cents, Some(got.reactivated_customers)),
            ] {
                let rows = mrr::behind(&w.ctx, *m, movement, &filter).await.unwrap();
                let sum: i64 = rows.iter().map(|b| b.value).sum();
                assert_eq!(sum, cents, "seed {seed} {m} {plan:?}: behind {movement:?}");
                if let Some(n) = customers {
                    assert_eq!(rows.len() as i64, n, "seed {seed} {m} {plan:?}: customers behind {movement:?}");
                }
            }
            let got = Mrr { by_plan: Vec::new(), ..got };
            if plan.is_none() {
                for (n, v) in seen.iter_mut().zip([
                    got.new_cents,
                    got.expansion_cents,
                    got.contraction_cents,
                    got.churn_cents,
                    got.reactivation_cents,
                ]) {
                    *n += i64::from(v > 0);
                }
            }
            assert_eq!(got, want, "seed {seed} ({zone}) {m} plan {plan:?}");
        }
    }
    let kept = rollups(&w).await;
    mrr::rebuild(&w.ctx).await.unwrap();
    let rebuilt = rollups(&w).await;
    assert_eq!(kept.0, rebuilt.0, "seed {seed}: customer months kept by the consumer = rebuild");
    assert_eq!(kept.1, rebuilt.1, "seed {seed}: month sums kept by the consumer = rebuild");
}

#[tokio::test]
async fn random_histories_add_up_match_a_recomputation_and_the_rebuild() {
    let seeds: u64 = std::env::var("J1MSKY_MRR_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let mut seen = [0i64; 5];
    for seed in 0..seeds {
        one_history(seed, &mut seen).await;
    }
    // The histories exercised every movement (months with new, expansion, contraction,
    // churn, reactivation).
    assert!(seeds < 8 || seen.iter().all(|n| *n >= 3), "movements seen: {seen:?}");
    println!("months with new, expansion, contraction, churn, reactivation: {seen:?}");
}
