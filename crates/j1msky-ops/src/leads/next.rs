//! Pilot mode's next in line: a slot frees when a granted trial leaves stage `trial`
//! (converted through Checkout, closed, or ended by its timer), and the lead first in
//! line must not be forgotten. The consumer `ops.pilot` sees every such stage change and
//! schedules the timer `ops.pilot_slot_freed` (key: the event) in its transaction; the
//! timer, outside any consumer transaction (starting a trial writes in a transaction of
//! its own), looks at the pilot: with a slot free and a lead waiting, a lead the operator
//! had qualified with a plan is started through `trial::start_next` (the same path as
//! the admin button and `j1msky lead trial --next`: invite mail and stage history), and
//! either way the operators get an alert (`pilot_slot_free`) naming it. The alert's id
//! carries the timer's key, so a retried timer raises it once.

use j1msky_accounts::AccountsError;
use j1msky_audit::{alerts, Actor};
use j1msky_core::events::{Kind, Typed};
use j1msky_core::vocab::Stage;
use j1msky_db::consumers::{Consumer, Handled, Handler, OnFailure};
use j1msky_db::outbox::Event;
use j1msky_db::timers::{self, Fired, Handlers, NewTimer};
use j1msky_db::Backend;
use sqlx::AnyConnection;

use super::trial::{self, Outcome};
use super::{get, LeadError, Mailer};
use crate::Ctx;

/// The timer that looks for the next in line once a slot freed.
pub const SLOT_FREED_TIMER: &str = "ops.pilot_slot_freed";
/// The alert kind naming the next in line.
pub const ALERT_KIND: &str = "pilot_slot_free";
const ATTEMPTS: i64 = 8;

/// The consumer that notices freed pilot slots.
pub fn consumer() -> Consumer {
    Consumer::new("ops.pilot", &[Kind::CustomerStageChanged], OnFailure::SkipAndPark, OnStageChanged)
}

struct OnStageChanged;

impl Handler for OnStageChanged {
    fn handle<'a>(&'a self, conn: &'a mut AnyConnection, _backend: Backend, event: &'a Event, now: i64) -> Handled<'a> {
        Box::pin(async move { Ok(on_stage_changed(conn, event, now).await?) })
    }
}

async fn on_stage_changed(conn: &mut AnyConnection, event: &Event, now: i64) -> Result<(), LeadError> {
    let Some(Typed::CustomerStageChanged(c)) = event.typed() else { return Ok(()) };
    if c.from != Stage::Trial || c.to == Stage::Trial {
        return Ok(());
    }
    let payload = serde_json::json!({ "customer_id": event.customer_id });
    let timer =
        NewTimer { kind: SLOT_FREED_TIMER, key: &event.id, payload: &payload, run_at: now, max_attempts: ATTEMPTS };
    timers::schedule(conn, &timer, now).await?;
    Ok(())
}

/// What a freed slot led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Freed {
    /// Pilot mode off, nobody waiting, or the slot already taken again.
    Nothing,
    /// The next in line was qualified with a plan: its trial started.
    Started(Outcome),
    /// The next in line needs the operator (not qualified, or its start was refused): named in an alert.
    Named { customer_id: String, reason: String },
}

/// Looks at the pilot after a slot freed (`key` makes the alert unique): starts or
/// names the next in line. Completes `fired` in the alert's transaction when given.
pub async fn slot_freed(
    ctx: &Ctx,
    mailer: &Mailer,
    key: &str,
    fired: Option<&Fired>,
    now: i64,
) -> Result<Freed, LeadError> {
    let pilot = trial::pilot(ctx).await?;
    let next = match (pilot.slots, pilot.waiting.first()) {
        (Some(slots), Some(next)) if pilot.running < slots => Some(next.clone()),
        _ => None,
    };
    let freed = match next {
        None => Freed::Nothing,
        Some(id) => {
            let lead = get(ctx, &id).await?;
            if lead.stage != Stage::Qualified || lead.suggested_plan.is_none() {
                let reason = "not yet qualified with a plan: qualify it, then start its trial".to_string();
                Freed::Named { customer_id: id, reason }
            } else {
                match trial::start_next(ctx, mailer, &Actor::system(), now).await {
                    Ok(Some(started @ Outcome::Started { .. })) => Freed::Started(started),
                    Ok(_) => Freed::Nothing,
                    Err(
                        e @ (LeadError::Invalid { .. }
                        | LeadError::Conflict(_)
                        | LeadError::Accounts(AccountsError::Invalid { .. } | AccountsError::Conflict(_))),
                    ) => Freed::Named { customer_id: id, reason: format!("its trial could not start: {e}") },
                    Err(e) => return Err(e),
                }
            }
        }
    };
    let named = match &freed {
        Freed::Started(Outcome::Started { customer_id, .. }) | Freed::Named { customer_id, .. } => {
            Some(get(ctx, customer_id).await?)
        }
        _ => None,
    };
    let alert = match (&freed, named) {
        (Freed::Started(Outcome::Started { customer_id, plan, .. }), Some(lead)) => Some((
            customer_id.clone(),
            format!(
                "A pilot slot freed up: the next in line, {} ({}), was qualified, so its trial of the {plan} \
                 plan started and the invite was mailed (/admin/leads/{customer_id})",
                lead.company, lead.email
            ),
        )),
        (Freed::Named { customer_id, reason }, Some(lead)) => Some((
            customer_id.clone(),
            format!(
                "A pilot slot is free: next in line is {} ({}), {reason} (/admin/leads/{customer_id})",
                lead.company, lead.email
            ),
        )),
        _ => None,
    };
    let mut tx = ctx.db.begin().await?;
    if let Some((customer_id, message)) = alert {
        let detail = serde_json::json!({ "customer_id": customer_id, "freed_by": key });
        alerts::record(&mut tx, &format!("{ALERT_KIND}:{key}"), ALERT_KIND, &message, &detail, now).await?;
    }
    match fired {
        Some(f) if !f.complete(&mut tx).await? => tx.rollback().await?,
        _ => tx.commit().await?,
    }
    Ok(freed)
}

/// The slot-freed timer's handler.
pub fn timer_handlers(ctx: &Ctx, mailer: &Mailer, h: Handlers) -> Handlers {
    let (ctx, mailer) = (ctx.clone(), mailer.clone());
    h.on(SLOT_FREED_TIMER, move |fired| {
        let (ctx, mailer) = (ctx.clone(), mailer.clone());
        async move {
            let key = fired.key.clone();
            slot_freed(&ctx, &mailer, &key, Some(&fired), fired.now).await.map(|_| ()).map_err(|e| e.to_string())
        }
    })
}
