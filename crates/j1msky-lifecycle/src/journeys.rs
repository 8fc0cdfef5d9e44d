//! Journeys: enrollments pinned to a journey version and the step engine
//! (`engine`), its named conditions (`conditions`), customer attributes (`attributes`)
//! and the template context built from the customer's own tasks (`context`).

pub mod attributes;
pub mod conditions;
pub mod context;
pub mod engine;
pub mod preview;

use j1msky_core::catalogue::lifecycle::ReEntry;
use j1msky_db::consumers::{Consumer, Handled, Handler, HandlerError, OnFailure};
use j1msky_db::outbox::Event;
use j1msky_db::timers::Handlers;
use j1msky_db::Backend;
use sqlx::{AnyConnection, Row};

use crate::{Ctx, LifecycleError};

pub use engine::{next_local_time, OFFER_TIMER, STEP_TIMER, TIMEOUT_TIMER};

/// Enrolls `customer_id` in `journey` inside the caller's transaction, following the
/// journey's entry and re-entry rules; `Ok(None)` when the rules say no (already in it,
/// or finished it and re-entry is not allowed yet). `entry_key` makes the call
/// idempotent (the event seq or trigger occurrence). The journey's definition is pinned
/// in the enrollment row, and its first steps run at once (up to the first wait).
pub async fn enroll(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    customer_id: &str,
    journey: &str,
    entry_key: &str,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    enroll_due(conn, backend, ctx, customer_id, journey, entry_key, now, now).await
}

/// `enroll` for an entry that happened at `due` (the entry event's time): the first
/// waits count from then, so a consumer catching up late keeps the schedule.
#[allow(clippy::too_many_arguments)]
pub async fn enroll_due(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    customer_id: &str,
    journey: &str,
    entry_key: &str,
    due: i64,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    let def = ctx
        .catalogue
        .lifecycle
        .journeys
        .get(journey)
        .ok_or_else(|| LifecycleError::NotFound(format!("journey `{journey}`")))?;
    let rows = sqlx::query(
        "SELECT state, ended_at FROM lifecycle_enrollments WHERE journey = $1 AND customer_id = $2
         ORDER BY started_at DESC",
    )
    .bind(journey)
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let state: String = row.try_get(0)?;
        let ended_at: Option<i64> = row.try_get(1)?;
        if state == "active" {
            return Ok(None);
        }
        let allowed = match def.entry.re_entry {
            ReEntry::Never => false,
            ReEntry::AfterDays { days } => ended_at.is_some_and(|e| now - e >= i64::from(days) * 86_400_000_000),
        };
        if !allowed {
            return Ok(None);
        }
    }
    let definition = serde_json::to_string(def)
        .map_err(|e| LifecycleError::invalid(format!("lifecycle.journeys.{journey}"), e.to_string()))?;
    let id = j1msky_core::ids::new_id("enr");
    let first = def.steps.first().map(|s| s.id().to_string());
    let inserted = sqlx::query(
        "INSERT INTO lifecycle_enrollments (id, customer_id, journey, version, definition, entry_key, state,
             current_step, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8)
         ON CONFLICT (journey, customer_id, entry_key) DO NOTHING",
    )
    .bind(&id)
    .bind(customer_id)
    .bind(journey)
    .bind(i64::from(def.version))
    .bind(definition)
    .bind(entry_key)
    .bind(first)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() != 1 {
        return Ok(None);
    }
    engine::start(conn, backend, ctx, &id, due.min(now), now).await?;
    Ok(Some(id))
}

/// One enrollment as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Enrollment {
    pub id: String,
    pub customer_id: String,
    pub journey: String,
    pub version: i64,
    pub state: String,
    pub current_step: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

/// A customer's enrollments, newest first.
pub async fn of_customer(db: &j1msky_db::Db, customer_id: &str) -> Result<Vec<Enrollment>, LifecycleError> {
    list(db, Some(customer_id), i64::MAX).await
}

/// Enrollments, newest first: one customer's, or everyone's (at most `limit`).
pub async fn list(
    db: &j1msky_db::Db,
    customer_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Enrollment>, LifecycleError> {
    let rows = sqlx::query(
        "SELECT id, customer_id, journey, version, state, current_step, started_at, ended_at, end_reason
         FROM lifecycle_enrollments WHERE ($1 IS NULL OR customer_id = $1) ORDER BY started_at DESC, id DESC LIMIT $2",
    )
    .bind(customer_id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Enrollment {
                id: r.try_get(0)?,
                customer_id: r.try_get(1)?,
                journey: r.try_get(2)?,
                version: r.try_get(3)?,
                state: r.try_get(4)?,
                current_step: r.try_get(5)?,
                started_at: r.try_get(6)?,
                ended_at: r.try_get(7)?,
                end_reason: r.try_get(8)?,
            })
        })
        .collect()
}

/// Enrollments counted per (journey, state, current step).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepCount {
    pub journey: String,
    pub state: String,
    pub step: Option<String>,
    pub count: i64,
}

/// How many enrollments are at each step (active ones) or in each end state.
pub async fn counts(db: &j1msky_db::Db) -> Result<Vec<StepCount>, LifecycleError> {
    let rows = sqlx::query(
        "SELECT journey, state, current_step, COUNT(*) FROM lifecycle_enrollments
         GROUP BY journey, state, current_step ORDER BY journey, state, current_step",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StepCount { journey: r.try_get(0)?, state: r.try_get(1)?, step: r.try_get(2)?, count: r.try_get(3)? })
        })
        .collect()
}

/// What one step of an enrollment did (`queued`, `skipped_stale`, `then`, `timed_out`, …).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepRecord {
    pub step: String,
    pub occurrence: i64,
    pub outcome: String,
    pub detail: Option<String>,
    pub at: i64,
}

/// The steps an enrollment ran, in order.
pub async fn history(db: &j1msky_db::Db, enrollment_id: &str) -> Result<Vec<StepRecord>, LifecycleError> {
    let rows = sqlx::query(
        "SELECT step, occurrence, outcome, detail, at FROM lifecycle_step_log WHERE enrollment_id = $1 ORDER BY occurrence",
    )
    .bind(enrollment_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StepRecord {
                step: r.try_get(0)?,
                occurrence: r.try_get(1)?,
                outcome: r.try_get(2)?,
                detail: r.try_get(3)?,
                at: r.try_get(4)?,
            })
        })
        .collect()
}

/// The consumer's name (its cursor row).
pub const CONSUMER: &str = "lifecycle.journeys";

/// The journey engine's consumer: on a customer's event it ends the enrollments the
/// event exits (`exit_on`, `activity`), wakes `wait_until` steps, and enrolls in the
/// journeys the event enters, all in the consumer's transaction.
pub fn consumers(ctx: &Ctx) -> Vec<Consumer> {
    vec![Consumer::new(CONSUMER, j1msky_core::events::Kind::ALL, OnFailure::SkipAndPark, Journeys { ctx: ctx.clone() })]
}

struct Journeys {
    ctx: Ctx,
}

impl Handler for Journeys {
    fn handle<'a>(&'a self, conn: &'a mut AnyConnection, backend: Backend, event: &'a Event, now: i64) -> Handled<'a> {
        Box::pin(async move {
            on_event(conn, backend, &self.ctx, event, now).await.map_err(|e| Box::new(e) as HandlerError)
        })
    }
}

/// Applies one event to the journeys (what the consumer runs).
pub async fn on_event(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    event: &Event,
    now: i64,
) -> Result<(), LifecycleError> {
    let Some(customer) = event.customer_id.as_deref() else { return Ok(()) };
    let kind = event.kind.as_str();
    // Exits, read from each enrollment's pinned definition.
    let active = sqlx::query("SELECT id FROM lifecycle_enrollments WHERE customer_id = $1 AND state = 'active'")
        .bind(customer)
        .fetch_all(&mut *conn)
        .await?;
    for r in active {
        let id: String = r.try_get(0)?;
        let Some(e) = engine::load_active(conn, &id).await? else { continue };
        let exits =
            e.def.exit_on.iter().any(|x| {
                x == kind || (x == j1msky_core::catalogue::lifecycle::ACTIVITY && conditions::is_activity(kind))
            });
        if exits {
            engine::finish(conn, &id, "exited", kind, now).await?;
        }
    }
    engine::wake(conn, backend, ctx, customer, kind, now).await?;
    let entry_key = format!("event:{}", event.seq);
    let Some(kind) = entry_kind(conn, customer, event).await? else { return Ok(()) };
    for (name, j) in &ctx.catalogue.lifecycle.journeys {
        if j.entry.on == kind {
            enroll_due(conn, backend, ctx, customer, name, &entry_key, event.created_at, now).await?;
        }
    }
    Ok(())
}

/// The attribute a lead from the public form carries ([`ONBOARD_AT_TRIAL`]): its
/// journeys keyed on `customer.created` wait for its trial.
pub const ONBOARD_AT: &str = "onboard_at";
/// Its value.
pub const ONBOARD_AT_TRIAL: &str = "trial";

/// The kind an event enrolls as. A customer marked to be onboarded at its trial (a lead
/// from the public form) enters the `customer.created` journeys when it moves to stage
/// `trial`, not when the lead is stored: a welcome mail before there is an account to
/// sign in to would be wrong.
async fn entry_kind<'k>(
    conn: &mut AnyConnection,
    customer: &str,
    event: &'k Event,
) -> Result<Option<&'k str>, LifecycleError> {
    let kind = event.kind.as_str();
    let to_trial = kind == "customer.stage_changed" && event.payload["to"].as_str() == Some("trial");
    if kind != "customer.created" && !to_trial {
        return Ok(Some(kind));
    }
    let held = attributes::get(conn, customer, ONBOARD_AT).await?.as_deref() == Some(ONBOARD_AT_TRIAL);
    Ok(match (held, to_trial) {
        (false, _) => Some(kind),
        (true, false) => None,
        (true, true) => Some("customer.created"),
    })
}

/// The step timers: waits, wait-until timeouts and offers.
pub fn timer_handlers(ctx: &Ctx, h: Handlers) -> Handlers {
    let (a, b, c) = (ctx.clone(), ctx.clone(), ctx.clone());
    h.on(STEP_TIMER, move |f| engine::on_step_timer(a.clone(), f))
        .on(TIMEOUT_TIMER, move |f| engine::on_timeout_timer(b.clone(), f))
        .on(OFFER_TIMER, move |f| engine::on_offer_timer(c.clone(), f))
}
