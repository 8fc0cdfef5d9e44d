//! A granted trial ends by itself: starting one schedules the durable timer
//! `ops.trial_end` (key: the customer) at its end date, in the start's transaction. When
//! it fires, a customer still in stage `trial` moves to `churned` through accounts'
//! `trials::end_in` and its owner's `trial_ended` mail is queued, in one transaction that
//! also completes the timer: a retry or a second process finds the timer done (or the
//! customer moved) and writes nothing again. A customer converted or cancelled before
//! the end is left as it is. Admission already refuses the trial's calls and tasks from
//! the end date on, whether or not the timer has fired yet.

use j1msky_accounts::trials;
use j1msky_audit::Actor;
use j1msky_db::timers::{self, Fired, Handlers, NewTimer};
use sqlx::AnyConnection;

use super::{mail, LeadError, Mailer};
use crate::Ctx;

/// The timer that ends a trial.
pub const TRIAL_END_TIMER: &str = "ops.trial_end";
/// Attempts before the timer is `failed` (retried with the timers' back-off).
const ATTEMPTS: i64 = 8;

/// Inside the caller's transaction: schedules the end of `customer_id`'s trial at
/// `ends_at` (a no-op when it was scheduled before).
pub async fn schedule(conn: &mut AnyConnection, customer_id: &str, ends_at: i64, now: i64) -> Result<(), LeadError> {
    let payload = serde_json::json!({ "customer_id": customer_id });
    let timer = NewTimer {
        kind: TRIAL_END_TIMER,
        key: customer_id,
        payload: &payload,
        run_at: ends_at,
        max_attempts: ATTEMPTS,
    };
    timers::schedule(conn, &timer, now).await?;
    Ok(())
}

/// Schedules the end of every running trial that has none yet (trials started before
/// the timer existed, or restored from a backup): what a process does at start.
pub async fn seed(ctx: &Ctx, now: i64) -> Result<usize, LeadError> {
    let running = trials::running_list(&ctx.db).await?;
    let mut conn = ctx.db.pool().acquire().await?;
    for t in &running {
        schedule(&mut conn, &t.customer_id, t.ends_at, now).await?;
    }
    Ok(running.len())
}

/// Ends the trial the timer names, if it still runs; returns whether it ended it.
pub async fn end(ctx: &Ctx, mailer: &Mailer, fired: &Fired) -> Result<bool, LeadError> {
    let customer_id = fired.payload["customer_id"].as_str().unwrap_or(fired.key.as_str());
    let owner = j1msky_accounts::users::list(&ctx.db, Some(customer_id))
        .await?
        .into_iter()
        .find(|u| u.role == j1msky_core::vocab::UserRole::Owner);
    let mut tx = ctx.db.begin().await?;
    let ended = trials::end_in(&mut tx, ctx.db.backend(), &Actor::system(), customer_id, fired.now).await?;
    if let Some((customer, trial)) = &ended {
        mail::trial_ended(&mut tx, ctx, mailer, customer, trial, owner.as_ref(), fired.now).await?;
    }
    if fired.complete(&mut tx).await? {
        tx.commit().await?;
        if ended.is_some() {
            tracing::info!(customer = customer_id, "trial ended without a plan: moved to churned");
        }
        return Ok(ended.is_some());
    }
    // The lease went to another process: it does the work.
    tx.rollback().await?;
    Ok(false)
}

/// The trial-end timer's handler.
pub fn timer_handlers(ctx: &Ctx, mailer: &Mailer, h: Handlers) -> Handlers {
    let (ctx, mailer) = (ctx.clone(), mailer.clone());
    h.on(TRIAL_END_TIMER, move |fired| {
        let (ctx, mailer) = (ctx.clone(), mailer.clone());
        async move { end(&ctx, &mailer, &fired).await.map(|_| ()).map_err(|e| e.to_string()) }
    })
}
