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
//!
//! A day of calls a customer's plan paid for is metered too, as an included day
//! (`api_included_days`, no charge): its model cost is the business's all the same (the
//! insights count it against the plan's revenue), and a day is metered once, either way,
//! so a customer who leaves its plan is not charged afterwards for days the plan covered.

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

/// Meters the closed days of direct API calls not metered yet: a charge for a day with
/// pay-per-task calls, an included day for one the customer's plan paid for in full;
/// returns how many days were metered.
pub async fn meter_api_calls(db: &Db, catalogue: &Catalogue, now: i64) -> Result<usize, TaskError> {
    // Days strictly before the one `now - margin` falls in are closed.
    let until = (now - SETTLE_MARGIN_MICROS).div_euclid(DAY_MICROS) * DAY_MICROS;
    let since = until - LOOKBACK_DAYS * DAY_MICROS;
    // Calls of customers without a plan are the pay-per-task ones (admission lets them in
    // only with a payment method on file), and so were those of customers with one made
    // before it started (`customers.plan_since`, migration 0051); calls made for a task
    // are billed with the task. An attempt the provider did not answer in time is the
    // business's cost (booked at its most, the provider may bill it), never charged: the
    // customer pays for answers. Days already metered either way are left out here.
    let rows = sqlx::query(&format!(
        "SELECT l.customer_id, l.created_at / {DAY_MICROS} AS day, CAST(SUM(l.cost_micros) AS BIGINT),
             CAST(SUM(CASE WHEN (c.plan IS NULL OR l.created_at < c.plan_since) AND l.outcome <> 'timeout'
                           THEN l.cost_micros ELSE 0 END) AS BIGINT)
         FROM llm_calls l JOIN customers c ON c.id = l.customer_id
         WHERE l.task_id IS NULL AND l.cost_micros > 0 AND l.created_at >= $1 AND l.created_at < $2
         GROUP BY l.customer_id, l.created_at / {DAY_MICROS}"
    ))
    .bind(since)
    .bind(until)
    .fetch_all(db.pool())
    .await
    .map_err(j1msky_db::DbError::from)?;
    // The days of the window metered already, either way, are skipped here rather than
    // each found by a transaction of its own (every customer with direct calls has up to
    // LOOKBACK_DAYS of them at each run).
    let metered: Vec<(String, String)> = sqlx::query_as(
        "SELECT customer_id, api_day FROM usage_charges WHERE api_day >= $1
         UNION SELECT customer_id, api_day FROM api_included_days WHERE api_day >= $1",
    )
    .bind(day_label(since / DAY_MICROS))
    .fetch_all(db.pool())
    .await
    .map_err(j1msky_db::DbError::from)?;
    let metered: std::collections::HashSet<(String, String)> = metered.into_iter().collect();
    let mut written = 0;
    for r in rows {
        let customer: String = r.try_get(0).map_err(j1msky_db::DbError::from)?;
        let day: i64 = r.try_get(1).map_err(j1msky_db::DbError::from)?;
        if metered.contains(&(customer.clone(), day_label(day))) {
            continue;
        }
        let cost: i64 = r.try_get(2).map_err(j1msky_db::DbError::from)?;
        let billable: i64 = r.try_get(3).map_err(j1msky_db::DbError::from)?;
        if meter_day(db, catalogue, &customer, day, (cost, billable), now).await? {
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

/// Meters one day once: `(cost, billable)` are the day's model cost and the part of it
/// pay-per-task calls made. Returns whether it was metered now (not before).
async fn meter_day(
    db: &Db,
    catalogue: &Catalogue,
    customer: &str,
    day: i64,
    (cost, billable): (i64, i64),
    now: i64,
) -> Result<bool, TaskError> {
    let label = day_label(day);
    let mut tx = db.begin().await?;
    let included: Option<(i64,)> =
        sqlx::query_as("SELECT cost_micros FROM api_included_days WHERE customer_id = $1 AND api_day = $2")
            .bind(customer)
            .bind(&label)
            .fetch_optional(&mut *tx)
            .await
            .map_err(j1msky_db::DbError::from)?;
    let amount = if billable > 0 { api_charge(catalogue, billable) } else { 0 };
    let metered = match included {
        Some(_) => false,
        None if amount > 0 => {
            crate::charges::insert_for_api_day(&mut tx, customer, &label, API_TIER, amount, now).await?
        }
        None => {
            // An included day is written only where no charge is: both are once per day.
            sqlx::query(
                "INSERT INTO api_included_days (customer_id, api_day, cost_micros, created_at)
                 SELECT $1, $2, $3, $4 WHERE NOT EXISTS
                     (SELECT 1 FROM usage_charges WHERE customer_id = $1 AND api_day = $2)
                 ON CONFLICT (customer_id, api_day) DO NOTHING",
            )
            .bind(customer)
            .bind(&label)
            .bind(cost)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(j1msky_db::DbError::from)?
            .rows_affected()
                == 1
        }
    };
    if !metered {
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
            Ok(n) if n > 0 => tracing::info!(days = n, "direct API usage metered"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "metering direct API usage"),
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
