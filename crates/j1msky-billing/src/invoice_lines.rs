//! An invoice's lines in full. Stripe embeds only the first page of an invoice's lines
//! (`has_more` says there are others, paged from `GET /v1/invoices/{id}/lines`), so an
//! event's invoice may be partial: it is completed from Stripe before anything is booked
//! from it, and the applier refuses a partial one.

use j1msky_db::Db;
use serde_json::{json, Value};

use crate::{BillingError, Stripe};

/// The invoice's lines, when the object carries all of them.
pub fn embedded(invoice: &Value) -> Result<&[Value], BillingError> {
    if invoice["lines"]["has_more"] == Value::Bool(true) {
        return Err(BillingError::Malformed(format!(
            "invoice {}: only the first {} lines were sent (has_more); waiting for the rest to be fetched from Stripe",
            invoice["id"].as_str().unwrap_or("?"),
            invoice["lines"]["data"].as_array().map_or(0, Vec::len),
        )));
    }
    Ok(invoice["lines"]["data"].as_array().map(Vec::as_slice).unwrap_or_default())
}

const MAX_LINES: usize = 100_000;

/// Every line of an invoice: the embedded page, then the rest from Stripe, page by page.
pub async fn all(stripe: &Stripe, invoice: &Value) -> Result<Vec<Value>, BillingError> {
    let mut lines = invoice["lines"]["data"].as_array().cloned().unwrap_or_default();
    let mut more = invoice["lines"]["has_more"] == Value::Bool(true);
    if !more {
        return Ok(lines);
    }
    // The id goes into a URL path: only Stripe's own shape of invoice id.
    let id = invoice["id"]
        .as_str()
        .filter(|id| crate::refs::is_stripe_id(id, &["in_"]))
        .ok_or_else(|| BillingError::Malformed("invoice: `id` missing or not an invoice id".into()))?;
    while more {
        // Stripe caps an invoice's lines far below this; a page that does not move on
        // would otherwise be asked for forever.
        if lines.len() > MAX_LINES {
            return Err(BillingError::Malformed(format!("invoice {id}: more than {MAX_LINES} lines")));
        }
        let after = lines
            .last()
            .and_then(|l| l["id"].as_str())
            .ok_or_else(|| BillingError::Malformed(format!("invoice {id}: a line without an id")))?
            .to_string();
        let page = stripe.get(&format!("invoices/{id}/lines"), &json!({"limit": 100, "starting_after": after})).await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        if data.is_empty() || data.last().and_then(|l| l["id"].as_str()) == Some(after.as_str()) {
            return Err(BillingError::Malformed(format!("invoice {id}: Stripe said has_more but sent no lines")));
        }
        more = page["has_more"] == Value::Bool(true);
        lines.extend(data);
    }
    Ok(lines)
}

/// Completes the invoices of stored, not yet applied events that carry only part of
/// their lines; returns how many were completed. Each goes back to `pending` with a
/// fresh count of attempts (its earlier failures were only the missing lines). One that
/// cannot be completed does not hold up the others; the first such error is returned.
pub async fn complete_pending(db: &Db, stripe: &Stripe) -> Result<usize, BillingError> {
    // The stored payload is compact JSON, so the marker is exact; the parse below decides.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, payload FROM stripe_events WHERE state IN ('pending', 'failed') AND type LIKE 'invoice.%'
           AND payload LIKE '%\"has_more\":true%' ORDER BY received_at, id",
    )
    .fetch_all(db.pool())
    .await?;
    let (mut done, mut first_failure) = (0, None);
    for (id, payload) in rows {
        match complete_one(db, stripe, &id, &payload).await {
            Ok(true) => done += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(event = %id, error = %e, "completing an invoice's lines");
                first_failure.get_or_insert(e);
            }
        }
    }
    first_failure.map_or(Ok(done), Err)
}

async fn complete_one(db: &Db, stripe: &Stripe, id: &str, payload: &str) -> Result<bool, BillingError> {
    let mut event: Value =
        serde_json::from_str(payload).map_err(|e| BillingError::Malformed(format!("stored event {id}: {e}")))?;
    let invoice = &event["data"]["object"];
    if invoice["lines"]["has_more"] != Value::Bool(true) {
        return Ok(false);
    }
    let lines = all(stripe, invoice).await?;
    let (url, n) = (invoice["lines"]["url"].clone(), lines.len());
    event["data"]["object"]["lines"] =
        json!({"object": "list", "data": lines, "has_more": false, "total_count": n, "url": url});
    sqlx::query(
        "UPDATE stripe_events SET payload = $1, state = 'pending', attempts = 0, error = NULL, lease_until = NULL
         WHERE id = $2 AND state IN ('pending', 'failed')",
    )
    .bind(event.to_string())
    .bind(id)
    .execute(db.pool())
    .await?;
    Ok(true)
}
