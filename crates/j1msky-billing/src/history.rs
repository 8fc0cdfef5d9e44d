//! `subscription_history`: every subscription snapshot Stripe sent, stale ones included,
//! one row per (subscription, version), so the history is the same whatever the delivery
//! order. MRR at any instant is read from it (`j1msky-insights::mrr`). Each new row, and
//! each join of earlier rows to a customer linked later, announces
//! `subscription.history_changed` in the same transaction.

use j1msky_core::events::SubscriptionHistoryChanged;
use j1msky_db::{outbox, Backend};
use serde_json::Value;
use sqlx::AnyConnection;

use crate::refs::{envelope, id_of, our_customer, plan_of_price};
use crate::BillingError;

/// What a snapshot says about the money, in minor units per month.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Amounts {
    /// Σ unit_amount × quantity of the licensed recurring items, normalised to a month.
    pub amount_cents: i64,
    /// Σ quantity of those items.
    pub quantity: i64,
    pub discount_percent_bp: Option<i64>,
    /// A fixed discount per month (an invoice's `amount_off` normalised like the items).
    pub discount_amount_cents: Option<i64>,
    /// Unix micros; `None`: the discount lasts until removed.
    pub discount_end: Option<i64>,
}

/// How many months one billing interval is, as a fraction `(num, den)`.
fn per_month(interval: &str, count: i64) -> Option<(i64, i64)> {
    // Saturating: a hostile `interval_count` near i64::MAX must not overflow `12 × count`.
    let count = count.max(1);
    match interval {
        "month" => Some((1, count)),
        "year" => Some((1, count.saturating_mul(12))),
        // 52 weeks and 365 days make a year of 12 months.
        "week" => Some((52, count.saturating_mul(12))),
        "day" => Some((365, count.saturating_mul(12))),
        _ => None,
    }
}

/// `value × num ÷ den`, rounded to the nearest integer, halves away from zero.
fn scale(value: i64, (num, den): (i64, i64)) -> i64 {
    let n = i128::from(value) * i128::from(num);
    let d = i128::from(den);
    let q = (2 * n.abs() + d) / (2 * d);
    let q = if n < 0 { -q } else { q };
    i64::try_from(q).unwrap_or(i64::MAX)
}

/// Reads a Stripe subscription object's monthly amount and discount. Items whose price is
/// metered (pay-per-task) or not recurring are left out; a price without `recurring`
/// (only ever seen in hand-made test objects) counts as monthly. Each item is normalised
/// on its own and rounded to the nearest cent (halves up): a $100 yearly price is 833.
pub fn amounts(obj: &Value) -> Amounts {
    let mut out = Amounts::default();
    // The discount's `amount_off` is per invoice: it follows the first licensed item's interval.
    let mut period = (1, 1);
    let mut first = true;
    for item in obj["items"]["data"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let price = &item["price"];
        let recurring = &price["recurring"];
        if recurring["usage_type"].as_str() == Some("metered") || price["type"].as_str() == Some("one_time") {
            continue;
        }
        let factor = if recurring.is_object() {
            let interval = recurring["interval"].as_str().unwrap_or("month");
            match per_month(interval, recurring["interval_count"].as_i64().unwrap_or(1)) {
                Some(f) => f,
                None => continue,
            }
        } else {
            (1, 1)
        };
        // `unit_amount` is null for decimal prices; Stripe then gives `unit_amount_decimal`.
        let unit = price["unit_amount"].as_i64().or_else(|| {
            price["unit_amount_decimal"].as_str().and_then(|d| d.parse::<f64>().ok()).map(|f| f.round() as i64)
        });
        let quantity = item["quantity"].as_i64().unwrap_or(1).max(0);
        out.amount_cents = out.amount_cents.saturating_add(scale(unit.unwrap_or(0).saturating_mul(quantity), factor));
        out.quantity = out.quantity.saturating_add(quantity);
        if first {
            (period, first) = (factor, false);
        }
    }
    let discount = &obj["discount"];
    let coupon = &discount["coupon"];
    if coupon.is_object() {
        // Stripe sends `percent_off` as a float (33.33 is allowed); it has at most two
        // decimals, so basis points hold it exactly. Converted here, once.
        out.discount_percent_bp = coupon["percent_off"].as_f64().map(|p| ((p * 100.0).round() as i64).clamp(0, 10_000));
        out.discount_amount_cents = coupon["amount_off"].as_i64().map(|a| scale(a.max(0), period));
        out.discount_end = discount["end"].as_i64().map(|s| s.saturating_mul(1_000_000));
    }
    out
}

/// Records one snapshot (a `customer.subscription.*` event's object) unless held already;
/// returns whether it was new. `customer_id` is ours when known.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    conn: &mut AnyConnection,
    backend: Backend,
    obj: &Value,
    version: &str,
    plan: Option<&str>,
    customer_id: Option<&str>,
    created_secs: i64,
    now: i64,
) -> Result<bool, BillingError> {
    let bad = |what: &str| BillingError::Malformed(format!("subscription event: `{what}` missing"));
    let id = obj["id"].as_str().filter(|s| s.starts_with("sub_")).ok_or_else(|| bad("id"))?;
    let stripe_customer = id_of(&obj["customer"]).ok_or_else(|| bad("customer"))?;
    let status = obj["status"].as_str().ok_or_else(|| bad("status"))?;
    let a = amounts(obj);
    let currency = obj["items"]["data"][0]["price"]["currency"]
        .as_str()
        .or_else(|| obj["currency"].as_str())
        .unwrap_or("usd")
        .to_ascii_lowercase();
    let inserted = sqlx::query(
        "INSERT INTO subscription_history (subscription_id, version, customer_id, stripe_customer_id, status, plan,
             currency, amount_cents, quantity, discount_percent_bp, discount_amount_cents, discount_end, effective_at,
             recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (subscription_id, version) DO NOTHING",
    )
    .bind(id)
    .bind(version)
    .bind(customer_id)
    .bind(&stripe_customer)
    .bind(status)
    .bind(plan)
    .bind(&currency)
    .bind(a.amount_cents)
    .bind(a.quantity)
    .bind(a.discount_percent_bp)
    .bind(a.discount_amount_cents)
    .bind(a.discount_end)
    .bind(created_secs.saturating_mul(1_000_000))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let new = inserted.rows_affected() == 1;
    if new {
        let event = SubscriptionHistoryChanged {
            subscription: Some(id.to_string()),
            customer: customer_id.map(String::from),
            stripe_customer,
        };
        outbox::emit_typed(conn, backend, event, customer_id, now).await?;
    }
    Ok(new)
}

/// Joins a Stripe customer's snapshots recorded before its link to our customer.
pub async fn join(
    conn: &mut AnyConnection,
    backend: Backend,
    customer_id: &str,
    stripe_customer: &str,
    now: i64,
) -> Result<(), BillingError> {
    let joined = sqlx::query(
        "UPDATE subscription_history SET customer_id = $1 WHERE stripe_customer_id = $2 AND customer_id IS NULL",
    )
    .bind(customer_id)
    .bind(stripe_customer)
    .execute(&mut *conn)
    .await?;
    if joined.rows_affected() > 0 {
        let event = SubscriptionHistoryChanged {
            subscription: None,
            customer: Some(customer_id.to_string()),
            stripe_customer: stripe_customer.to_string(),
        };
        outbox::emit_typed(conn, backend, event, Some(customer_id), now).await?;
    }
    Ok(())
}

/// What a backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backfilled {
    /// Stored subscription events without their history row.
    pub missing: usize,
    /// Of those, rows now recorded (the others are not subscription snapshots we can read).
    pub recorded: usize,
}

/// Re-reads the stored Stripe subscription events (applied or not: the history does not
/// depend on the applier's progress) that have no history row (events stored before the
/// history existed) and records them. Idempotent; one query finds the missing ones (a
/// row's version ends with its event id after `{created:012}:`, 13 characters).
pub async fn backfill(conn: &mut AnyConnection, backend: Backend, now: i64) -> Result<Backfilled, BillingError> {
    const BATCH: i64 = 500;
    let mut out = Backfilled::default();
    let mut after = String::new();
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT e.id, e.payload FROM stripe_events e
             WHERE e.type LIKE 'customer.subscription.%' AND e.id > $1
               AND NOT EXISTS (SELECT 1 FROM subscription_history h
                               WHERE h.subscription_id = e.object_id AND SUBSTR(h.version, 14) = e.id)
             ORDER BY e.id LIMIT $2",
        )
        .bind(&after)
        .bind(BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last().map(|r| r.0.clone()) else { break };
        for (id, payload) in rows {
            out.missing += 1;
            let ev: Value = match serde_json::from_str(&payload) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(event = %id, error = %e, "stored Stripe event is not JSON; not in the history");
                    continue;
                }
            };
            let Ok(env) = envelope(&ev) else { continue };
            let obj = &ev["data"]["object"];
            let (Some(sub), Some(stripe_customer)) = (obj["id"].as_str(), id_of(&obj["customer"])) else { continue };
            let version = crate::refs::version(env.created, &env.id);
            let (_, plan) = plan_item(conn, obj).await?;
            let mut customer = our_customer(conn, &stripe_customer).await?;
            if customer.is_none() {
                let row: Option<(Option<String>,)> =
                    sqlx::query_as("SELECT customer_id FROM subscriptions WHERE id = $1")
                        .bind(sub)
                        .fetch_optional(&mut *conn)
                        .await?;
                customer = row.and_then(|r| r.0);
            }
            match record(conn, backend, obj, &version, plan.as_deref(), customer.as_deref(), env.created, now).await {
                Ok(true) => out.recorded += 1,
                Ok(false) => {}
                Err(BillingError::Malformed(m)) => tracing::warn!(event = %id, "not in the history: {m}"),
                Err(e) => return Err(e),
            }
        }
        after = last;
    }
    Ok(out)
}

/// The item that names the plan and the plan: the first item whose price is one of our
/// plans, wherever it is listed (a subscription may carry other items); else item 0.
pub(crate) async fn plan_item(conn: &mut AnyConnection, obj: &Value) -> Result<(usize, Option<String>), BillingError> {
    for (i, candidate) in obj["items"]["data"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        if let Some(p) = plan_of_price(conn, &candidate["price"]).await? {
            return Ok((i, Some(p)));
        }
    }
    Ok((0, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(amount: i64, interval: &str, count: i64, qty: i64, usage: &str) -> Value {
        json!({"price": {"unit_amount": amount, "currency": "usd",
                         "recurring": {"interval": interval, "interval_count": count, "usage_type": usage}},
               "quantity": qty})
    }

    #[test]
    fn licensed_items_normalised_to_a_month_metered_left_out() {
        let obj = json!({"items": {"data": [
            item(2900, "month", 1, 2, "licensed"),   // 58.00
            item(10_000, "year", 1, 1, "licensed"),  // 100.00 / 12 = 8.333… → 8.33
            item(1000, "week", 1, 1, "licensed"),    // 10.00 × 52 / 12 = 43.333… → 43.33
            item(500, "month", 1, 1, "metered"),     // pay-per-task: not MRR
            item(9000, "month", 3, 1, "licensed"),   // quarterly 90.00 → 30.00
        ]}});
        let a = amounts(&obj);
        assert_eq!(a.amount_cents, 5800 + 833 + 4333 + 3000);
        assert_eq!(a.quantity, 5);
        assert_eq!(a.discount_percent_bp, None);
    }

    #[test]
    fn discounts_read_once_percent_as_basis_points() {
        let obj = json!({"items": {"data": [item(12_000, "year", 1, 1, "licensed")]},
                         "discount": {"coupon": {"percent_off": 33.33, "amount_off": null}, "end": 1_800_000_000}});
        let a = amounts(&obj);
        assert_eq!(a.amount_cents, 1000);
        assert_eq!(a.discount_percent_bp, Some(3333));
        assert_eq!(a.discount_end, Some(1_800_000_000_000_000));
        let obj = json!({"items": {"data": [item(12_000, "year", 1, 1, "licensed")]},
                         "discount": {"coupon": {"percent_off": null, "amount_off": 1200}, "end": null}});
        let a = amounts(&obj);
        // 12.00 off a yearly invoice is 1.00 a month.
        assert_eq!((a.discount_amount_cents, a.discount_end, a.discount_percent_bp), (Some(100), None, None));
    }

    #[test]
    fn rounding_is_to_the_nearest_cent_halves_up() {
        assert_eq!(scale(6, (1, 12)), 1); // 0.5 → 1
        assert_eq!(scale(5, (1, 12)), 0); // 0.41… → 0
        assert_eq!(scale(18, (1, 12)), 2); // 1.5 → 2
    }
}
