//! Tax is not revenue: Stripe collects it (Stripe Tax, or tax rates on prices) for the tax
//! authority. What `invoice.paid` books leaves the invoice's tax out, and money that goes
//! back on the charge that paid it (a refund, a dispute) is booked net of the same share of
//! tax, so a full refund of a taxed invoice gives back exactly what was booked.
//!
//! Stripe's wire formats differ by API version; all are read: `total_taxes` (from
//! 2025-03-31), `total_tax_amounts` and `tax` (before), or `total` − `total_excluding_tax`.
//! A line's `amount` includes its inclusive taxes (`taxes[].tax_behavior = "inclusive"`,
//! or `tax_amounts[].inclusive`) and excludes its exclusive ones.

use j1msky_db::Backend;
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use crate::BillingError;

fn sum_amounts(list: &Value, keep: impl Fn(&Value) -> bool) -> Option<i64> {
    let items = list.as_array()?;
    Some(items.iter().filter(|t| keep(t)).filter_map(|t| t["amount"].as_i64()).fold(0i64, i64::saturating_add))
}

/// The tax on an invoice, in minor units (0 when it carries none).
pub fn of_invoice(invoice: &Value) -> i64 {
    sum_amounts(&invoice["total_taxes"], |_| true)
        .or_else(|| sum_amounts(&invoice["total_tax_amounts"], |_| true))
        .or_else(|| invoice["tax"].as_i64())
        .or_else(|| Some(invoice["total"].as_i64()?.saturating_sub(invoice["total_excluding_tax"].as_i64()?)))
        .unwrap_or(0)
        .max(0)
}

/// The tax included in a line's `amount` (its inclusive taxes; exclusive ones are not in it).
pub fn inclusive_in_line(line: &Value) -> i64 {
    sum_amounts(&line["taxes"], |t| t["tax_behavior"] == "inclusive")
        .or_else(|| sum_amounts(&line["tax_amounts"], |t| t["inclusive"] == true))
        .unwrap_or(0)
        .max(0)
}

/// The tax within `money` moved on a charge whose invoice was paid `paid` with `tax` in it:
/// money × tax ÷ paid, rounded half away from zero (so a movement and its reversal have
/// shares of opposite sign and equal size), and never more than the money itself.
pub fn share(money: i64, tax: i64, paid: i64) -> i64 {
    if paid <= 0 || tax <= 0 || money == 0 {
        return 0;
    }
    let (m, t, p) = (i128::from(money.unsigned_abs()), i128::from(tax.min(paid)), i128::from(paid));
    let s = ((2 * m * t + p) / (2 * p)).min(m);
    let s = i64::try_from(s).unwrap_or(i64::MAX);
    if money < 0 {
        -s
    } else {
        s
    }
}

/// (tax, paid) of the invoice `charge` paid, once its payment is booked.
async fn of_charge(conn: &mut AnyConnection, charge: &str) -> Result<Option<(i64, i64)>, BillingError> {
    let row = sqlx::query(
        "SELECT tax_cents, paid_cents FROM revenue_entries
         WHERE charge_id = $1 AND kind = 'invoice_paid' AND paid_cents IS NOT NULL LIMIT 1",
    )
    .bind(charge)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
        None => None,
    })
}

/// On PostgreSQL, one charge's tax bookings one transaction at a time: an `invoice.paid`
/// and a refund of its charge applied at once by two appliers would each miss the other's
/// uncommitted row (the refund booked whole, the invoice finding nothing to net).
async fn lock_charge(conn: &mut AnyConnection, backend: Backend, charge: &str) -> Result<(), BillingError> {
    if backend == Backend::Postgres {
        // The two-number key space, apart from the outbox's and the hourly events'.
        sqlx::query("SELECT pg_advisory_xact_lock(1785294196, hashtext($1))").bind(charge).execute(&mut *conn).await?;
    }
    Ok(())
}

/// `money` moved on `charge` by `source` (a refund, a dispute's withdrawal or
/// reinstatement) split into (revenue, tax). The tax share is known once the charge's
/// invoice is booked (until then, all of it is revenue; `renet` fixes it then), and is
/// taken on the charge's running total, so however many movements give the money back,
/// their shares add up to exactly the invoice's tax.
pub(crate) async fn split_on_charge(
    conn: &mut AnyConnection,
    backend: Backend,
    charge: &str,
    source: &str,
    money: i64,
) -> Result<(i64, i64), BillingError> {
    lock_charge(conn, backend, charge).await?;
    let Some((tax, paid)) = of_charge(conn, charge).await? else { return Ok((money, 0)) };
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_cents + tax_cents), 0) AS BIGINT), CAST(COALESCE(SUM(tax_cents), 0) AS BIGINT)
         FROM revenue_entries WHERE charge_id = $1 AND kind IN ('refund', 'dispute') AND source_id <> $2",
    )
    .bind(charge)
    .bind(source)
    .fetch_one(&mut *conn)
    .await?;
    let (before_money, before_tax): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let mine = share(before_money.saturating_add(money), tax, paid) - before_tax;
    Ok((money - mine, mine))
}

/// Once an invoice's payment is booked: the refunds and disputes of its charge booked
/// before it (delivery order is not Stripe's order) get their tax share now, on the
/// running total in the order they happened (insights re-reads them on the invoice's event).
pub(crate) async fn renet(
    conn: &mut AnyConnection,
    backend: Backend,
    charge: &str,
    tax: i64,
    paid: i64,
) -> Result<(), BillingError> {
    lock_charge(conn, backend, charge).await?;
    let rows = sqlx::query(
        "SELECT source_id, amount_cents, tax_cents FROM revenue_entries
         WHERE charge_id = $1 AND kind IN ('refund', 'dispute') ORDER BY occurred_at, source_id",
    )
    .bind(charge)
    .fetch_all(&mut *conn)
    .await?;
    let (mut total_money, mut total_tax) = (0i64, 0i64);
    for r in rows {
        let (source, amount, was): (String, i64, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let money = amount.saturating_add(was);
        total_money = total_money.saturating_add(money);
        let now = share(total_money, tax, paid) - total_tax;
        total_tax += now;
        if now != was {
            sqlx::query("UPDATE revenue_entries SET amount_cents = $1, tax_cents = $2 WHERE source_id = $3")
                .bind(money - now)
                .bind(now)
                .bind(&source)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_invoices_tax_is_read_in_every_api_versions_format() {
        let basil = json!({"total_taxes": [{"amount": 810, "tax_behavior": "exclusive"}, {"amount": 90}]});
        assert_eq!(of_invoice(&basil), 900);
        let older = json!({"tax": 455, "total_tax_amounts": [{"amount": 400, "inclusive": false}, {"amount": 55}]});
        assert_eq!(of_invoice(&older), 455, "the per-rate amounts first, they add up to `tax`");
        assert_eq!(of_invoice(&json!({"tax": 120})), 120);
        assert_eq!(of_invoice(&json!({"total": 10_890, "total_excluding_tax": 9_900})), 990);
        assert_eq!(of_invoice(&json!({"tax": null, "total": 9_900})), 0);
        assert_eq!(of_invoice(&json!({"total_taxes": []})), 0);
    }

    #[test]
    fn only_inclusive_taxes_are_inside_a_lines_amount() {
        let line = json!({"amount": 1_200, "taxes": [{"amount": 200, "tax_behavior": "inclusive"},
                                                     {"amount": 99, "tax_behavior": "exclusive"}]});
        assert_eq!(inclusive_in_line(&line), 200);
        let older = json!({"amount": 1_200, "tax_amounts": [{"amount": 200, "inclusive": true}, {"amount": 7, "inclusive": false}]});
        assert_eq!(inclusive_in_line(&older), 200);
        assert_eq!(inclusive_in_line(&json!({"amount": 50})), 0);
    }

    #[test]
    fn a_share_of_tax_rounds_half_away_from_zero_and_is_symmetric() {
        // $108.90 paid with $9.90 of tax: a $30 refund carries 30 × 990 ÷ 10,890 = 272.7 → 273.
        assert_eq!(share(-3_000, 990, 10_890), -273);
        assert_eq!(share(3_000, 990, 10_890), 273);
        // All of it back: all of the tax.
        assert_eq!(share(-10_890, 990, 10_890), -990);
        // Exactly half a cent rounds away from zero: 1 × 1 ÷ 2.
        assert_eq!((share(1, 1, 2), share(-1, 1, 2)), (1, -1));
        assert_eq!(share(-500, 0, 10_000), 0);
        assert_eq!(share(-500, 100, 0), 0, "nothing paid: no ratio");
        // Tax can never be more than what was paid, nor a share more than the money.
        assert_eq!(share(-100, 5_000, 1_000), -100);
    }
}
