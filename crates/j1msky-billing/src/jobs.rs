//! The background work of billing inside `serve`: the applier of stored webhook events,
//! and the periodic jobs that need Stripe (due resumes, usage reports, invoices).

use j1msky_db::Db;

use crate::apply;
use crate::webhook::apply_pending;

/// Applies stored events until `stop`: at once when woken, else every `idle`. `applied`
/// is notified after each batch applied, so the consumers of what it emitted (the
/// customers' plan and stage) run right after.
#[allow(clippy::too_many_arguments)]
pub async fn run_applier(
    db: Db,
    catalogue: std::sync::Arc<j1msky_core::catalogue::Catalogue>,
    clock: std::sync::Arc<dyn j1msky_core::Clock>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    applied: std::sync::Arc<tokio::sync::Notify>,
    idle: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let ctx = apply::Ctx { catalogue: &catalogue };
    loop {
        if *stop.borrow() {
            return;
        }
        match apply_pending(&db, &ctx, 200, clock.now_micros()).await {
            Ok(n) if n > 0 => {
                applied.notify_one();
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "applying stripe events"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(idle) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The periodic billing work that needs Stripe: invoices of stored events completed
/// (their lines past Stripe's first page), due resumes, contract prices, pay-per-task
/// charges reported, last month's pay-per-task invoices. Runs every `every` until `stop`.
pub async fn run_billing_jobs(
    db: Db,
    catalogue: std::sync::Arc<j1msky_core::catalogue::Catalogue>,
    clock: std::sync::Arc<dyn j1msky_core::Clock>,
    stripe: crate::Stripe,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let now = clock.now_micros();
        match crate::invoice_lines::complete_pending(&db, &stripe).await {
            Ok(n) if n > 0 => tracing::info!(completed = n, "invoices fetched whole from Stripe for booking"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "fetching invoice lines"),
        }
        if let Err(e) = crate::changes::resume_due(&db, &stripe, &catalogue, crate::secs(now)).await {
            tracing::warn!(error = %e, "resuming paused subscriptions");
        }
        if let Err(e) = crate::contracts::sync_live(&db, &stripe, &catalogue).await {
            tracing::warn!(error = %e, "moving contract subscriptions to their contract price");
        }
        match crate::usage::report(&db, &stripe, &catalogue, 500, now).await {
            Ok(n) if n > 0 => tracing::info!(reported = n, "pay-per-task charges reported to Stripe"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reporting pay-per-task charges"),
        }
        if let Err(e) = crate::usage::invoice_pay_per_task(&db, &stripe, &previous_month(now), now).await {
            tracing::warn!(error = %e, "invoicing pay-per-task customers");
        }
        match restrict_overdue(&db, &catalogue, now).await {
            Ok(n) if n > 0 => tracing::info!(restricted = n, "customers restricted after a failed payment"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "restricting customers past their grace period"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Announces each customer whose grace period after a failed payment has ended (or
/// whose invoice is `unpaid`) once, with a `customer.access_restricted` event.
pub async fn restrict_overdue(
    db: &Db,
    catalogue: &j1msky_core::catalogue::Catalogue,
    now: i64,
) -> Result<usize, crate::BillingError> {
    Ok(j1msky_accounts::access::restrict_overdue(db, catalogue, now).await?)
}

/// `YYYY-MM` of the month before the one `now` (UTC microseconds) is in.
pub fn previous_month(now: i64) -> String {
    use chrono::Datelike;
    let d = chrono::DateTime::from_timestamp_micros(now).unwrap_or_default().date_naive();
    let (y, m) = if d.month() == 1 { (d.year() - 1, 12) } else { (d.year(), d.month() - 1) };
    format!("{y:04}-{m:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn previous_month_crosses_years() {
        // 2026-11-25 and 2027-01-01 (UTC).
        assert_eq!(super::previous_month(1_795_564_800_000_000), "2026-10");
        assert_eq!(super::previous_month(1_798_761_600_000_000), "2026-12");
    }
}
