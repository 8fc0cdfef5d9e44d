//! `accounts.subscription_state`: the plan, stage and payment standing billing derives
//! from Stripe applied to the customer, in order and once, by two runners with separate
//! pools over one database (PostgreSQL when the run asks for it).
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_accounts::reactions;
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::Stage;
use j1msky_core::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_db::{outbox, Db};

const T0: i64 = 1_790_000_000_000_000;

/// (plan, stage, billing status) in the order Stripe's events said them.
const STATES: &[(&str, &str, Option<&str>)] = &[
    ("pro", "active", None),
    ("starter", "active", Some("past_due")),
    ("starter", "paused", None),
    ("pro", "active", None),
    ("pro", "churned", None),
];

async fn announce(db: &Db, customer: &str, (plan, stage, billing): (&str, &str, Option<&str>), at: i64) {
    let mut tx = db.begin().await.expect("begin");
    let state = j1msky_core::events::CustomerSubscriptionState {
        plan: Some(plan.into()),
        stage: Some(stage.into()),
        billing_status: billing.map(String::from),
        at,
        subscription_status: None,
        trial: None,
        period: None,
        period_budget_micros: None,
    };
    outbox::emit_typed(&mut tx, db.backend(), state, Some(customer), at).await.expect("emit");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn two_runners_apply_every_customer_state_once_and_in_order() {
    let t = TestDb::new().await;
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    let mut ids = Vec::new();
    for i in 0..6 {
        let input = NewCustomer {
            name: format!("C{i}"),
            plan: Some("starter".into()),
            stage: Some(Stage::Trial),
            ..Default::default()
        };
        ids.push(customers::create(&t.db, &catalogue, &Actor::cli(), input, T0).await.expect("customer").id);
    }
    let pools = [Db::open(&t.url).await.expect("pool a"), Db::open(&t.url).await.expect("pool b")];
    let clock = ManualClock::new(T0 + 1);
    for (step, state) in STATES.iter().enumerate() {
        for id in &ids {
            announce(&t.db, id, *state, T0 + 10 + step as i64).await;
        }
        let run = |db: Db| {
            let clock = clock.clone();
            async move { reactions::catch_up(&db, &clock).await.expect("consumers") }
        };
        let (a, b) = tokio::join!(run(pools[0].clone()), run(pools[1].clone()));
        assert!(a + b >= ids.len(), "step {step}: every state handled ({a} + {b})");
    }
    for id in &ids {
        let c = customers::get(&t.db, id).await.expect("customer");
        assert_eq!((c.stage, c.plan.as_deref()), (Stage::Churned, Some("pro")), "{id}");
        let stages: Vec<(Option<String>, String)> = sqlx::query_as(
            "SELECT from_stage, to_stage FROM customer_stage_changes WHERE customer_id = $1 AND actor = 'stripe'
             ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(t.db.pool())
        .await
        .expect("history");
        let expected = [("trial", "active"), ("active", "paused"), ("paused", "active"), ("active", "churned")];
        let got: Vec<(&str, &str)> = stages.iter().map(|(f, to)| (f.as_deref().unwrap_or("-"), to.as_str())).collect();
        assert_eq!(got, expected, "{id}: each change once, in order");
        let plan_changes: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = 'customer.plan_changed' AND customer_id = $1")
                .bind(id)
                .fetch_one(t.db.pool())
                .await
                .expect("count");
        assert_eq!(plan_changes, 3, "{id}: starter→pro→starter→pro");
    }
}
