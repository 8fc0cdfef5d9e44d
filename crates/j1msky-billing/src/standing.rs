//! A customer's plan, stage and payment standing, derived from all of its subscriptions
//! and its usage invoices, and announced as one ordered `customer.subscription_state`
//! (accounts applies it). The applier of subscription events (`apply`) and of usage
//! invoices (`invoices`) both settle a customer through here.

use j1msky_core::catalogue::Catalogue;
use j1msky_core::events::{CustomerSubscriptionState, TrialWindow};
use j1msky_core::vocab::Stage;
use j1msky_db::{outbox, Backend};
use sqlx::AnyConnection;

use crate::BillingError;

/// How much a subscription status says about the customer, for picking the one that
/// decides the customer's plan and stage.
fn rank(status: &str) -> u8 {
    match status {
        "active" | "past_due" | "unpaid" => 5,
        "trialing" => 4,
        "paused" => 3,
        "incomplete" => 2,
        "canceled" => 1,
        // Never paid: it says nothing about the customer (no churn without a start).
        _ => 0,
    }
}

/// A customer's subscription as `settle_customer` weighs it: status, plan, created (unix
/// seconds), id, trial end, current period start and end (unix seconds).
type SubscriptionRow = (String, Option<String>, i64, String, Option<i64>, Option<i64>, Option<i64>);

/// Derives the customer's plan, stage and payment standing from all of its
/// subscriptions and announces them (`customer.subscription_state`); accounts applies
/// them to the customer (`j1msky_accounts::reactions`). A stage change is dated `at`
/// (Stripe's time of the event that caused it: a reconcile after downtime still dates
/// churn in the month it happened), never later than `now`, when we learnt of it. False
/// when there was nothing to announce (no such customer, no subscription that says
/// anything about it).
pub async fn settle_customer(
    conn: &mut AnyConnection,
    backend: Backend,
    catalogue: &Catalogue,
    customer_id: &str,
    at: i64,
    now: i64,
) -> Result<bool, BillingError> {
    // The customer's row first (locked on PostgreSQL): settlements of one customer's
    // subscriptions then run one after another, and the last (the last event) sees them all.
    let lock = if backend == Backend::Postgres { " FOR UPDATE" } else { "" };
    let row = sqlx::query(&format!("SELECT id FROM customers WHERE id = $1{lock}"))
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?;
    if row.is_none() {
        return Ok(false);
    }
    let subs: Vec<SubscriptionRow> = sqlx::query_as(
        "SELECT status, plan, created, id, trial_end, current_period_start, current_period_end
             FROM subscriptions WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    let Some((status, plan, created, sub_id, trial_end, period_start, period_end)) = subs
        .into_iter()
        .filter(|s| rank(&s.0) > 0)
        .max_by(|a, b| (rank(&a.0), a.2, &a.3).cmp(&(rank(&b.0), b.2, &b.3)))
    else {
        return Ok(false);
    };
    let paused_plan = plan.as_deref() == Some(catalogue.pause_plan.as_str());
    let stage = match status.as_str() {
        "active" | "past_due" | "unpaid" if paused_plan => Some(Stage::Paused),
        "active" | "past_due" | "unpaid" => Some(Stage::Active),
        "trialing" => Some(Stage::Trial),
        "paused" => Some(Stage::Paused),
        "canceled" => Some(Stage::Churned),
        _ => None,
    };
    // An `incomplete` subscription waits for its first payment (a bank debit, a card
    // needing its owner's action): its plan is not in force until the money arrives (it
    // turns `active`), and never when it does not (`incomplete_expired`, ignored above).
    let plan = plan.filter(|p| catalogue.plans.contains_key(p) && status != "incomplete");
    // A failed payment is a billing standing of its own: the stage stays, admission
    // counts the grace period from it. Usage charges left unpaid count too (the worse
    // of the two): a subscription started by a debtor does not wipe its debt's standing.
    let owed = j1msky_tasks::charges::owed_standing(conn, customer_id).await?;
    let failing = worse(matches!(status.as_str(), "past_due" | "unpaid").then_some(status.as_str()), owed);
    // A trial started at Checkout runs from the subscription's start to its trial end.
    let trial = trial_end.filter(|_| status == "trialing").map(|end| TrialWindow {
        started_at: created.saturating_mul(1_000_000),
        ends_at: end.saturating_mul(1_000_000),
    });
    // The period its last invoice paid for: a plan's monthly model budget holds over it
    // too (a trial has its own budget; a pause plan has none).
    let period = match (period_start, period_end) {
        (Some(start), Some(end)) if matches!(status.as_str(), "active" | "past_due" | "unpaid") && !paused_plan => {
            Some(TrialWindow { started_at: start.saturating_mul(1_000_000), ends_at: end.saturating_mul(1_000_000) })
        }
        _ => None,
    };
    let period_budget_micros = match period {
        Some(p) => period_budget(conn, catalogue, &sub_id, p).await?,
        None => None,
    };
    let state = CustomerSubscriptionState {
        period,
        period_budget_micros,
        plan,
        stage: stage.map(|s| s.as_str().to_string()),
        billing_status: failing.map(String::from),
        at: at.min(now),
        subscription_status: Some(status.clone()),
        trial,
    };
    outbox::emit_typed(conn, backend, state, Some(customer_id), now).await?;
    Ok(true)
}

/// The monthly model budget one period paid for: each plan's `monthly_model_budget` for
/// the share of the period it was in force (from the subscription's history), as Stripe
/// prorates an upgrade's price, rounded down. An upgrade a day before the period's end buys
/// a day's share of the difference, not the new plan's whole budget. `None` when a plan of
/// the period has no budget (or is not in the catalogue): the plan's own rule applies.
async fn period_budget(
    conn: &mut AnyConnection,
    catalogue: &Catalogue,
    subscription: &str,
    period: TrialWindow,
) -> Result<Option<i64>, BillingError> {
    let changes: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT plan, effective_at FROM subscription_history
         WHERE subscription_id = $1 AND effective_at < $2 ORDER BY version",
    )
    .bind(subscription)
    .bind(period.ends_at)
    .fetch_all(&mut *conn)
    .await?;
    let budget = |plan: &Option<String>| {
        plan.as_deref().and_then(|p| catalogue.plans.get(p)).and_then(|p| p.monthly_model_budget).map(|m| m.micros())
    };
    // The plan in force at the period's start: the last snapshot at or before it (the
    // first one when the history starts inside the period).
    let Some(first) = changes.iter().rposition(|c| c.1 <= period.started_at).or((!changes.is_empty()).then_some(0))
    else {
        return Ok(None);
    };
    let length = i128::from((period.ends_at - period.started_at).max(1));
    let mut total: i128 = 0;
    let mut i = first;
    while i < changes.len() {
        let from = changes[i].1.max(period.started_at);
        let to = changes.get(i + 1).map_or(period.ends_at, |c| c.1.max(period.started_at));
        let Some(b) = budget(&changes[i].0) else { return Ok(None) };
        total += i128::from(b) * i128::from((to - from).max(0));
        i += 1;
    }
    Ok(i64::try_from(total / length).ok())
}

/// A customer's payment standing after its usage invoices changed: one with a
/// subscription is settled again ([`settle_customer`]: the worse of its
/// subscription's standing and what its usage invoices say, `charges::owed_standing`),
/// so every change of a subscriber's standing is one ordered `customer.subscription_state`
/// and a later one never loses to an earlier one applied after it; one without is
/// recorded here (`access::set_billing_status`: `past_due` starts the grace period,
/// `unpaid` restricts). A subscription never pays a usage debt off.
pub(crate) async fn owed_standing(
    conn: &mut AnyConnection,
    backend: Backend,
    catalogue: &Catalogue,
    customer: &str,
    now: i64,
) -> Result<(), BillingError> {
    if settle_customer(conn, backend, catalogue, customer, now, now).await? {
        return Ok(());
    }
    let standing = j1msky_tasks::charges::owed_standing(conn, customer).await?;
    let actor = j1msky_audit::Actor("stripe".into());
    j1msky_accounts::access::set_billing_status(conn, backend, &actor, customer, standing, now).await?;
    Ok(())
}

/// The worse of two payment standings: `unpaid` (restricted) over `past_due` (in its
/// grace period) over none.
pub(crate) fn worse<'a>(a: Option<&'a str>, b: Option<&'a str>) -> Option<&'a str> {
    let weight = |s: Option<&str>| match s {
        Some("unpaid") => 2,
        Some(_) => 1,
        None => 0,
    };
    if weight(b) > weight(a) {
        b
    } else {
        a
    }
}
