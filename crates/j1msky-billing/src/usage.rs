//! Pay-per-task charges reported to Stripe as invoice items, once each (the idempotency
//! key is the charge's id, and the row is marked in the same step), with a revenue
//! ledger entry. A customer without a subscription gets its items invoiced monthly.

use j1msky_core::catalogue::Catalogue;
use j1msky_core::Money;
use j1msky_db::{outbox, Db};
use serde_json::json;
use sqlx::Row;

use crate::{BillingError, Stripe};

/// The Stripe customer for one of ours, made (once) when missing.
pub async fn ensure_stripe_customer(
    db: &Db,
    stripe: &Stripe,
    customer_id: &str,
    now: i64,
) -> Result<String, BillingError> {
    let c = j1msky_accounts::customers::get(db, customer_id).await?;
    if let Some(sc) = c.stripe_customer_id {
        return Ok(sc);
    }
    let params = json!({"name": c.name, "email": c.contact_email, "metadata": {"j1msky_customer": c.id}});
    let made = stripe.post("customers", &params, &format!("j1msky-customer-{}", c.id)).await?;
    let sc = made["id"].as_str().ok_or_else(|| BillingError::Malformed("customer without id".into()))?.to_string();
    sqlx::query(
        "UPDATE customers SET stripe_customer_id = $1, updated_at = $2 WHERE id = $3 AND stripe_customer_id IS NULL",
    )
    .bind(&sc)
    .bind(now)
    .bind(customer_id)
    .execute(db.pool())
    .await?;
    Ok(sc)
}

/// Reports up to `limit` unreported charges; returns how many were reported.
pub async fn report(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    limit: i64,
    now: i64,
) -> Result<usize, BillingError> {
    let rows = sqlx::query(
        "SELECT id, customer_id, task_id, tier, amount_micros FROM usage_charges
         WHERE reported_at IS NULL ORDER BY created_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut done = 0;
    for r in rows {
        let id: String = r.try_get(0)?;
        let customer: String = r.try_get(1)?;
        let task: String = r.try_get(2)?;
        let tier: String = r.try_get(3)?;
        let cents = Money::from_micros(r.try_get(4)?).to_cents_rounded();
        let sc = ensure_stripe_customer(db, stripe, &customer, now).await?;
        let params = json!({
            "customer": sc, "amount": cents, "currency": catalogue.stripe.currency,
            "description": format!("Task {task} ({tier})"),
            "metadata": {"j1msky_usage_charge": id, "j1msky_task": task},
        });
        let item = stripe.post("invoiceitems", &params, &format!("j1msky-usage-{id}")).await?;
        let mut tx = db.begin().await?;
        let marked = sqlx::query(
            "UPDATE usage_charges SET reported_at = $1, stripe_item_id = $2 WHERE id = $3 AND reported_at IS NULL",
        )
        .bind(now)
        .bind(item["id"].as_str())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 1 {
            sqlx::query(
                "INSERT INTO revenue_entries (id, source_id, kind, customer_id, amount_cents, currency, occurred_at, recorded_at)
                 VALUES ($1, $2, 'usage_charge', $3, $4, $5, $6, $6) ON CONFLICT (source_id) DO NOTHING",
            )
            .bind(j1msky_core::ids::new_id("rev"))
            .bind(&id)
            .bind(&customer)
            .bind(cents)
            .bind(&catalogue.stripe.currency)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let detail =
                json!({"charge": id, "task": task, "tier": tier, "amount_cents": cents, "invoice_item": item["id"]});
            outbox::emit(&mut tx, db.backend(), "usage.reported", Some(&customer), &detail, now).await?;
            done += 1;
        }
        tx.commit().await?;
    }
    Ok(done)
}

/// Invoices the reported items of customers without a subscription (pay-per-task),
/// once per `period` key (e.g. `2026-11`): the key makes a second run a no-op.
pub async fn invoice_pay_per_task(db: &Db, stripe: &Stripe, period: &str, now: i64) -> Result<usize, BillingError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT c.id, c.stripe_customer_id FROM usage_charges u JOIN customers c ON c.id = u.customer_id
         WHERE u.reported_at IS NOT NULL AND c.stripe_customer_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.customer_id = c.id
                           AND s.status NOT IN ('canceled', 'incomplete_expired', 'unknown'))",
    )
    .fetch_all(db.pool())
    .await?;
    let mut n = 0;
    for (customer, sc) in rows {
        // Each (customer, period) is invoiced once; the mark outlives Stripe's 24-hour
        // idempotency window, so the minute-by-minute job does not ask again.
        let key = format!("ppt_invoice:{customer}:{period}");
        if crate::sync::stored_id(db, &key).await?.is_some() {
            continue;
        }
        let params = json!({"customer": sc, "pending_invoice_items_behavior": "include", "auto_advance": true,
                            "collection_method": "charge_automatically", "metadata": {"j1msky_customer": customer}});
        let invoice = match stripe.post("invoices", &params, &format!("j1msky-ppt-invoice-{customer}-{period}")).await {
            Ok(inv) => {
                n += 1;
                inv["id"].as_str().unwrap_or("invoiced").to_string()
            }
            // Nothing pending for this customer: Stripe refuses an empty invoice.
            Err(BillingError::Stripe { status: 400, .. }) => "nothing".to_string(),
            Err(e) => return Err(e),
        };
        sqlx::query(
            "INSERT INTO stripe_objects (key, stripe_id, fingerprint, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&key)
        .bind(&invoice)
        .bind(period)
        .bind(now)
        .execute(db.pool())
        .await?;
    }
    Ok(n)
}
