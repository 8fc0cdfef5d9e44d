//! Starting a trial, and pilot mode: with the setting `pilot.slots` = N, at most N
//! granted trials run at once; a lead asked to start beyond that waits on the list
//! (`ops_leads.waiting_since`). When a trial ends (paid, closed, or past its date) the
//! next in line is started by `start_next` (the admin button, `j1msky lead trial --next`,
//! and `next`'s timer when the operator had qualified it with a plan).

use serde::Serialize;

use super::{get, mail, LeadError, Mailer};
use crate::Ctx;
use j1msky_accounts::trials::{self, NewTrial};
use j1msky_audit::{settings, Actor};
use j1msky_core::vocab::Stage;

/// The setting that turns pilot mode on: how many trials may run at once.
pub const PILOT_SLOTS: &str = "pilot.slots";
/// Tasks a trial includes unless the operator says otherwise.
pub const DEFAULT_TRIAL_TASKS: i64 = 25;

/// The trial's terms as the operator chose them (`None`: the default).
#[derive(Debug, Clone, Default)]
pub struct Terms {
    pub plan: Option<String>,
    pub days: Option<i64>,
    pub tasks: Option<i64>,
}

/// What starting a trial did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Started: the owner was mailed a set-password link.
    Started { customer_id: String, owner_email: String, ends_at: i64, tasks: i64, plan: String },
    /// Every pilot slot is taken: the lead waits, at this place in line (1 = next).
    Waiting { customer_id: String, position: i64 },
}

/// Pilot mode as it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pilot {
    /// `None`: pilot mode is off (no limit).
    pub slots: Option<i64>,
    pub running: i64,
    /// Customer ids, first in line first.
    pub waiting: Vec<String>,
}

/// The pilot's slots setting (`None`: off).
pub async fn slots(ctx: &Ctx) -> Result<Option<i64>, LeadError> {
    let set = settings::with_prefix(&ctx.db, PILOT_SLOTS).await?;
    Ok(set.iter().find(|s| s.key == PILOT_SLOTS).and_then(|s| s.value.parse().ok()))
}

/// Turns pilot mode on with `slots` trials at most, or off (`None`); audited in the
/// settings history.
pub async fn set_slots(ctx: &Ctx, actor: &Actor, slots: Option<i64>, now: i64) -> Result<(), LeadError> {
    if slots.is_some_and(|n| !(0..=10_000).contains(&n)) {
        return Err(LeadError::invalid("slots", "a number of trials from 0 to 10000"));
    }
    let value = slots.map(|n| n.to_string());
    // The pilot's forms ask no reason; the history says what was set.
    let reason = match slots {
        Some(n) => format!("pilot mode: {n} trial slots"),
        None => "pilot mode off".to_string(),
    };
    let mut tx = ctx.db.begin().await?;
    settings::put(&mut tx, actor, PILOT_SLOTS, value.as_deref(), &reason, now).await?;
    tx.commit().await?;
    Ok(())
}

/// The pilot: slots, running trials and the waiting list.
pub async fn pilot(ctx: &Ctx) -> Result<Pilot, LeadError> {
    let running = trials::running(&ctx.db).await?;
    let waiting: Vec<(String,)> = sqlx::query_as(
        "SELECT customer_id FROM ops_leads WHERE waiting_since IS NOT NULL ORDER BY waiting_since, customer_id",
    )
    .fetch_all(ctx.db.pool())
    .await?;
    Ok(Pilot { slots: slots(ctx).await?, running, waiting: waiting.into_iter().map(|(c,)| c).collect() })
}

/// Starts a trial for a lead (stage lead or qualified): the owner (the lead's contact)
/// is created and mailed a set-password link, the stage moves to `trial` (which starts
/// the onboarding journeys), and billing is told the free trial was had, so the first
/// checkout is paid. In pilot mode with every slot taken the lead waits instead.
pub async fn start(
    ctx: &Ctx,
    mailer: &Mailer,
    actor: &Actor,
    customer_id: &str,
    terms: &Terms,
    now: i64,
) -> Result<Outcome, LeadError> {
    let lead = get(ctx, customer_id).await?;
    let plan = terms
        .plan
        .clone()
        .filter(|p| !p.trim().is_empty())
        .or(lead.suggested_plan.clone())
        .ok_or_else(|| LeadError::invalid("plan", "name the plan to try"))?;
    let new = NewTrial {
        plan,
        days: terms.days.unwrap_or(i64::from(ctx.catalogue.trial_days)),
        tasks: terms.tasks.unwrap_or(DEFAULT_TRIAL_TASKS),
        owner_email: lead.email.clone(),
        owner_name: lead.contact_name.clone(),
    };
    trials::check(&ctx.catalogue, &new)?;
    if !matches!(lead.stage, Stage::Lead | Stage::Qualified) {
        return Err(LeadError::Conflict(format!("{} is in stage {}: no trial to start", lead.company, lead.stage)));
    }
    let pilot_slots = slots(ctx).await?;
    let backend = ctx.db.backend();
    let mut tx = ctx.db.begin().await?;
    if let Some(n) = pilot_slots {
        if trials::running_in(&mut tx, backend).await? >= n {
            sqlx::query(
                "UPDATE ops_leads SET waiting_since = COALESCE(waiting_since, $1), updated_at = $1
                 WHERE customer_id = $2",
            )
            .bind(now)
            .bind(customer_id)
            .execute(&mut *tx)
            .await?;
            let (since,): (i64,) = sqlx::query_as("SELECT waiting_since FROM ops_leads WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_one(&mut *tx)
                .await?;
            let (position,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM ops_leads
                 WHERE waiting_since < $1 OR (waiting_since = $1 AND customer_id <= $2)",
            )
            .bind(since)
            .bind(customer_id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Outcome::Waiting { customer_id: customer_id.to_string(), position });
        }
    }
    let started = trials::start_in(&mut tx, backend, &ctx.catalogue, actor, customer_id, &new, now).await?;
    sqlx::query("UPDATE ops_leads SET waiting_since = NULL, updated_at = $1 WHERE customer_id = $2")
        .bind(now)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
    mail::trial_invite(&mut tx, ctx, mailer, &started, now).await?;
    super::ending::schedule(&mut tx, customer_id, started.trial.ends_at, now).await?;
    tx.commit().await?;
    // After the commit: a failure here leaves the grant unrecorded for billing, which the
    // operator sees in the log; checkout still offers no second trial (`trial_available`
    // reads the trial itself too).
    if let Err(e) = j1msky_billing::offers::record_trial_had(&ctx.db, customer_id, actor.as_str(), now).await {
        tracing::error!(customer = customer_id, error = %e, "recording the granted trial for billing");
    }
    Ok(Outcome::Started {
        customer_id: customer_id.to_string(),
        owner_email: started.owner.email,
        ends_at: started.trial.ends_at,
        tasks: started.trial.tasks,
        plan: started.trial.plan,
    })
}

/// Starts the trial of the first lead in line, if a slot is free; `Ok(None)` when
/// nobody waits. A lead still without a free slot stays in line (`Waiting`).
pub async fn start_next(ctx: &Ctx, mailer: &Mailer, actor: &Actor, now: i64) -> Result<Option<Outcome>, LeadError> {
    let first = pilot(ctx).await?.waiting.into_iter().next();
    match first {
        Some(id) => Ok(Some(start(ctx, mailer, actor, &id, &Terms::default(), now).await?)),
        None => Ok(None),
    }
}
