//! Applying a Stripe event. Out-of-order delivery is normal, so every object keeps the
//! version (`created` of the event, then its id) of the snapshot it mirrors, and an
//! older snapshot never overwrites a newer one: whatever the delivery order, the mirror
//! ends as the newest event says. The customer's plan and stage are then derived from
//! all of its subscriptions, so they too are independent of the order.

use j1msky_accounts::access;
use j1msky_audit::Actor;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::events::{
    ChargeRefunded, CheckoutOutcome, Kind, SubscriptionCancelled, SubscriptionChange, SubscriptionTrialWillEnd,
    TrialNotice, Typed,
};
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
        "invoice.paid" => crate::invoices::paid(conn, backend, ctx.catalogue, obj, env.created, now).await,
        "invoice.voided" | "invoice.marked_uncollectible" => {
            crate::invoices::given_up(conn, backend, ctx.catalogue, obj, &env.kind, env.created, now).await
        }
        "invoice.payment_failed" => crate::invoices::failed(conn, backend, ctx.catalogue, obj, now).await,
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
        crate::standing::settle_customer(conn, backend, ctx.catalogue, &c, created * 1_000_000, now).await?;
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
        crate::standing::settle_customer(conn, backend, ctx.catalogue, &c, created * 1_000_000, now).await?;
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
    // `amount_refunded` is cumulative: the entry holds the largest seen, whatever the order
    // (compared as money: revenue and the tax share given back with it).
    let refunded = obj["amount_refunded"].as_i64().unwrap_or(0).saturating_neg();
    let (amount, tax) = crate::tax::split_on_charge(conn, backend, id, &format!("{id}:refunded"), refunded).await?;
    let changed = sqlx::query(
        "INSERT INTO revenue_entries (id, source_id, kind, customer_id, amount_cents, tax_cents, currency, occurred_at,
             recorded_at, stripe_customer_id, charge_id)
         VALUES ($1, $2, 'refund', $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (source_id) DO UPDATE SET amount_cents = excluded.amount_cents, tax_cents = excluded.tax_cents,
             occurred_at = excluded.occurred_at
         WHERE excluded.amount_cents + excluded.tax_cents < revenue_entries.amount_cents + revenue_entries.tax_cents",
    )
    .bind(j1msky_core::ids::new_id("rev"))
    .bind(format!("{id}:refunded"))
    .bind(&customer)
    .bind(amount)
    .bind(tax)
    .bind(obj["currency"].as_str().unwrap_or("usd"))
    .bind(created * 1_000_000)
    .bind(now)
    .bind(&stripe_customer)
    .bind(id)
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
