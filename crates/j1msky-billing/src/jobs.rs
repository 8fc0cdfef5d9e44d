//! The background work of billing inside `serve`: the applier of stored webhook events,
//! and the billing timers that need Stripe (due resumes, usage reports, invoices).

use std::future::Future;
use std::pin::Pin;

use j1msky_core::catalogue::{Catalogue, LiveCatalogue};
use j1msky_db::timers::{self, Fired, Handlers, Occurrence, Recurrence};
use j1msky_db::Db;

use crate::apply;
use crate::webhook::apply_pending;

/// Applies stored events until `stop`: at once when woken, else every `idle`. `applied`
/// is notified after each batch applied, so the consumers of what it emitted (the
/// customers' plan and stage) run right after.
#[allow(clippy::too_many_arguments)]
pub async fn run_applier(
    db: Db,
    catalogue: impl Into<LiveCatalogue>,
    clock: std::sync::Arc<dyn j1msky_core::Clock>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    applied: std::sync::Arc<tokio::sync::Notify>,
    idle: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let catalogue: LiveCatalogue = catalogue.into();
    loop {
        if *stop.borrow() {
            return;
        }
        // Each round reads the catalogue in force then (an operator may apply another).
        let ctx = apply::Ctx { catalogue: catalogue.snapshot() };
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

/// Timer kinds of billing. Per-minute kinds are keyed by their minute
/// (`2026-11-30T20:31`), the monthly invoices by the month they bill (`2026-11`), a
/// resume by its subscription and date (`sub_…@<unix seconds>`).
pub const COMPLETE_INVOICE_LINES: &str = "billing.complete_invoice_lines";
pub const RESUME: &str = crate::changes::RESUME_TIMER;
pub const SYNC_CONTRACTS: &str = "billing.sync_contracts";
pub const REPORT_USAGE: &str = "billing.report_usage";
pub const INVOICE_MONTH: &str = "billing.invoice_month";
pub const RESTRICT_OVERDUE: &str = "billing.restrict_overdue";
pub const PRUNE_TIMERS: &str = "billing.prune_timers";
pub const FETCH_FEES: &str = "billing.fetch_fees";

const MINUTE: i64 = 60_000_000;
const DAY: i64 = 86_400_000_000;
/// Per-minute occurrences are kept this long once done, then pruned.
const KEEP_DONE: i64 = 2 * DAY;
const INVOICE_DELAY: i64 = 3_600_000_000;

/// The background work of billing that needs Stripe, as durable timers: invoices of
/// stored events completed (their lines past Stripe's first page), contract prices,
/// pay-per-task charges reported, customers past their grace period restricted (each
/// minute), last month's pay-per-task invoices (each month), due resumes (one timer per
/// pause). Schedules what start-up needs, then fires due timers until `stop`.
pub async fn run_billing_jobs(
    db: Db,
    catalogue: LiveCatalogue,
    clock: std::sync::Arc<dyn j1msky_core::Clock>,
    stripe: crate::Stripe,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let handlers = handlers(&db, catalogue.clone(), &stripe);
    if let Err(e) = schedule_startup(&db, &catalogue, &handlers, clock.now_micros()).await {
        tracing::error!(error = %e, "scheduling the billing timers; they start with the next restart");
    }
    timers::run(db, handlers, clock, stop).await;
}

/// Schedules, idempotently, the current occurrence of each recurring billing timer and
/// a resume timer for each pause recorded without one (before timers existed).
pub async fn schedule_startup(
    db: &Db,
    catalogue: &Catalogue,
    handlers: &Handlers,
    now: i64,
) -> Result<(), crate::BillingError> {
    handlers.schedule_recurring(db, now).await?;
    let pauses = crate::changes::pending_resumes(db, catalogue).await?;
    for (subscription, customer, resume_at) in pauses {
        crate::changes::schedule_resume(db, &subscription, &customer, resume_at, now).await?;
    }
    Ok(())
}

/// The handlers of every billing timer.
pub fn handlers(db: &Db, catalogue: impl Into<LiveCatalogue>, stripe: &crate::Stripe) -> Handlers {
    let every_minute = Recurrence { current: this_minute, next: next_minute, max_attempts: 3 };
    let every_month = Recurrence { current: last_month, next: month_after, max_attempts: 10 };
    let every_day = Recurrence { current: today, next: tomorrow, max_attempts: 3 };
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.into(), stripe: stripe.clone() };
    Handlers::new()
        .recurring(
            COMPLETE_INVOICE_LINES,
            every_minute,
            with(&ctx, |c, _| async move {
                let n = crate::invoice_lines::complete_pending(&c.db, &c.stripe).await?;
                if n > 0 {
                    tracing::info!(completed = n, "invoices fetched whole from Stripe for booking");
                }
                Ok(())
            }),
        )
        .recurring(
            SYNC_CONTRACTS,
            every_minute,
            with(&ctx, |c, _| async move {
                crate::contracts::sync_live(&c.db, &c.stripe, &c.catalogue).await?;
                Ok(())
            }),
        )
        .recurring(
            REPORT_USAGE,
            every_minute,
            with(&ctx, |c, fired| async move {
                let n = crate::usage::report(&c.db, &c.stripe, &c.catalogue, 500, fired.now).await?;
                if n > 0 {
                    tracing::info!(reported = n, "pay-per-task charges reported to Stripe");
                }
                Ok(())
            }),
        )
        .recurring(
            FETCH_FEES,
            every_minute,
            with(&ctx, |c, fired| async move {
                let n = crate::fees::fetch_due(&c.db, &c.stripe, fired.now).await?;
                if n > 0 {
                    tracing::info!(invoices = n, "Stripe's processing fees read for paid invoices");
                }
                Ok(())
            }),
        )
        .recurring(
            RESTRICT_OVERDUE,
            every_minute,
            with(&ctx, |c, fired| async move {
                let n = restrict_overdue(&c.db, &c.catalogue, fired.now).await?;
                if n > 0 {
                    tracing::info!(restricted = n, "customers restricted after a failed payment");
                }
                Ok(())
            }),
        )
        .recurring(
            INVOICE_MONTH,
            every_month,
            with(&ctx, |c, fired| async move {
                // The key is the month billed; Stripe's key and our per-customer mark keep a
                // retried occurrence from invoicing anyone twice.
                crate::usage::invoice_pay_per_task(&c.db, &c.stripe, &fired.key, fired.now).await?;
                Ok(())
            }),
        )
        .recurring(
            PRUNE_TIMERS,
            every_day,
            with(&ctx, |c, fired| async move {
                for kind in [COMPLETE_INVOICE_LINES, SYNC_CONTRACTS, REPORT_USAGE, RESTRICT_OVERDUE, FETCH_FEES] {
                    timers::prune_done(&c.db, kind, fired.now - KEEP_DONE).await?;
                }
                Ok(())
            }),
        )
        .on(
            RESUME,
            with(&ctx, |c, fired| async move {
                let subscription = fired.payload["subscription"].as_str().ok_or_else(|| {
                    crate::BillingError::Malformed(format!("resume timer {}: payload has no subscription", fired.key))
                })?;
                crate::changes::resume_if_due(&c.db, &c.stripe, &c.catalogue, subscription, crate::secs(fired.now))
                    .await?;
                Ok(())
            }),
        )
}

/// What the billing handlers share.
#[derive(Clone)]
struct Ctx {
    db: Db,
    catalogue: LiveCatalogue,
    stripe: crate::Stripe,
}

/// A handler over `ctx`, its billing error turned into the timer's retry message.
fn with<F, Fut>(ctx: &Ctx, f: F) -> impl Fn(Fired) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
where
    F: Fn(Ctx, Fired) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), crate::BillingError>> + Send + 'static,
{
    let ctx = ctx.clone();
    move |fired| {
        let (ctx, f) = (ctx.clone(), f.clone());
        Box::pin(async move { f(ctx, fired).await.map_err(|e| e.to_string()) })
    }
}

fn minute_at(start: i64) -> Occurrence {
    let key = chrono::DateTime::from_timestamp_micros(start).unwrap_or_default().format("%Y-%m-%dT%H:%M").to_string();
    Occurrence { key, run_at: start }
}

fn this_minute(t: i64) -> Occurrence {
    minute_at(t.div_euclid(MINUTE) * MINUTE)
}

fn next_minute(_due: i64, now: i64) -> Occurrence {
    minute_at(now.div_euclid(MINUTE) * MINUTE + MINUTE)
}

fn today(t: i64) -> Occurrence {
    let start = t.div_euclid(DAY) * DAY;
    let key = chrono::DateTime::from_timestamp_micros(start).unwrap_or_default().format("%Y-%m-%d").to_string();
    Occurrence { key, run_at: start }
}

fn tomorrow(_due: i64, now: i64) -> Occurrence {
    today(now.div_euclid(DAY) * DAY + DAY)
}

/// The occurrence billing the month before the one `t` is in. It is due an hour into
/// the month, so the month's last charges (API days close at midnight) are reported first.
fn last_month(t: i64) -> Occurrence {
    Occurrence { key: previous_month(t), run_at: month_start(t) + INVOICE_DELAY }
}

/// The occurrence after the one due at `due`: each month is invoiced, even one missed
/// while nothing ran.
fn month_after(due: i64, _now: i64) -> Occurrence {
    last_month(month_start(month_start(due) + 32 * DAY))
}

/// The first instant (UTC microseconds) of the month `t` is in.
fn month_start(t: i64) -> i64 {
    use chrono::Datelike;
    let d = chrono::DateTime::from_timestamp_micros(t).unwrap_or_default().date_naive();
    d.with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)).map_or(t, |d| d.and_utc().timestamp_micros())
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

    #[test]
    fn months_and_minutes_follow_each_other() {
        // 2026-11-25, 2026-12-01 and 2027-01-01 (UTC).
        let (nov_25, dec_1, jan_1) = (1_795_564_800_000_000, 1_796_083_200_000_000, 1_798_761_600_000_000);
        let hour = super::INVOICE_DELAY;
        assert_eq!(super::last_month(nov_25).key, "2026-10");
        assert_eq!(super::last_month(dec_1), super::Occurrence { key: "2026-11".into(), run_at: dec_1 + hour });
        let november = super::last_month(dec_1).run_at;
        assert_eq!(
            super::month_after(november, november),
            super::Occurrence { key: "2026-12".into(), run_at: jan_1 + hour }
        );
        // Fired late, past another month's start: the month skipped is still next.
        assert_eq!(super::month_after(november, jan_1 + 2 * hour).key, "2026-12");
        assert_eq!(super::next_minute(nov_25, nov_25 + 59_999_999).key, "2026-11-25T00:01");
        assert_eq!(super::this_minute(nov_25 + 60_000_000).run_at, nov_25 + 60_000_000);
    }
}
