//! Reading the revenue ledger (written by the webhook applier and usage reporting).

use j1msky_db::Db;
use serde::Serialize;

use crate::BillingError;

/// One ledger line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub amount_cents: i64,
    /// `amount_cents` as a decimal string (`-12.50`), for pages.
    pub amount: String,
    /// Upper case (`USD`), for pages.
    pub currency: String,
    pub occurred_at: i64,
}

/// A customer's latest ledger lines, newest first, as the customer's money moved: what it
/// paid or got back, tax included (the revenue figures leave tax out), and none of
/// Stripe's fees (the business's cost, not the customer's).
pub async fn for_customer(db: &Db, customer_id: &str, limit: i64) -> Result<Vec<Entry>, BillingError> {
    let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT kind, amount_cents + tax_cents, currency, occurred_at FROM revenue_entries
         WHERE customer_id = $1 AND kind <> 'stripe_fee'
         ORDER BY occurred_at DESC, id DESC LIMIT $2",
    )
    .bind(customer_id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, amount_cents, currency, occurred_at)| Entry {
            kind,
            amount_cents,
            // Minor units of a two-decimal currency, shown with the project's exact formatting.
            amount: j1msky_core::Money::from_micros(amount_cents.saturating_mul(10_000)).to_decimal_string(),
            currency: currency.to_uppercase(),
            occurred_at,
        })
        .collect())
}
