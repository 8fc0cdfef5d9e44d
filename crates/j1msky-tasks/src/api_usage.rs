//! Direct API calls (`/v1/*`) of pay-per-task customers are billed like their tasks:
//! one usage charge per customer and closed UTC day, at the day's model cost times the
//! catalogue's `api_calls_markup_percent`, rounded up to the cent. The charge
//! then follows the task charges' road (reported to Stripe as an invoice item, invoiced
//! with the month, revenue once paid).
//!
//! Why a day and not a call: a call is a fraction of a cent, and Stripe invoices carry
//! a bounded number of lines; a day is small enough to read on an invoice and closes
//! on its own. Charges are written from the cost ledger once the day is over (plus a
//! margin for the ledger's last group commit), once each: the unique (customer, day)
//! index makes a second run, a second process or a re-run after a restore a no-op.

use j1msky_core::catalogue::Catalogue;
use j1msky_core::events::UsageApiMetered;
use j1msky_db::{outbox, Db};
use sqlx::Row;

use crate::TaskError;

const DAY_MICROS: i64 = 86_400_000_000;
/// A day is charged only this long after it ended: rows settled in its last moments
/// reach the ledger within the gateway's group commit, far less than this.
const SETTLE_MARGIN_MICROS: i64 = 10 * 60 * 1_000_000;
/// How far back a run looks for days not yet charged (a process down for longer than
/// this would leave older days unbilled; the monthly invoice runs well within it).
const LOOKBACK_DAYS: i64 = 35;
/// The tier name a day of API calls is charged under.
pub const API_TIER: &str = "api";

/// Writes the missing charges for closed days of pay-per-task customers' direct API
/// calls; returns how many were written.
pub async fn meter_api_calls(db: &Db, catalogue: &Catalogue, now: i64) -> Result<usize, TaskError> {
    // Days strictly before the one `now - margin` falls in are closed.
    let until = (now - SETTLE_MARGIN_MICROS).div_euclid(DAY_MICROS) * DAY_MICROS;
    let since = until - LOOKBACK_DAYS * DAY_MICROS;
    // Customers without a plan are the pay-per-task ones (admission lets them in only
    // with a payment method on file), and so were those with one for the calls they made
    // before it started (`customers.plan_since`, migration 0051); calls made for a task
    // are billed with the task.
    let rows = sqlx::query(&format!(
        "SELECT l.customer_id, l.created_at / {DAY_MICROS} AS day, CAST(SUM(l.cost_micros) AS BIGINT)
         FROM llm_calls l JOIN customers c ON c.id = l.customer_id
         WHERE l.task_id IS NULL AND (c.plan IS NULL OR l.created_at < c.plan_since) AND l.cost_micros > 0
           AND l.created_at >= $1 AND l.created_at < $2
         GROUP BY l.customer_id, l.created_at / {DAY_MICROS}"
    ))
    .bind(since)
    .bind(until)
    .fetch_all(db.pool())
    .await
    .map_err(j1msky_db::DbError::from)?;
    let mut written = 0;
    for r in rows {
        let customer: String = r.try_get(0).map_err(j1msky_db::DbError::from)?;
        let day: i64 = r.try_get(1).map_err(j1msky_db::DbError::from)?;
        let cost: i64 = r.try_get(2).map_err(j1msky_db::DbError::from)?;
        if charge_day(db, catalogue, &customer, day, cost, now).await? {
            written += 1;
        }
    }
    Ok(written)
}

/// The amount a day of calls costing `cost_micros` is charged: cost times the markup,
/// rounded up to the cent, so what is stored is exactly what Stripe bills (a day of a
/// few cheap calls is one cent, never a silent zero).
pub fn api_charge(catalogue: &Catalogue, cost_micros: i64) -> i64 {
    const CENT: i64 = 10_000;
    let markup = i64::from(catalogue.api_calls_markup_percent);
    let raw = cost_micros.saturating_mul(markup).saturating_add(99) / 100;
    raw.saturating_add(CENT - 1) / CENT * CENT
}

/// `YYYY-MM-DD` of a day number (days since the Unix epoch, UTC).
pub fn day_label(day: i64) -> String {
    chrono::DateTime::from_timestamp_micros(day * DAY_MICROS)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day-{day}"))
}

async fn charge_day(
    db: &Db,
    catalogue: &Catalogue,
    customer: &str,
    day: i64,
    cost: i64,
    now: i64,
) -> Result<bool, TaskError> {
    let label = day_label(day);
    let amount = api_charge(catalogue, cost);
    let mut tx = db.begin().await?;
    let inserted = crate::charges::insert_for_api_day(&mut tx, customer, &label, API_TIER, amount, now).await?;
    if !inserted {
        tx.rollback().await.map_err(j1msky_db::DbError::from)?;
        return Ok(false);
    }
    let event = UsageApiMetered { day: label.clone(), cost_micros: cost, charge_micros: amount };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(customer), now).await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(true)
}

/// Meters every `every` until `stop` (the runtime's job for direct API usage).
pub async fn run_meter(
    db: Db,
    catalogue: j1msky_core::catalogue::LiveCatalogue,
    clock: std::sync::Arc<dyn j1msky_core::Clock>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match meter_api_calls(&db, &catalogue, clock.now_micros()).await {
            Ok(n) if n > 0 => tracing::info!(charges = n, "pay-per-task API usage charged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "charging pay-per-task API usage"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use j1msky_core::catalogue::{Catalogue, SHIPPED};

    #[test]
    fn the_charge_is_the_markup_rounded_up_and_days_are_utc_dates() {
        let c = Catalogue::from_json_str(SHIPPED).expect("catalogue");
        assert_eq!(c.api_calls_markup_percent, 300);
        assert_eq!(super::api_charge(&c, 5_000_000), 15_000_000);
        assert_eq!(super::api_charge(&c, 1_000), 10_000, "3,000 µ$ is billed as a whole cent");
        assert_eq!(super::api_charge(&c, 3_334), 20_000, "10,002 µ$ rounds up to two cents");
        assert_eq!(super::api_charge(&c, 0), 0);
        // 2026-11-30T12:00Z is day 20,422.
        assert_eq!(super::day_label(1_796_040_000_000_000 / super::DAY_MICROS), "2026-11-30");
    }
}
