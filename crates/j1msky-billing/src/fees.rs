//! Stripe's fees: what Stripe keeps of the money it moves, read from balance transactions
//! and booked as revenue entries of kind `stripe_fee` (one per balance transaction, its
//! `txn_…` id the source, the fee negative: money the business does not get).
//!
//! A payment's processing fee is not in any webhook (a charge names its balance
//! transaction by id only), so a billing timer reads each paid invoice's charge from
//! Stripe with the balance transaction expanded ([`fetch_due`]). A dispute carries its
//! balance transactions whole, so its fee is booked as the dispute is applied
//! ([`book_from_dispute`]).

use j1msky_core::events::StripeFeeBooked;
use j1msky_db::{outbox, Backend, Db};
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};

use crate::{BillingError, Stripe};

/// How many paid invoices one pass reads the fees of (one Stripe call each).
pub const BATCH: i64 = 100;

/// How long a paid charge without a balance transaction is read again before its fee is
/// given up as unknown (a week: bank debits settle in days).
const SETTLE_WAIT: i64 = 7 * 86_400_000_000;

/// A Stripe answer where a refusal for good (a client error but 429) is `None`: that fee
/// stays unknown rather than holding up the invoices after it.
fn refused_is_none(answer: Result<Value, BillingError>) -> Result<Option<Value>, BillingError> {
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(BillingError::Stripe { status, .. }) if (400..500).contains(&status) && status != 429 => Ok(None),
        Err(e) => Err(e),
    }
}

/// A balance transaction's id, fee and currency, when it reads as one.
fn read_txn(txn: &Value) -> Option<(&str, i64, &str, i64)> {
    let id = txn["id"].as_str().filter(|s| s.starts_with("txn_") && s.len() <= 255)?;
    let currency = txn["currency"].as_str().filter(|c| c.len() <= 16).unwrap_or("usd");
    Some((id, txn["fee"].as_i64()?, currency, txn["created"].as_i64().unwrap_or(0)))
}

/// Books one balance transaction's fee on `charge` (once: the transaction's id is the
/// entry's source) and announces it; whether it was new.
#[allow(clippy::too_many_arguments)]
async fn book(
    conn: &mut AnyConnection,
    backend: Backend,
    txn: &Value,
    charge: &str,
    owner: (Option<&str>, Option<&str>),
    at_if_unknown: i64,
    now: i64,
) -> Result<bool, BillingError> {
    let Some((id, fee, currency, created)) = read_txn(txn) else {
        // Nothing else of the event depends on it (a dispute still pauses, a payment is
        // still booked): the fee stays unknown.
        tracing::warn!(%charge, "a balance transaction without a `txn_` id or a fee: its fee is not booked");
        return Ok(false);
    };
    if fee == 0 {
        return Ok(false);
    }
    let at = if created > 0 { created.saturating_mul(1_000_000) } else { at_if_unknown };
    let new =
        crate::invoices::book_money(conn, id, "stripe_fee", owner, (-fee, 0), Some(charge), currency, at, now).await?;
    if new {
        let event = StripeFeeBooked {
            balance_transaction: id.into(),
            charge: charge.into(),
            fee_cents: fee,
            currency: currency.into(),
        };
        outbox::emit_typed(conn, backend, event, owner.0, now).await?;
    }
    Ok(new)
}

/// The fees in a dispute's balance transactions (the dispute fee when its funds are
/// withdrawn), booked inside the applier's transaction.
pub(crate) async fn book_from_dispute(
    conn: &mut AnyConnection,
    backend: Backend,
    dispute: &Value,
    charge: &str,
    owner: (Option<&str>, Option<&str>),
    at: i64,
    now: i64,
) -> Result<(), BillingError> {
    for txn in dispute["balance_transactions"].as_array().map(Vec::as_slice).unwrap_or_default() {
        book(conn, backend, txn, charge, owner, at, now).await?;
    }
    Ok(())
}

/// Reads the processing fee of up to [`BATCH`] paid invoices whose fee is not read yet,
/// oldest first: each invoice's charge from Stripe with its balance transaction. Returns
/// how many invoices were marked read (0: none is due, or none could be yet). A charge
/// Stripe refuses (404 or another client error but 429) is marked read without a fee; any
/// other failure stops the pass (the timer tries again).
pub async fn fetch_due(db: &Db, stripe: &Stripe, now: i64) -> Result<usize, BillingError> {
    let due = sqlx::query(
        "SELECT source_id, charge_id, customer_id, stripe_customer_id, occurred_at FROM revenue_entries
         WHERE kind = 'invoice_paid' AND charge_id IS NOT NULL AND fee_fetched_at IS NULL
         ORDER BY occurred_at LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(db.pool())
    .await?;
    let mut read = 0;
    for row in due {
        let invoice: String = row.try_get(0)?;
        let charge: String = row.try_get(1)?;
        let customer: Option<String> = row.try_get(2)?;
        let stripe_customer: Option<String> = row.try_get(3)?;
        let paid_at: i64 = row.try_get(4)?;
        // The id goes into a URL path: only Stripe's own shapes of charge id (`py_` for
        // some payment methods other than cards).
        let fetched = if crate::refs::is_stripe_id(&charge, &["ch_", "py_"]) {
            refused_is_none(
                stripe.get(&format!("charges/{charge}"), &json!({"expand": ["balance_transaction"]})).await,
            )?
        } else {
            None
        };
        let txn = match fetched.as_ref().map(|ch| &ch["balance_transaction"]) {
            Some(Value::String(id)) if crate::refs::is_stripe_id(id, &["txn_"]) => {
                refused_is_none(stripe.get(&format!("balance_transactions/{id}"), &Value::Null).await)?
            }
            Some(Value::Object(_)) => fetched.as_ref().map(|ch| ch["balance_transaction"].clone()),
            _ => None,
        };
        if fetched.is_some() && txn.is_none() && paid_at > now - SETTLE_WAIT {
            // Not settled yet (some payment methods take days): read again later.
            continue;
        }
        let mut tx = db.begin().await?;
        match &txn {
            Some(txn) => {
                let owner = (customer.as_deref(), stripe_customer.as_deref());
                book(&mut tx, db.backend(), txn, &charge, owner, paid_at, now).await?;
            }
            None => {
                tracing::warn!(%invoice, %charge, "Stripe shows no balance transaction for the charge that paid the invoice: its fee stays unknown")
            }
        }
        sqlx::query("UPDATE revenue_entries SET fee_fetched_at = $1 WHERE source_id = $2")
            .bind(now)
            .bind(&invoice)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        read += 1;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_balance_transaction_reads_only_with_a_txn_id_and_a_fee() {
        let ok = json!({"id": "txn_1", "fee": 317, "currency": "eur", "created": 1_700_000_000});
        assert_eq!(read_txn(&ok), Some(("txn_1", 317, "eur", 1_700_000_000)));
        assert_eq!(read_txn(&json!({"id": "txn_1", "fee": "317"})), None, "a fee that is not a number");
        assert_eq!(read_txn(&json!({"id": "ch_1", "fee": 317})), None, "not a balance transaction");
        assert_eq!(read_txn(&json!({"fee": 317})), None);
        assert_eq!(read_txn(&json!({"id": "txn_2", "fee": 0})), Some(("txn_2", 0, "usd", 0)));
    }
}
