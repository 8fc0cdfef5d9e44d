//! Reading the revenue ledger (written by the webhook applier and usage reporting).

use j1msky_db::Db;
use serde::Serialize;

use crate::BillingError;

/// One ledger line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub amount_cents: i64,
    pub currency: String,
    pub occurred_at: i64,
}

/// A customer's latest ledger lines, newest first.
pub async fn for_customer(db: &Db, customer_id: &str, limit: i64) -> Result<Vec<Entry>, BillingError> {
    let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT kind, amount_cents, currency, occurred_at FROM revenue_entries WHERE customer_id = $1
         ORDER BY occurred_at DESC, id DESC LIMIT $2",
    )
    .bind(customer_id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, amount_cents, currency, occurred_at)| Entry { kind, amount_cents, currency, occurred_at })
        .collect())
}

/// Minor units as a decimal string (`-12.50`).
pub fn decimal(cents: i64) -> String {
    format!("{}{}.{:02}", if cents < 0 { "-" } else { "" }, cents.unsigned_abs() / 100, cents.unsigned_abs() % 100)
}
