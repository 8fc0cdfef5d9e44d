//! Journeys: enrollments pinned to a journey version and the step engine.

use j1msky_core::catalogue::lifecycle::ReEntry;
use j1msky_db::consumers::Consumer;
use j1msky_db::timers::Handlers;
use j1msky_db::Backend;
use sqlx::{AnyConnection, Row};

use crate::{Ctx, LifecycleError};

/// Enrolls `customer_id` in `journey` inside the caller's transaction, following the
/// journey's entry and re-entry rules; `Ok(None)` when the rules say no (already in it,
/// or finished it and re-entry is not allowed yet). `entry_key` makes the call
/// idempotent (the event seq or trigger occurrence). The journey's definition is pinned
/// in the enrollment row.
pub async fn enroll(
    conn: &mut AnyConnection,
    _backend: Backend,
    ctx: &Ctx,
    customer_id: &str,
    journey: &str,
    entry_key: &str,
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
    Ok((inserted.rows_affected() == 1).then_some(id))
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
    let rows = sqlx::query(
        "SELECT id, customer_id, journey, version, state, current_step, started_at, ended_at, end_reason
         FROM lifecycle_enrollments WHERE customer_id = $1 ORDER BY started_at DESC, id DESC",
    )
    .bind(customer_id)
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

/// The journey engine's consumers (entries, exits, wait-until events).
pub fn consumers(_ctx: &Ctx) -> Vec<Consumer> {
    Vec::new()
}

/// The step timers.
pub fn timer_handlers(_ctx: &Ctx, h: Handlers) -> Handlers {
    h
}
