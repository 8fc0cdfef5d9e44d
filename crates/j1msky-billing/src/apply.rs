//! Applying a Stripe event. Out-of-order delivery is normal, so every object keeps the
//! version (`created` of the event, then its id) of the snapshot it mirrors, and an
//! older snapshot never overwrites a newer one: whatever the delivery order, the mirror
//! ends as the newest event says. The customer's plan and stage are then derived from
//! all of its subscriptions, so they too are independent of the order.

use j1msky_accounts::access;
use j1msky_audit::Actor;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::events::{
    ChargeRefunded, CheckoutOutcome, CustomerSubscriptionState, Kind, SubscriptionCancelled, SubscriptionChange,
    SubscriptionTrialWillEnd, TrialNotice, TrialWindow, Typed,
};
use j1msky_core::vocab::Stage;
use j1msky_db::{outbox, Backend};
use serde_json::Value;
use sqlx::AnyConnection;

use crate::refs::{id_of, our_customer, owner};
use crate::BillingError;

/// What applying needs besides the database.
pub struct Ctx<'a> {
    pub catalogue: &'a Catalogue,
}

/// The actor stage changes made from Stripe's events are recorded under.
pub fn actor() -> Actor {
    Actor("stripe".into())
}

pub use crate::refs::version;

/// Every event type [`event`] acts on: the webhook endpoint must be sent each of them
/// (the shipped catalogue's `stripe.webhook_events` lists them, which a test holds to).
pub const APPLIED_EVENTS: &[&str] = &[
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "customer.discount.created",
    "customer.discount.deleted",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "invoice.paid",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "invoice.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "customer.updated",
];

/// Applies one event inside the caller's transaction.
pub async fn event(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx<'_>,
    ev: &Value,
    now: i64,
) -> Result<(), BillingError> {
    let env = crate::refs::envelope(ev)?;
    let obj = &ev["data"]["object"];
    let v = version(env.created, &env.id);
    match env.kind.as_str() {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed"
        | "customer.subscription.trial_will_end" => {
            let short = env.kind.trim_start_matches("customer.");
            // Every call we make to Stripe carries a `j1msky-` idempotency key, which
            // Stripe echoes on the events it causes; anything else is the customer
            // (Customer Portal) or the Stripe dashboard.
            let by_us = ev["request"]["idempotency_key"].as_str().is_some_and(|k| k.starts_with("j1msky-"));
            subscription(conn, backend, ctx, obj, &v, (short, by_us), env.created, now).await
        }
        "customer.discount.created" => discount(conn, obj, &v, false).await,
        "customer.discount.deleted" => discount(conn, obj, &v, true).await,
        "checkout.session.completed"
        | "checkout.session.async_payment_succeeded"
        | "checkout.session.async_payment_failed" => {
            checkout(conn, backend, ctx, obj, &env.kind, env.created, now).await
        }
        "invoice.paid" => crate::invoices::paid(conn, backend, ctx, obj, env.created, now).await,
        "invoice.voided" | "invoice.marked_uncollectible" => {
            crate::invoices::given_up(conn, backend, ctx, obj, &env.kind, env.created, now).await
        }
        "invoice.payment_failed" => crate::invoices::failed(conn, backend, ctx, obj, now).await,
        "charge.refunded" => refund(conn, backend, obj, env.created, now).await,
        // created, updated, closed, funds_withdrawn, funds_reinstated: each carries the dispute.
        kind if kind.starts_with("charge.dispute.") => {
            crate::disputes::apply(conn, backend, ctx.catalogue, obj, &v, env.created, now).await
        }
        "customer.updated" => customer_updated(conn, backend, obj, now).await,
        // Stored and acknowledged; nothing of ours depends on it.
        _ => Ok(()),
    }
}

/// Links a Stripe customer to ours when ours has no link yet; returns whether ours is
/// (now) linked to it.
async fn link(
    conn: &mut AnyConnection,
    backend: Backend,
    customer_id: &str,
    stripe_customer: &str,
    now: i64,
) -> Result<bool, BillingError> {
    if !j1msky_accounts::customer_links::link_stripe(conn, customer_id, stripe_customer, now).await? {
        return Ok(false);
    }
    // What arrived before the link (delivery order is not Stripe's order) joins it now.
    for table in ["subscriptions", "revenue_entries"] {
        sqlx::query(&format!(
            "UPDATE {table} SET customer_id = $1 WHERE stripe_customer_id = $2 AND customer_id IS NULL"
        ))
        .bind(customer_id)
        .bind(stripe_customer)
        .execute(&mut *conn)
        .await?;
    }
    crate::history::join(conn, backend, customer_id, stripe_customer, now).await?;
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
async fn subscription(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx<'_>,
    obj: &Value,
    version: &str,
    (short_kind, by_us): (&str, bool),
    created: i64,
    now: i64,
) -> Result<(), BillingError> {
    let bad = |what: &str| BillingError::Malformed(format!("subscription event: `{what}` missing"));
    let id = obj["id"].as_str().filter(|s| s.starts_with("sub_")).ok_or_else(|| bad("id"))?;
    let stripe_customer = id_of(&obj["customer"]).ok_or_else(|| bad("customer"))?;
    let status = obj["status"].as_str().ok_or_else(|| bad("status"))?;
    // The plan is the item whose price is one of our plans, wherever it is listed
    // (a subscription may carry other items).
    let (index, plan) = crate::history::plan_item(conn, obj).await?;
    let item = &obj["items"]["data"][index];
    let price = &item["price"];
    let period_end = obj["current_period_end"].as_i64().or_else(|| item["current_period_end"].as_i64());
    let period_start = obj["current_period_start"].as_i64().or_else(|| item["current_period_start"].as_i64());
    let coupon = id_of(&obj["discount"]["coupon"]);
    let meta = &obj["metadata"];
    let mut customer_id = our_customer(conn, &stripe_customer).await?;
    let mut linked = false;
    if customer_id.is_none() {
        if let Some(ours) = meta["j1msky_customer"].as_str() {
            if link(conn, backend, ours, &stripe_customer, now).await? {
                customer_id = Some(ours.to_string());
                linked = true;
            }
        }
    }
    let was_cancelling: Option<(i64, String)> =
        sqlx::query_as("SELECT cancel_at_period_end, status FROM subscriptions WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let upserted = sqlx::query(
        "INSERT INTO subscriptions (id, customer_id, stripe_customer_id, status, plan, price_id, current_period_end,
             cancel_at_period_end, trial_end, discount_coupon, paused_from_plan, resume_at, created, version,
             discount_version, updated_at, pending_plan, schedule_id, current_period_start)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16, $17, $18)
         ON CONFLICT (id) DO UPDATE SET customer_id = COALESCE(excluded.customer_id, subscriptions.customer_id),
             stripe_customer_id = excluded.stripe_customer_id, status = excluded.status, plan = excluded.plan,
             price_id = excluded.price_id, current_period_end = excluded.current_period_end,
             current_period_start = excluded.current_period_start, cancel_at_period_end = excluded.cancel_at_period_end, trial_end = excluded.trial_end,
             paused_from_plan = excluded.paused_from_plan, resume_at = excluded.resume_at,
             pending_plan = excluded.pending_plan, schedule_id = excluded.schedule_id,
             created = excluded.created, version = excluded.version, updated_at = excluded.updated_at,
             discount_coupon = CASE WHEN excluded.version > subscriptions.discount_version
                                    THEN excluded.discount_coupon ELSE subscriptions.discount_coupon END,
             discount_version = CASE WHEN excluded.version > subscriptions.discount_version
                                     THEN excluded.version ELSE subscriptions.discount_version END
         WHERE excluded.version > subscriptions.version",
    )
    .bind(id)
    .bind(&customer_id)
    .bind(&stripe_customer)
    .bind(status)
    .bind(&plan)
    .bind(id_of(price))
    .bind(period_end)
    .bind(i64::from(obj["cancel_at_period_end"].as_bool().unwrap_or(false)))
    .bind(obj["trial_end"].as_i64())
    .bind(&coupon)
    .bind(meta["j1msky_paused_from"].as_str())
    .bind(meta["j1msky_resume_at"].as_str().and_then(|s| s.parse::<i64>().ok()))
    .bind(obj["created"].as_i64().unwrap_or(0))
    .bind(version)
    .bind(now)
    .bind(meta["j1msky_downgrade_to"].as_str().filter(|p| Some(*p) != plan.as_deref()))
    .bind(id_of(&obj["schedule"]))
    .bind(period_start)
    .execute(&mut *conn)
    .await?;
    // The snapshot's discount competes with discount events on the same version order
    // (in the upsert above: `discount_version` is never below `version`, so a stale
    // snapshot can never win the discount either).
    let customer_id = match customer_id {
        Some(c) => Some(c),
        None => {
            let row: Option<(Option<String>,)> = sqlx::query_as("SELECT customer_id FROM subscriptions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            row.and_then(|r| r.0)
        }
    };
    // Every snapshot, a stale one too: the history does not depend on delivery order.
    crate::history::record(conn, backend, obj, version, plan.as_deref(), customer_id.as_deref(), created, now).await?;
    let event = Kind::parse(short_kind)
        .ok_or_else(|| BillingError::Malformed(format!("subscription event: no event kind for `{short_kind}`")))?;
    if upserted.rows_affected() == 1 {
        let snapshot = SubscriptionChange {
            subscription: id.into(),
            status: Some(status.into()),
            plan: plan.clone(),
            cancel_at_period_end: obj["cancel_at_period_end"].as_bool(),
            current_period_end: period_end,
            stripe_customer: Some(stripe_customer.clone()),
        };
        let typed = match event {
            Kind::SubscriptionCreated => Typed::SubscriptionCreated(snapshot),
            Kind::SubscriptionUpdated => Typed::SubscriptionUpdated(snapshot),
            Kind::SubscriptionDeleted => Typed::SubscriptionDeleted(snapshot),
            Kind::SubscriptionPaused => Typed::SubscriptionPaused(snapshot),
            Kind::SubscriptionResumed => Typed::SubscriptionResumed(snapshot),
            Kind::SubscriptionTrialWillEnd => {
                Typed::SubscriptionTrialWillEnd(SubscriptionTrialWillEnd::Snapshot(snapshot))
            }
            other => return Err(BillingError::Malformed(format!("subscription event: `{other}` is not one"))),
        };
        outbox::emit_typed(conn, backend, typed, customer_id.as_deref(), now).await?;
        if let Some(c) = cancelled_outside(short_kind, by_us, obj, was_cancelling.as_ref()) {
            let cancelled = SubscriptionCancelled { subscription: id.to_string(), ..c };
            outbox::emit_typed(conn, backend, cancelled, customer_id.as_deref(), now).await?;
        }
    } else if event == Kind::SubscriptionTrialWillEnd {
        // A notice, not only a snapshot: it is news even when a newer snapshot is held.
        let notice = TrialNotice { subscription: id.into(), trial_end: obj["trial_end"].as_i64() };
        outbox::emit_typed(conn, backend, SubscriptionTrialWillEnd::Notice(notice), customer_id.as_deref(), now)
            .await?;
    }
    // A stale snapshot changed no subscription, so the customer's plan and stage stand.
    if let Some(c) = customer_id.filter(|_| linked || upserted.rows_affected() == 1) {
        settle_customer(conn, backend, ctx, &c, created * 1_000_000, now).await?;
    }
    Ok(())
}

async fn set_discount(
    conn: &mut AnyConnection,
    sub: &str,
    coupon: Option<&str>,
    version: &str,
) -> Result<(), BillingError> {
    sqlx::query(
        "UPDATE subscriptions SET discount_coupon = $1, discount_version = $2 WHERE id = $3 AND discount_version < $2",
    )
    .bind(coupon)
    .bind(version)
    .bind(sub)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn discount(conn: &mut AnyConnection, obj: &Value, version: &str, deleted: bool) -> Result<(), BillingError> {
    let Some(sub) = id_of(&obj["subscription"]) else { return Ok(()) }; // a customer-wide discount
    let stripe_customer =
        id_of(&obj["customer"]).ok_or_else(|| BillingError::Malformed("discount event: `customer` missing".into()))?;
    let coupon = if deleted { None } else { id_of(&obj["coupon"]) };
    // The discount may arrive before any snapshot of its subscription: keep a
    // placeholder that any real snapshot overwrites (its version is the empty string).
    sqlx::query(
        "INSERT INTO subscriptions (id, stripe_customer_id, status, cancel_at_period_end, created, version, updated_at)
         VALUES ($1, $2, 'unknown', 0, 0, '', 0) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&sub)
    .bind(&stripe_customer)
    .execute(&mut *conn)
    .await?;
    set_discount(conn, &sub, coupon.as_deref(), version).await
}

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
    ctx: &Ctx<'_>,
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
    let paused_plan = plan.as_deref() == Some(ctx.catalogue.pause_plan.as_str());
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
    let plan = plan.filter(|p| ctx.catalogue.plans.contains_key(p) && status != "incomplete");
    // A failed payment is a billing standing of its own: the stage stays, admission
    // counts the grace period from it. Usage charges left unpaid count too (the worse
    // of the two): a subscription started by a debtor does not wipe its debt's standing.
    let owed = j1msky_tasks::charges::owed_standing(conn, customer_id).await?;
    let failing =
        crate::invoices::worse(matches!(status.as_str(), "past_due" | "unpaid").then_some(status.as_str()), owed);
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
        Some(p) => period_budget(conn, ctx.catalogue, &sub_id, p).await?,
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
    catalogue: &j1msky_core::catalogue::Catalogue,
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

/// `customer.updated`: whether the customer has a default payment method now, which lets
/// a pay-per-task customer without a plan in.
async fn customer_updated(
    conn: &mut AnyConnection,
    backend: Backend,
    obj: &Value,
    now: i64,
) -> Result<(), BillingError> {
    let Some(stripe_customer) = obj["id"].as_str() else { return Ok(()) };
    let Some(ours) = our_customer(conn, stripe_customer).await? else { return Ok(()) };
    let settings = &obj["invoice_settings"];
    if settings.is_object() {
        let on_file = id_of(&settings["default_payment_method"]).is_some();
        access::set_payment_method(conn, backend, &ours, on_file, now).await?;
    }
    Ok(())
}

async fn checkout(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx<'_>,
    obj: &Value,
    kind: &str,
    created: i64,
    now: i64,
) -> Result<(), BillingError> {
    let ours = obj["client_reference_id"].as_str().map(String::from);
    let stripe_customer = id_of(&obj["customer"]);
    if let (Some(ours), Some(sc)) = (&ours, &stripe_customer) {
        if !link(conn, backend, ours, sc, now).await? {
            tracing::warn!(customer = %ours, stripe_customer = %sc, "checkout for a customer linked to another Stripe customer");
        }
    }
    let customer = match (&ours, &stripe_customer) {
        (_, Some(sc)) => our_customer(conn, sc).await?.or(ours.clone()),
        (Some(o), None) => Some(o.clone()),
        (None, None) => None,
    };
    let detail = CheckoutOutcome {
        session: obj["id"].as_str().map(String::from),
        subscription: id_of(&obj["subscription"]),
        payment_status: obj["payment_status"].as_str().map(String::from),
        plan: obj["metadata"]["j1msky_plan"].as_str().map(String::from),
        offer: obj["metadata"]["j1msky_offer"].as_str().map(String::from),
    };
    let outcome = match kind {
        "checkout.session.completed" => Typed::CheckoutCompleted(detail),
        "checkout.session.async_payment_succeeded" => Typed::CheckoutPaymentSucceeded(detail),
        _ => Typed::CheckoutPaymentFailed(detail),
    };
    outbox::emit_typed(conn, backend, outcome, customer.as_deref(), now).await?;
    if let (Some(c), Some(grant)) = (&customer, obj["metadata"]["j1msky_offer_grant"].as_str()) {
        if obj["status"].as_str() == Some("complete") {
            crate::offers::redeemed_by_checkout(conn, c, grant, id_of(&obj["subscription"]).as_deref(), created)
                .await?;
        }
    }
    if let Some(c) = customer {
        settle_customer(conn, backend, ctx, &c, created * 1_000_000, now).await?;
    }
    Ok(())
}

async fn refund(
    conn: &mut AnyConnection,
    backend: Backend,
    obj: &Value,
    created: i64,
    now: i64,
) -> Result<(), BillingError> {
    let id = obj["id"].as_str().ok_or_else(|| BillingError::Malformed("charge: `id` missing".into()))?;
    let (stripe_customer, customer) = owner(conn, obj).await?;
    // `amount_refunded` is cumulative: the entry holds the largest seen, whatever the order.
    let refunded = obj["amount_refunded"].as_i64().unwrap_or(0).saturating_neg();
    let changed = sqlx::query(
        "INSERT INTO revenue_entries (id, source_id, kind, customer_id, amount_cents, currency, occurred_at, recorded_at,
             stripe_customer_id)
         VALUES ($1, $2, 'refund', $3, $4, $5, $6, $7, $8)
         ON CONFLICT (source_id) DO UPDATE SET amount_cents = excluded.amount_cents, occurred_at = excluded.occurred_at
         WHERE excluded.amount_cents < revenue_entries.amount_cents",
    )
    .bind(j1msky_core::ids::new_id("rev"))
    .bind(format!("{id}:refunded"))
    .bind(&customer)
    .bind(refunded)
    .bind(obj["currency"].as_str().unwrap_or("usd"))
    .bind(created * 1_000_000)
    .bind(now)
    .bind(&stripe_customer)
    .execute(&mut *conn)
    .await?;
    if changed.rows_affected() == 1 {
        let event = ChargeRefunded { charge: id.into(), amount_refunded: -refunded, invoice: id_of(&obj["invoice"]) };
        outbox::emit_typed(conn, backend, event, customer.as_deref(), now).await?;
    }
    Ok(())
}

/// A cancellation the customer made outside our own cancel flow: the subscription
/// turned to cancel at its period end, or ended at once without having been set to
/// (an end that follows a scheduled cancellation is not news).
fn cancelled_outside(
    short_kind: &str,
    by_us: bool,
    obj: &Value,
    before: Option<&(i64, String)>,
) -> Option<SubscriptionCancelled> {
    if by_us {
        return None;
    }
    let was_set = before.is_some_and(|(cancel, _)| *cancel != 0);
    let was_over = before.is_some_and(|(_, status)| status == "canceled");
    let at_period_end = match short_kind {
        "subscription.updated" if obj["cancel_at_period_end"].as_bool() == Some(true) && !was_set => true,
        "subscription.deleted" if !was_set && !was_over => false,
        _ => return None,
    };
    Some(SubscriptionCancelled { subscription: String::new(), source: "customer_portal".into(), at_period_end })
}
