//! Journeys: enrollments pinned to a journey version and the step engine.

use j1msky_db::consumers::Consumer;
use j1msky_db::timers::Handlers;
use j1msky_db::Backend;
use sqlx::AnyConnection;

use crate::{Ctx, LifecycleError};

/// Enrolls `customer_id` in `journey` inside the caller's transaction, following the
/// journey's entry and re-entry rules; `Ok(None)` when the rules say no.
/// `entry_key` makes the call idempotent (the event seq or trigger occurrence).
pub async fn enroll(
    _conn: &mut AnyConnection,
    _backend: Backend,
    _ctx: &Ctx,
    _customer_id: &str,
    journey: &str,
    _entry_key: &str,
    _now: i64,
) -> Result<Option<String>, LifecycleError> {
    Err(LifecycleError::NotFound(format!("journey engine (journey `{journey}`)")))
}

/// The journey engine's consumers (entries, exits, wait-until events).
pub fn consumers(_ctx: &Ctx) -> Vec<Consumer> {
    Vec::new()
}

/// The step timers.
pub fn timer_handlers(_ctx: &Ctx, h: Handlers) -> Handlers {
    h
}
