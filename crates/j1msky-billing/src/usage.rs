//! Pay-per-task charges reported to Stripe as invoice items, once each (the idempotency
//! key is the task's id, the row is marked in the same step, and a charge that may have
//! been sent before Stripe's idempotency window is first looked for there: `item_lookup`). A customer without a
//! subscription gets its items invoiced monthly; the revenue is booked when the invoice
//! is paid (see `invoices`), not when reported.

use std::collections::HashMap;

use j1msky_core::catalogue::Catalogue;
use j1msky_core::events::UsageReported;
use j1msky_core::Money;
use j1msky_db::{outbox, Db};
use j1msky_tasks::charges;
use serde_json::{json, Value};

use crate::item_lookup::{self, Subject};
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
    // A Stripe customer made for ours before (the answer lost, or the link undone by a
    // restore) is found by its metadata: past 24 hours the POST's key would make a second
    // one, and the items already sent would be on the first. Search lags writes by about
    // a minute, which the key covers.
    let query = format!("metadata['j1msky_customer']:'{}'", c.id.replace('\'', "\\'"));
    let found = stripe.get("customers/search", &json!({"query": query, "limit": 1})).await?;
    let sc = match found["data"][0]["id"].as_str() {
        Some(id) => id.to_string(),
        None => {
            let params = json!({"name": c.name, "email": c.contact_email, "metadata": {"j1msky_customer": c.id}});
            let made = stripe.post("customers", &params, &format!("j1msky-customer-{}", c.id)).await?;
            made["id"].as_str().ok_or_else(|| BillingError::Malformed("customer without id".into()))?.to_string()
        }
    };
    let mut conn = db.pool().acquire().await?;
    j1msky_accounts::customer_links::link_stripe(&mut conn, customer_id, &sc, now).await?;
    Ok(sc)
}

/// Reports up to `limit` unreported charges as Stripe invoice items; returns how many
/// were reported. Customers are taken in turn (oldest waiting charge first) and one whose
/// item Stripe refuses is left for the next run, so it never holds up the others; the
/// first such refusal is then returned as the error, with Stripe's message.
pub async fn report(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    limit: i64,
    now: i64,
) -> Result<usize, BillingError> {
    let waiting = charges::customers_waiting(db, limit).await?;
    let (mut done, mut first_failure) = (0, None);
    for (customer, _) in waiting {
        let left = limit - done as i64;
        if left <= 0 {
            break;
        }
        match report_customer(db, stripe, catalogue, &customer, left, now).await {
            Ok(n) => done += n,
            Err((n, e)) => {
                done += n;
                tracing::warn!(%customer, error = %e, "reporting pay-per-task charges");
                first_failure.get_or_insert(e);
            }
        }
    }
    Ok(done).and_then(|d| first_failure.map_or(Ok(d), Err))
}

/// One customer's unreported charges, oldest first, until one fails. A charge whose
/// first POST may be outside Stripe's idempotency window is first looked for at Stripe
/// (see `item_lookup`): one list of the customer's recent items for the whole batch.
async fn report_customer(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer: &str,
    limit: i64,
    now: i64,
) -> Result<usize, (usize, BillingError)> {
    let rows = charges::unreported(db, customer, limit).await.map_err(|e| (0, e.into()))?;
    let sc = ensure_stripe_customer(db, stripe, customer, now).await.map_err(|e| (0, e))?;
    let subjects: Vec<Option<Subject>> = rows.iter().map(subject_of).collect();
    let since = rows
        .iter()
        .zip(&subjects)
        .filter_map(|(c, s)| s.as_ref().map(|s| (c, s)))
        .filter(|(c, s)| item_lookup::needs_lookup(s, c.work_began_at, now))
        .map(|(c, s)| item_lookup::earliest_item_secs(s, c.work_began_at))
        .min();
    let mut at_stripe = match since {
        Some(since) => item_lookup::items_since(stripe, &sc, since).await.map_err(|e| (0, e))?,
        None => HashMap::new(),
    };
    let mut done = 0;
    for (charge, subject) in rows.into_iter().zip(subjects) {
        let found = subject.as_ref().and_then(|s| at_stripe.remove(s));
        match report_one(db, stripe, catalogue, customer, &sc, charge, found, now).await {
            Ok(true) => done += 1,
            Ok(false) => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(done)
}

fn subject_of(charge: &charges::Unreported) -> Option<Subject> {
    match (&charge.task_id, &charge.api_day) {
        (Some(task), _) => Some(Subject::Task(task.clone())),
        (None, Some(day)) => Some(Subject::ApiDay(day.clone())),
        (None, None) => None,
    }
}

/// Reports one charge: adopts `found` (its item already at Stripe) or posts a new item,
/// then marks the charge and emits `usage.reported` in one transaction. False when
/// another run had marked it first.
#[allow(clippy::too_many_arguments)]
async fn report_one(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer: &str,
    sc: &str,
    charge: charges::Unreported,
    found: Option<Value>,
    now: i64,
) -> Result<bool, BillingError> {
    let charges::Unreported { id, task_id: task, tier, amount_micros, api_day, .. } = charge;
    let mut cents = Money::from_micros(amount_micros).to_cents_rounded();
    // Everything sent is derived from the task (or the customer's day of API calls), not
    // from this row: a charge written again for the same work (after a restore) replays
    // the same item while Stripe remembers the key, and is found by `item_lookup` after.
    let (description, metadata, key) = match (&task, &api_day) {
        (Some(task), _) => {
            (format!("Task {task} ({tier})"), json!({"j1msky_task": task}), format!("j1msky-usage-task-{task}"))
        }
        (None, Some(day)) => (
            format!("API calls on {day}"),
            json!({"j1msky_api_day": day, "j1msky_usage_charge": id}),
            format!("j1msky-usage-api-{customer}-{day}"),
        ),
        (None, None) => return Err(BillingError::Malformed(format!("usage charge {id} has no task or day"))),
    };
    let item = match found {
        Some(item) => {
            tracing::info!(charge = %id, item = %item["id"], "usage charge found at Stripe: adopted, not sent again");
            // What Stripe bills is the item it holds.
            cents = item["amount"].as_i64().unwrap_or(cents);
            item
        }
        None => {
            let params = json!({
                "customer": sc, "amount": cents, "currency": catalogue.stripe.currency,
                "description": description, "metadata": metadata,
            });
            stripe.post("invoiceitems", &params, &key).await?
        }
    };
    let item_id = item["id"].as_str();
    let mut tx = db.begin().await?;
    let reported = charges::mark_reported(&mut tx, &id, item_id, now).await?;
    if reported {
        // An adopted item may be on an invoice already (made in the time the restore undid).
        if let (Some(item_id), Some(invoice)) = (item_id, crate::refs::id_of(&item["invoice"])) {
            charges::mark_invoiced(&mut tx, customer, item_id, &invoice).await?;
        }
        let event = UsageReported {
            charge: id.clone(),
            task: task.clone(),
            api_day: api_day.clone(),
            tier: tier.clone(),
            amount_cents: cents,
            invoice_item: item_id.map(String::from),
        };
        outbox::emit_typed(&mut tx, db.backend(), event, Some(customer), now).await?;
    }
    tx.commit().await?;
    Ok(reported)
}

/// Invoices the reported, not yet invoiced charges of customers without a subscription
/// (pay-per-task), once per `period` key (e.g. `2026-11`): the key makes a second run a
/// no-op. A refusal from Stripe is an error with its message (after the other customers
/// are done), and that customer is tried again on the next run.
pub async fn invoice_pay_per_task(db: &Db, stripe: &Stripe, period: &str, now: i64) -> Result<usize, BillingError> {
    let mut rows = Vec::new();
    for customer in charges::customers_awaiting_invoice(db).await? {
        // Only pay-per-task customers known to Stripe: one with a live subscription gets
        // its items on the subscription's invoice.
        let stripe_customer: Option<(String,)> = sqlx::query_as(
            "SELECT c.stripe_customer_id FROM customers c WHERE c.id = $1 AND c.stripe_customer_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.customer_id = c.id
                               AND s.status NOT IN ('canceled', 'incomplete_expired', 'unknown'))",
        )
        .bind(&customer)
        .fetch_optional(db.pool())
        .await?;
        if let Some((sc,)) = stripe_customer {
            rows.push((customer, sc));
        }
    }
    let (mut n, mut first_failure) = (0, None);
    for (customer, sc) in rows {
        match invoice_customer(db, stripe, &customer, &sc, period, now).await {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%customer, error = %e, "invoicing pay-per-task charges");
                first_failure.get_or_insert(e);
            }
        }
    }
    first_failure.map_or(Ok(n), Err)
}

async fn invoice_customer(
    db: &Db,
    stripe: &Stripe,
    customer: &str,
    sc: &str,
    period: &str,
    now: i64,
) -> Result<bool, BillingError> {
    // Each (customer, period) is invoiced once; the mark outlives Stripe's 24-hour
    // idempotency window, so the minute-by-minute job does not ask again.
    let key = format!("ppt_invoice:{customer}:{period}");
    if crate::sync::stored_id(db, &key).await?.is_some() {
        return Ok(false);
    }
    let params = json!({"customer": sc, "pending_invoice_items_behavior": "include", "auto_advance": true,
                        "collection_method": "charge_automatically", "metadata": {"j1msky_customer": customer}});
    let invoice = match stripe.post("invoices", &params, &format!("j1msky-ppt-invoice-{customer}-{period}")).await {
        Ok(invoice) => invoice,
        // Stripe refuses an invoice with nothing pending: fine only when Stripe has in fact
        // invoiced every item we think is waiting (rows from before invoices were recorded).
        Err(e @ BillingError::Stripe { status: 400, .. }) => {
            return match items_still_pending(db, stripe, customer).await? {
                0 => Ok(false),
                _ => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let id = invoice["id"].as_str().ok_or_else(|| BillingError::Malformed("created invoice has no id".into()))?;
    let lines = crate::invoice_lines::all(stripe, &invoice).await?;
    let mut tx = db.begin().await?;
    for line in &lines {
        let Some(item) = line["invoice_item"].as_str() else { continue };
        charges::mark_invoiced(&mut tx, customer, item, id).await?;
    }
    sqlx::query(
        "INSERT INTO stripe_objects (key, stripe_id, fingerprint, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&key)
    .bind(id)
    .bind(period)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Asks Stripe which invoice took each of the customer's reported, not yet invoiced
/// items, records those, and returns how many are still pending at Stripe.
async fn items_still_pending(db: &Db, stripe: &Stripe, customer: &str) -> Result<usize, BillingError> {
    let items = charges::items_awaiting_invoice(db, customer).await?;
    let mut pending = 0;
    for item in items {
        // The id goes into a URL path: only Stripe's own shape of invoice item id.
        if !crate::refs::is_stripe_id(&item, &["ii_"]) {
            pending += 1;
            continue;
        }
        let invoice = match stripe.find(&format!("invoiceitems/{item}")).await? {
            Some(found) => crate::refs::id_of(&found["invoice"]),
            None => None,
        };
        let Some(invoice) = invoice else {
            pending += 1;
            continue;
        };
        let mut conn = db.pool().acquire().await?;
        charges::mark_invoiced(&mut conn, customer, &item, &invoice).await?;
    }
    Ok(pending)
}
