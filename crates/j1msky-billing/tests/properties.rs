//! The webhook invariant, as a property: a random history of one subscription's events
//! (snapshots, discount changes, invoices, cumulative refunds), delivered in any order,
//! with duplicates, with forged copies, and applied at any moments in between, ends in
//! exactly the state in-order delivery gives; every forged copy is refused.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_billing::{apply, signature, webhook};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::Stage;
use j1msky_core::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use proptest::prelude::*;
use serde_json::{json, Value};

const SECRET: &str = "whsec_property";
const T0: i64 = 1_800_000_000;

#[derive(Debug, Clone)]
enum Ev {
    Snapshot { status: usize, plan: usize, cancel: bool, coupon: Option<usize> },
    Discount { coupon: Option<usize> },
    Invoice { amount: i64 },
    Refund { amount: i64 },
}

// `incomplete` is left out: at Stripe it is only ever a subscription's first status
// (then active or incomplete_expired), and it leaves the customer's stage as it was.
const STATUSES: [&str; 6] = ["trialing", "active", "past_due", "paused", "canceled", "unpaid"];
const PLANS: [&str; 3] = ["starter", "pro", "paused"];
const COUPONS: [&str; 2] = ["j1msky_win_back_40pct_3m", "j1msky_we_miss_you_20pct_1m"];

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0..STATUSES.len(), 0..PLANS.len(), any::<bool>(), proptest::option::of(0..COUPONS.len()))
            .prop_map(|(status, plan, cancel, coupon)| Ev::Snapshot { status, plan, cancel, coupon }),
        1 => proptest::option::of(0..COUPONS.len()).prop_map(|coupon| Ev::Discount { coupon }),
        1 => (100i64..20_000).prop_map(|amount| Ev::Invoice { amount }),
        1 => (1i64..5_000).prop_map(|amount| Ev::Refund { amount }),
    ]
}

/// Stripe's events for the history: `created` never goes back, often repeats (same
/// second), and ids are random, as Stripe's are.
fn events(history: &[(Ev, i64, u32)], customer: &str) -> Vec<Value> {
    let mut t = T0;
    let mut refunded = 0;
    let mut out = Vec::new();
    for (i, (e, step, salt)) in history.iter().enumerate() {
        t += step;
        let (kind, object) = match e {
            Ev::Snapshot { status, plan, cancel, coupon } => (
                if STATUSES[*status] == "canceled" {
                    "customer.subscription.deleted"
                } else {
                    "customer.subscription.updated"
                },
                json!({"id": "sub_P", "object": "subscription", "customer": "cus_S", "status": STATUSES[*status],
                       "items": {"data": [{"id": "si_1", "price": {"id": format!("price_{}", PLANS[*plan]),
                                 "lookup_key": format!("j1msky_{}_monthly", PLANS[*plan])}}]},
                       "cancel_at_period_end": cancel, "current_period_end": t + 86_400, "created": T0,
                       "discount": coupon.map(|c| json!({"coupon": {"id": COUPONS[c]}})),
                       "metadata": {"j1msky_customer": customer}}),
            ),
            Ev::Discount { coupon: Some(c) } => (
                "customer.discount.created",
                json!({"object": "discount", "coupon": {"id": COUPONS[*c]}, "customer": "cus_S", "subscription": "sub_P"}),
            ),
            Ev::Discount { coupon: None } => (
                "customer.discount.deleted",
                json!({"object": "discount", "coupon": {"id": COUPONS[0]}, "customer": "cus_S", "subscription": "sub_P"}),
            ),
            Ev::Invoice { amount } => (
                "invoice.paid",
                json!({"id": format!("in_{i}"), "object": "invoice", "customer": "cus_S", "subscription": "sub_P",
                       "amount_paid": amount, "currency": "usd", "lines": {"data": [{"price": {"lookup_key": "j1msky_pro_monthly"}}]}}),
            ),
            Ev::Refund { amount } => {
                refunded += amount;
                (
                    "charge.refunded",
                    json!({"id": "ch_1", "object": "charge", "customer": "cus_S", "amount_refunded": refunded, "currency": "usd"}),
                )
            }
        };
        out.push(json!({"id": format!("evt_{salt:08x}{i:03}"), "object": "event", "type": kind, "created": t,
                        "livemode": false, "data": {"object": object}}));
    }
    out
}

/// Everything the events decide, read back.
async fn state(db: &Db, customer: &str) -> Value {
    type Mirror = (String, Option<String>, i64, Option<String>, String);
    let sub: Option<Mirror> = sqlx::query_as(
        "SELECT status, plan, cancel_at_period_end, discount_coupon, version FROM subscriptions WHERE id = 'sub_P'",
    )
    .fetch_optional(db.pool())
    .await
    .expect("sub");
    let c = customers::get(db, customer).await.expect("customer");
    let revenue: Vec<(String, i64, Option<String>)> =
        sqlx::query_as("SELECT source_id, amount_cents, customer_id FROM revenue_entries ORDER BY source_id")
            .fetch_all(db.pool())
            .await
            .expect("rev");
    // Each run has its own customer id: what matters is whether the entry is attached to it.
    let revenue: Vec<(String, i64, bool)> =
        revenue.into_iter().map(|(src, cents, cust)| (src, cents, cust.as_deref() == Some(customer))).collect();
    json!({"sub": sub, "stage": c.stage, "plan": c.plan, "revenue": revenue})
}

struct Delivery {
    body: String,
    forged: bool,
    key: u32,
    apply_after: bool,
}

async fn run(history: &[(Ev, i64, u32)], deliveries_plan: &[(u32, bool, bool, bool)], in_order: bool) -> Value {
    let t = TestDb::new().await;
    let catalogue = Arc::new(Catalogue::from_json_str(SHIPPED).expect("catalogue"));
    let c = customers::create(
        &t.db,
        &catalogue,
        &Actor::cli(),
        NewCustomer { name: "Prop".into(), stage: Some(Stage::Qualified), ..Default::default() },
        T0 * 1_000_000,
    )
    .await
    .expect("customer");
    let evs = events(history, &c.id);
    let mut deliveries = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        let (key, dup, forge, apply_after) = deliveries_plan[i];
        let body = e.to_string();
        deliveries.push(Delivery {
            body: body.clone(),
            forged: false,
            key: if in_order { i as u32 } else { key },
            apply_after,
        });
        if dup && !in_order {
            deliveries.push(Delivery {
                body: body.clone(),
                forged: false,
                key: key.rotate_left(7),
                apply_after: !apply_after,
            });
        }
        if forge && !in_order {
            // A forged copy: the amount or status changed after signing.
            let forged = body.replace("\"active\"", "\"canceled\"").replace("\"amount_paid\":", "\"amount_paid\":9");
            deliveries.push(Delivery { body: forged, forged: true, key: key.rotate_left(13), apply_after });
        }
    }
    deliveries.sort_by_key(|d| d.key);
    let ctx = apply::Ctx { catalogue: &catalogue };
    let now = (T0 + 10) * 1_000_000;
    for d in &deliveries {
        let signed_body = if d.forged { d.body.replace("\"canceled\"", "\"active\"") } else { d.body.clone() };
        // Forged: the signature is of another body (the original); otherwise right.
        let header = signature::header(SECRET, T0 + 10, signed_body.as_bytes());
        let header =
            if d.forged && signed_body == d.body { format!("t={},v1={}", T0 + 10, "0".repeat(64)) } else { header };
        let got = webhook::receive(&t.db, &[SECRET.to_string()], false, Some(&header), d.body.as_bytes(), now).await;
        if d.forged {
            assert!(got.is_err(), "a forged delivery was accepted: {}", d.body);
        } else {
            got.expect("a genuine delivery is accepted");
        }
        if d.apply_after {
            webhook::apply_pending(&t.db, &ctx, 3, now).await.expect("apply");
            j1msky_accounts::reactions::catch_up(&t.db, &ManualClock::new(now)).await.expect("accounts reactions");
        }
    }
    while webhook::apply_pending(&t.db, &ctx, 100, now).await.expect("apply") > 0 {}
    j1msky_accounts::reactions::catch_up(&t.db, &ManualClock::new(now)).await.expect("accounts reactions");
    state(&t.db, &c.id).await
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_with_duplicates_and_forgeries_ends_as_in_order_delivery(
        history in proptest::collection::vec((ev(), 0i64..2, any::<u32>()), 1..14),
        plan in proptest::collection::vec((any::<u32>(), any::<bool>(), any::<bool>(), any::<bool>()), 14),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (expected, shuffled) = rt.block_on(async {
            (run(&history, &plan, true).await, run(&history, &plan, false).await)
        });
        prop_assert_eq!(expected, shuffled);
    }
}

/// A live deployment refuses test-mode events, and a test one live events: a delivery
/// from the other mode's endpoint stores nothing.
#[tokio::test]
async fn each_mode_refuses_the_other_mode_s_events() {
    let t = TestDb::new().await;
    let now = T0 * 1_000_000;
    for (live, livemode) in [(true, false), (false, true)] {
        let body = json!({"id": format!("evt_mode_{livemode}"), "object": "event", "type": "invoice.paid",
                          "created": T0, "livemode": livemode, "data": {"object": {"id": "in_x"}}})
        .to_string();
        let header = signature::header(SECRET, T0, body.as_bytes());
        let err = webhook::receive(&t.db, &[SECRET.to_string()], live, Some(&header), body.as_bytes(), now)
            .await
            .expect_err("the other mode's event");
        assert!(err.to_string().contains("livemode"), "{err}");
        let same = body.replace(&format!("\"livemode\":{livemode}"), &format!("\"livemode\":{live}"));
        let header = signature::header(SECRET, T0, same.as_bytes());
        webhook::receive(&t.db, &[SECRET.to_string()], live, Some(&header), same.as_bytes(), now)
            .await
            .expect("the deployment's own mode is stored");
    }
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM stripe_events").fetch_one(t.db.pool()).await.expect("count");
    assert_eq!(n, 2, "only the events of each deployment's own mode");
}
