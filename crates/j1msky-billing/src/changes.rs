//! Self-serve plan changes on a live subscription: upgrade (now, prorated), downgrade (at
//! the period end, through a subscription schedule, so nobody keeps Pro quota for a
//! Starter price), pause (swap to the $5 pause plan until a resume date), resume, and
//! cancel at the period end. Each call is idempotent at Stripe (keys derived from the
//! subscription's current version), and its effect reaches us through the webhooks.

use j1msky_core::catalogue::Catalogue;
use j1msky_db::Db;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::{sync, BillingError, Stripe};

/// The mirror of a customer's current subscription.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Current {
    pub id: String,
    pub status: String,
    pub plan: Option<String>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub discount_coupon: Option<String>,
    pub paused_from_plan: Option<String>,
    pub resume_at: Option<i64>,
    pub pending_plan: Option<String>,
    pub schedule_id: Option<String>,
    pub version: String,
}

/// The customer's newest subscription that has not ended.
pub async fn current(db: &Db, customer_id: &str) -> Result<Option<Current>, BillingError> {
    let row = sqlx::query(
        "SELECT id, status, plan, current_period_end, cancel_at_period_end, discount_coupon, paused_from_plan,
                resume_at, pending_plan, schedule_id, version
         FROM subscriptions WHERE customer_id = $1 AND status NOT IN ('canceled', 'incomplete_expired', 'unknown')
         ORDER BY created DESC, id DESC LIMIT 1",
    )
    .bind(customer_id)
    .fetch_optional(db.pool())
    .await?;
    let Some(r) = row else { return Ok(None) };
    let cancel: i64 = r.try_get(4)?;
    Ok(Some(Current {
        id: r.try_get(0)?,
        status: r.try_get(1)?,
        plan: r.try_get(2)?,
        current_period_end: r.try_get(3)?,
        cancel_at_period_end: cancel != 0,
        discount_coupon: r.try_get(5)?,
        paused_from_plan: r.try_get(6)?,
        resume_at: r.try_get(7)?,
        pending_plan: r.try_get(8)?,
        schedule_id: r.try_get(9)?,
        version: r.try_get(10)?,
    }))
}

async fn live(db: &Db, customer_id: &str) -> Result<Current, BillingError> {
    current(db, customer_id).await?.ok_or_else(|| {
        BillingError::invalid("subscription", "no active subscription: subscribe through checkout first")
    })
}

async fn price_of(db: &Db, plan: &str) -> Result<String, BillingError> {
    sync::stored_id(db, &format!("price:{plan}"))
        .await?
        .ok_or_else(|| BillingError::Config(format!("no Stripe price for `{plan}`: run `j1msky stripe sync` first")))
}

fn plan_checked<'a>(catalogue: &'a Catalogue, plan: &str) -> Result<&'a j1msky_core::catalogue::Plan, BillingError> {
    catalogue.plans.get(plan).ok_or_else(|| {
        let known = catalogue.plans.keys().cloned().collect::<Vec<_>>().join(", ");
        BillingError::invalid("plan", format!("unknown plan `{plan}`; plans are: {known}"))
    })
}

/// How a change that is invoiced at once (an upgrade, a resume) is paid: the new price
/// holds only if the invoice is paid now. Stripe's default (`allow_incomplete`) would put
/// the dearer plan in force with its invoice unpaid (the subscription `past_due`), and
/// its grace period would give that plan away; with this, a declined card is a 402 the
/// customer sees and the subscription stays as it was.
pub(crate) const PAY_NOW: &str = "error_if_incomplete";

/// Swaps the subscription's price; the item id comes from Stripe's own copy. `pay_now`:
/// an invoiced change holds only if paid at once ([`PAY_NOW`]).
async fn swap(
    stripe: &Stripe,
    sub: &Current,
    price: &str,
    proration: &str,
    pay_now: bool,
    metadata: Value,
    key: &str,
) -> Result<Value, BillingError> {
    swap_with(stripe, sub, price, proration, pay_now, false, metadata, key).await
}

/// [`swap`], starting a new billing period now when `new_period` (Stripe's
/// `billing_cycle_anchor=now`: the new price's whole period invoiced at once, the unused
/// part of the old price's credited).
#[allow(clippy::too_many_arguments)]
async fn swap_with(
    stripe: &Stripe,
    sub: &Current,
    price: &str,
    proration: &str,
    pay_now: bool,
    new_period: bool,
    metadata: Value,
    key: &str,
) -> Result<Value, BillingError> {
    let remote = stripe.get(&format!("subscriptions/{}", sub.id), &Value::Null).await?;
    let item = remote["items"]["data"][0]["id"]
        .as_str()
        .ok_or_else(|| BillingError::Malformed(format!("subscription {} has no item", sub.id)))?;
    let mut params =
        json!({"items": [{"id": item, "price": price}], "proration_behavior": proration, "metadata": metadata});
    if pay_now {
        params["payment_behavior"] = json!(PAY_NOW);
    }
    if new_period {
        params["billing_cycle_anchor"] = json!("now");
    }
    stripe.post(&format!("subscriptions/{}", sub.id), &params, key).await
}

/// Drops a pending downgrade's schedule, if any.
pub(crate) async fn release(stripe: &Stripe, sub: &Current) -> Result<(), BillingError> {
    if let Some(s) = &sub.schedule_id {
        stripe.post(&format!("subscription_schedules/{s}/release"), &json!({}), &format!("j1msky-release-{s}")).await?;
    }
    Ok(())
}

/// Moves to a dearer plan now; the difference for the rest of the period is invoiced and
/// must be paid at once ([`PAY_NOW`]): a declined card leaves the plan as it was.
pub async fn upgrade(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    plan: &str,
    now: i64,
) -> Result<(), BillingError> {
    let (sub, price) = upgrade_checked(db, stripe, catalogue, customer_id, plan).await?;
    release(stripe, &sub).await?;
    let key = format!("j1msky-upgrade-{}-{plan}-{}-{}", sub.id, sub.version, attempt(now));
    swap(stripe, &sub, &price, "always_invoice", true, json!({"j1msky_downgrade_to": ""}), &key).await?;
    Ok(())
}

/// The part of an idempotency key that tells a deliberate second attempt from a retried
/// click: the minute. Stripe keeps a declined card's 402 under its key, so a customer who
/// fixes their card and tries again a minute later must send a new key.
pub(crate) fn attempt(now: i64) -> i64 {
    now.div_euclid(60_000_000)
}

/// The checks of an upgrade to `plan`: the live subscription and the target's price.
pub(crate) async fn upgrade_checked(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    plan: &str,
) -> Result<(Current, String), BillingError> {
    let target = plan_checked(catalogue, plan)?;
    let sub = live(db, customer_id).await?;
    let from = sub.plan.as_deref().and_then(|p| catalogue.plans.get(p));
    if sub.plan.as_deref() == Some(catalogue.pause_plan.as_str()) {
        return Err(BillingError::invalid("plan", "the subscription is paused: resume it first"));
    }
    if from.is_some_and(|f| f.monthly_price >= target.monthly_price) {
        return Err(BillingError::invalid(
            "plan",
            format!("{} is not dearer than the current plan: downgrade instead", target.name),
        ));
    }
    let price = crate::contracts::price_for(db, stripe, catalogue, customer_id, plan, target).await?;
    Ok((sub, price))
}

/// Moves to a cheaper plan at the end of the period (a two-phase subscription schedule).
pub async fn downgrade(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    plan: &str,
) -> Result<(), BillingError> {
    let target = plan_checked(catalogue, plan)?;
    if plan == catalogue.pause_plan {
        return Err(BillingError::invalid("plan", "to pay the pause price, pause instead"));
    }
    let sub = live(db, customer_id).await?;
    let from = sub.plan.as_deref().and_then(|p| catalogue.plans.get(p));
    if from.is_none_or(|f| f.monthly_price <= target.monthly_price) {
        return Err(BillingError::invalid(
            "plan",
            format!("{} is not cheaper than the current plan: upgrade instead", target.name),
        ));
    }
    if target.custom_limits {
        return Err(BillingError::invalid("plan", format!("{} is sold by contract: ask us for one", target.name)));
    }
    // Until the period ends the customer pays what they pay now: a contract's own price.
    let (from_id, from) =
        sub.plan.as_deref().zip(from).ok_or_else(|| BillingError::invalid("plan", "no current plan"))?;
    let current_price = crate::contracts::price_for(db, stripe, catalogue, customer_id, from_id, from).await?;
    let price = price_of(db, plan).await?;
    let schedule = match &sub.schedule_id {
        Some(s) => s.clone(),
        None => {
            let key = format!("j1msky-schedule-{}-{}", sub.id, sub.version);
            let made = stripe.post("subscription_schedules", &json!({"from_subscription": sub.id}), &key).await?;
            made["id"].as_str().ok_or_else(|| BillingError::Malformed("schedule without id".into()))?.to_string()
        }
    };
    let remote = stripe.get(&format!("subscription_schedules/{schedule}"), &Value::Null).await?;
    let start = remote["phases"][0]["start_date"].clone();
    let params = json!({
        "end_behavior": "release",
        "proration_behavior": "none",
        "phases": [
            {"items": [{"price": current_price, "quantity": 1}], "start_date": start, "end_date": sub.current_period_end},
            {"items": [{"price": price, "quantity": 1}], "iterations": 1},
        ],
    });
    stripe
        .post(&format!("subscription_schedules/{schedule}"), &params, &format!("j1msky-downgrade-{schedule}-{plan}"))
        .await?;
    let meta = json!({"metadata": {"j1msky_downgrade_to": plan}});
    stripe
        .post(&format!("subscriptions/{}", sub.id), &meta, &format!("j1msky-downgrade-note-{}-{plan}", sub.id))
        .await?;
    Ok(())
}

/// The timer kind of a paused subscription's resume (run by the billing timers).
pub const RESUME_TIMER: &str = "billing.resume";

/// Pauses: the pause plan's price from now, the plan to return to and the date kept.
pub async fn pause(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    resume_at_secs: i64,
    now_secs: i64,
) -> Result<(), BillingError> {
    let sub = live(db, customer_id).await?;
    let from = sub.plan.clone().unwrap_or_default();
    if from == catalogue.pause_plan {
        return Err(BillingError::invalid("subscription", "already paused"));
    }
    if !(now_secs + 86_400..=now_secs + 366 * 86_400).contains(&resume_at_secs) {
        return Err(BillingError::invalid("resume_at", "the resume date must be between tomorrow and a year from now"));
    }
    release(stripe, &sub).await?;
    let price = price_of(db, &catalogue.pause_plan).await?;
    let meta =
        json!({"j1msky_paused_from": from, "j1msky_resume_at": resume_at_secs.to_string(), "j1msky_downgrade_to": ""});
    swap(stripe, &sub, &price, "none", false, meta, &format!("j1msky-pause-{}-{}", sub.id, sub.version)).await?;
    schedule_resume(db, &sub.id, customer_id, resume_at_secs, now_secs.saturating_mul(1_000_000)).await?;
    Ok(())
}

/// Resumes a paused subscription on the plan it was paused from, as a new billing period
/// from now: that plan's whole month is invoiced at once (the unused part of the pause
/// price credited). Prorating only the rest of the paused period let a customer pause for
/// good at the pause price and resume for the last days of each period, paying a few
/// days' difference for a month's full allowance. `asked_at`: when the customer asked for it, so it is
/// paid at once or not done ([`PAY_NOW`]); `None` when its resume date came, which is
/// billed like a renewal (a declined card starts the dunning and its grace period).
pub async fn resume(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    asked_at: Option<i64>,
) -> Result<(), BillingError> {
    let sub = live(db, customer_id).await?;
    if sub.plan.as_deref() != Some(catalogue.pause_plan.as_str()) {
        return Err(BillingError::invalid("subscription", "not paused"));
    }
    let back = sub.paused_from_plan.clone().unwrap_or_else(|| "starter".into());
    let plan = plan_checked(catalogue, &back)?;
    let paused = Some(catalogue.pause_plan.as_str());
    let price = crate::contracts::price_on(db, stripe, catalogue, customer_id, &back, plan, paused).await?;
    let meta = json!({"j1msky_paused_from": "", "j1msky_resume_at": ""});
    let (pay_now, key) = match asked_at {
        Some(now) => (true, format!("j1msky-resume-{}-{}-{}", sub.id, sub.version, attempt(now))),
        None => (false, format!("j1msky-resume-{}-{}", sub.id, sub.version)),
    };
    swap_with(stripe, &sub, &price, "always_invoice", pay_now, true, meta, &key).await?;
    Ok(())
}

/// Cancels at the period end (access continues until then).
pub async fn cancel(db: &Db, stripe: &Stripe, customer_id: &str) -> Result<(), BillingError> {
    let sub = live(db, customer_id).await?;
    release(stripe, &sub).await?;
    let key = format!("j1msky-cancel-{}-{}", sub.id, sub.version);
    stripe.post(&format!("subscriptions/{}", sub.id), &json!({"cancel_at_period_end": true}), &key).await?;
    Ok(())
}

/// Live paused subscriptions with a resume date; `$1` is the pause plan.
const PAUSED: &str = "FROM subscriptions WHERE plan = $1 AND resume_at IS NOT NULL AND customer_id IS NOT NULL
                        AND status NOT IN ('canceled', 'incomplete_expired')";

/// Paused subscriptions whose resume date has come are resumed.
pub async fn resume_due(db: &Db, stripe: &Stripe, catalogue: &Catalogue, now_secs: i64) -> Result<usize, BillingError> {
    let due: Vec<(String,)> = sqlx::query_as(&format!("SELECT customer_id {PAUSED} AND resume_at <= $2"))
        .bind(&catalogue.pause_plan)
        .bind(now_secs)
        .fetch_all(db.pool())
        .await?;
    let mut n = 0;
    for (customer,) in due {
        match resume(db, stripe, catalogue, &customer, None).await {
            Ok(()) => n += 1,
            Err(e) => tracing::warn!(customer = %customer, error = %e, "automatic resume failed; retried next round"),
        }
    }
    Ok(n)
}

/// Resumes `subscription` when it is still paused and its resume date has come; false
/// (nothing done) when it was resumed meanwhile or paused again to a later date, whose
/// own timer resumes it.
pub async fn resume_if_due(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    subscription: &str,
    now_secs: i64,
) -> Result<bool, BillingError> {
    let due: Option<(String,)> =
        sqlx::query_as(&format!("SELECT customer_id {PAUSED} AND resume_at <= $2 AND id = $3"))
            .bind(&catalogue.pause_plan)
            .bind(now_secs)
            .bind(subscription)
            .fetch_optional(db.pool())
            .await?;
    let Some((customer,)) = due else { return Ok(false) };
    resume(db, stripe, catalogue, &customer, None).await?;
    Ok(true)
}

/// Every live pause with a resume date: (subscription, customer, resume date in seconds).
pub async fn pending_resumes(db: &Db, catalogue: &Catalogue) -> Result<Vec<(String, String, i64)>, BillingError> {
    Ok(sqlx::query_as(&format!("SELECT id, customer_id, resume_at {PAUSED} ORDER BY resume_at, id"))
        .bind(&catalogue.pause_plan)
        .fetch_all(db.pool())
        .await?)
}

/// Schedules the timer resuming `subscription` at `resume_at_secs` (keyed by both, so a
/// second pause to another date has its own timer and a repeat is a no-op).
pub async fn schedule_resume(
    db: &Db,
    subscription: &str,
    customer: &str,
    resume_at_secs: i64,
    now: i64,
) -> Result<(), BillingError> {
    let payload = json!({"subscription": subscription, "customer": customer});
    let key = format!("{subscription}@{resume_at_secs}");
    let timer = j1msky_db::timers::NewTimer {
        kind: RESUME_TIMER,
        key: &key,
        payload: &payload,
        run_at: resume_at_secs.saturating_mul(1_000_000),
        max_attempts: 10,
    };
    j1msky_db::timers::schedule_on(db, &timer, now).await?;
    Ok(())
}
