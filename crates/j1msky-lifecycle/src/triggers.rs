//! Retention triggers: conditions over customers and events that enroll customers in
//! journeys (every journey whose `entry.on` is `trigger:<id>`), open staff to-dos or raise
//! alerts. Each firing is a row of `lifecycle_trigger_firings`, unique on
//! (trigger, customer, occurrence), so a trigger acts once per occurrence however often
//! it is evaluated.
//!
//! - Event-driven triggers (`consumers`, inside the consumer's transaction): plan limit
//!   hits, task outcomes (low success, high usage), failed payments, trial ends, Customer
//!   Portal cancels; the same consumer keeps the inactivity read model
//!   (`lifecycle_activity`) from logins, API calls and tasks.
//! - Time-driven triggers (`sweep`, an hourly durable timer): inactivity thresholds and
//!   the churn spike.

mod sweep;

pub use sweep::{churn_numbers, sweep, ChurnNumbers};

use j1msky_core::events::Kind;
use j1msky_db::consumers::{Consumer, Handled, Handler, OnFailure};
use j1msky_db::outbox::Event;
use j1msky_db::timers::{Handlers, Occurrence, Recurrence};
use j1msky_db::Backend;
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::{todos, Ctx, LifecycleError};

/// The consumer's name (its cursor row).
pub const CONSUMER: &str = "lifecycle.triggers";
/// The sweep's recurring timer kind.
pub const SWEEP_TIMER: &str = "lifecycle.trigger_sweep";
/// The `customer_id` of a business-wide firing (the churn spike).
pub const BUSINESS: &str = "-";

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;

/// The events that count as activity (a login, an API call, a task).
const ACTIVITY: &[Kind] = &[Kind::UserLoggedIn, Kind::CustomerActive, Kind::TaskSubmitted];

/// One trigger that fired (or, in a dry run, would fire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fired {
    pub trigger: String,
    pub customer_id: String,
    pub occurrence: String,
    /// What it did: `journey:<id>`, `todo:<reason>`, `alert`, … joined with `, `.
    pub action: String,
}

/// Records a firing; false when this (trigger, customer, occurrence) already fired.
async fn record(conn: &mut AnyConnection, f: &Fired, now: i64) -> Result<bool, LifecycleError> {
    let inserted = sqlx::query(
        "INSERT INTO lifecycle_trigger_firings (id, trigger_id, customer_id, occurrence, action, fired_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (trigger_id, customer_id, occurrence) DO NOTHING",
    )
    .bind(j1msky_core::ids::new_id("trf"))
    .bind(&f.trigger)
    .bind(&f.customer_id)
    .bind(&f.occurrence)
    .bind(&f.action)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The journeys trigger `id` enrolls (`entry.on = "trigger:<id>"`).
pub fn journeys_of<'a>(ctx: &'a Ctx, id: &str) -> Vec<&'a str> {
    let on = format!("trigger:{id}");
    ctx.catalogue.lifecycle.journeys.iter().filter(|(_, j)| j.entry.on == on).map(|(n, _)| n.as_str()).collect()
}

/// Fires trigger `id` for `customer_id` at `occurrence`: records it and enrolls the
/// customer in the trigger's journeys. `None` when this occurrence already fired.
pub(crate) async fn fire_journeys(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    id: &str,
    customer_id: &str,
    occurrence: &str,
    now: i64,
) -> Result<Option<Fired>, LifecycleError> {
    let journeys = journeys_of(ctx, id);
    let action = if journeys.is_empty() {
        "none (no journey has this trigger as its entry)".to_string()
    } else {
        journeys.iter().map(|j| format!("journey:{j}")).collect::<Vec<_>>().join(", ")
    };
    let f = Fired { trigger: id.into(), customer_id: customer_id.into(), occurrence: occurrence.into(), action };
    if !record(conn, &f, now).await? {
        return Ok(None);
    }
    let entry_key = format!("trigger:{id}:{occurrence}");
    for j in journeys {
        crate::journeys::enroll(conn, backend, ctx, customer_id, j, &entry_key, now).await?;
    }
    Ok(Some(f))
}

/// Fires trigger `id` as a staff to-do with `reason`. `None` when it already fired.
pub(crate) async fn fire_todo(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    id: &str,
    customer_id: &str,
    occurrence: &str,
    reason: &str,
    now: i64,
) -> Result<Option<Fired>, LifecycleError> {
    let f = Fired {
        trigger: id.into(),
        customer_id: customer_id.into(),
        occurrence: occurrence.into(),
        action: format!("todo:{reason}"),
    };
    if !record(conn, &f, now).await? {
        return Ok(None);
    }
    let key = format!("trigger:{id}:{customer_id}:{occurrence}");
    let due_at = now + i64::from(ctx.catalogue.lifecycle.triggers.todo_due_days) * DAY;
    todos::create(
        conn,
        ctx.db.backend(),
        &todos::NewTodo { customer_id: Some(customer_id), reason, dedupe_key: &key, due_at },
        now,
    )
    .await?;
    Ok(Some(f))
}

/// Notes activity of `customer_id` at `at`: the quiet spell restarts (a later mark wins;
/// an older one, replayed or late, changes nothing).
pub async fn touch(conn: &mut AnyConnection, customer_id: &str, at: i64) -> Result<(), LifecycleError> {
    sqlx::query(
        "INSERT INTO lifecycle_activity (customer_id, last_active_at, inactive_level) VALUES ($1, $2, 0)
         ON CONFLICT (customer_id) DO UPDATE SET last_active_at = excluded.last_active_at, inactive_level = 0
         WHERE lifecycle_activity.last_active_at < excluded.last_active_at",
    )
    .bind(customer_id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The triggers' consumer: exactly once per event, inside the consumer's transaction.
pub fn consumers(ctx: &Ctx) -> Vec<Consumer> {
    let mut kinds = vec![Kind::CustomerCreated];
    kinds.extend_from_slice(ACTIVITY);
    kinds.extend_from_slice(&[
        Kind::PlanLimitHit,
        Kind::TaskSucceeded,
        Kind::TaskFailed,
        Kind::InvoicePaymentFailed,
        Kind::SubscriptionTrialWillEnd,
        Kind::SubscriptionCancelled,
    ]);
    vec![Consumer::new(CONSUMER, &kinds, OnFailure::SkipAndPark, OnEvent(ctx.clone()))]
}

struct OnEvent(Ctx);

impl Handler for OnEvent {
    fn handle<'a>(&'a self, conn: &'a mut AnyConnection, backend: Backend, event: &'a Event, now: i64) -> Handled<'a> {
        Box::pin(async move { Ok(on_event(conn, backend, &self.0, event, now).await.map(|_| ())?) })
    }
}

/// What the triggers do with one event; the firings it caused.
pub async fn on_event(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    event: &Event,
    now: i64,
) -> Result<Vec<Fired>, LifecycleError> {
    let Some(customer) = event.customer_id.as_deref() else { return Ok(Vec::new()) };
    let Some(kind) = Kind::parse(&event.kind) else { return Ok(Vec::new()) };
    let seq = event.seq.to_string();
    let mut fired = Vec::new();
    match kind {
        Kind::CustomerCreated | Kind::UserLoggedIn | Kind::CustomerActive | Kind::TaskSubmitted => {
            touch(conn, customer, event.created_at).await?;
        }
        Kind::PlanLimitHit => {
            fired.extend(fire_journeys(conn, backend, ctx, "limit_hit", customer, &seq, now).await?);
            if !fired.is_empty() {
                let t = &ctx.catalogue.lifecycle.triggers.upgrade;
                let expires = now + i64::from(t.valid_days) * DAY;
                let granted_by = format!("trigger:limit_hit:{seq}");
                j1msky_billing::offers::hold_for_upgrade(
                    conn,
                    backend,
                    &ctx.catalogue,
                    customer,
                    &t.offer,
                    &granted_by,
                    expires,
                    now,
                )
                .await?;
            }
        }
        Kind::TaskSucceeded | Kind::TaskFailed => {
            fired.extend(low_success(conn, ctx, customer, event, now).await?);
            if kind == Kind::TaskSucceeded {
                fired.extend(high_usage(conn, backend, ctx, customer, event, now).await?);
            }
        }
        Kind::InvoicePaymentFailed => {
            // One dunning run per failed invoice, however many retries Stripe reports.
            let invoice = event.payload["invoice"].as_str().map_or(seq.clone(), String::from);
            fired.extend(fire_journeys(conn, backend, ctx, "payment_failed", customer, &invoice, now).await?);
        }
        Kind::SubscriptionTrialWillEnd => {
            let sub = event.payload["subscription"].as_str().unwrap_or_default();
            let occurrence = format!("{sub}:{}", event.payload["trial_end"]);
            fired.extend(fire_journeys(conn, backend, ctx, "trial_ending", customer, &occurrence, now).await?);
        }
        Kind::SubscriptionCancelled if event.payload["source"].as_str() == Some("customer_portal") => {
            let sub = event.payload["subscription"].as_str().map_or(seq.clone(), String::from);
            fired.extend(fire_journeys(conn, backend, ctx, "portal_cancel", customer, &sub, now).await?);
        }
        _ => {}
    }
    Ok(fired)
}

/// Low success: fewer than `below_percent` % of the customer's last `last_tasks` finished
/// tasks succeeded. It fires when the rate falls below and again only after it recovered
/// (the recovery closes the open firing).
async fn low_success(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    customer: &str,
    event: &Event,
    now: i64,
) -> Result<Option<Fired>, LifecycleError> {
    let cfg = &ctx.catalogue.lifecycle.triggers.low_success;
    let rows = sqlx::query(
        "SELECT kind FROM events WHERE customer_id = $1 AND kind IN ('task.succeeded', 'task.failed') AND seq <= $2
         ORDER BY seq DESC LIMIT $3",
    )
    .bind(customer)
    .bind(event.seq)
    .bind(i64::from(cfg.last_tasks))
    .fetch_all(&mut *conn)
    .await?;
    if rows.len() < cfg.last_tasks as usize {
        return Ok(None);
    }
    let mut ok = 0u64;
    for r in &rows {
        let k: String = r.try_get(0)?;
        ok += u64::from(k == "task.succeeded");
    }
    let low = ok * 100 < u64::from(cfg.below_percent) * rows.len() as u64;
    let open: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM lifecycle_trigger_firings WHERE trigger_id = 'low_success' AND customer_id = $1
         AND cleared_at IS NULL",
    )
    .bind(customer)
    .fetch_optional(&mut *conn)
    .await?;
    match (low, open) {
        (true, None) => {
            let reason = format!(
                "Proactive support: only {ok} of their last {} tasks succeeded — call them and help",
                rows.len()
            );
            fire_todo(conn, ctx, "low_success", customer, &event.seq.to_string(), &reason, now).await
        }
        (false, Some((id,))) => {
            sqlx::query("UPDATE lifecycle_trigger_firings SET cleared_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// High usage: at least `tasks` tasks succeeded in the last `days` days; once per such
/// period of `days` days.
async fn high_usage(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    customer: &str,
    event: &Event,
    now: i64,
) -> Result<Option<Fired>, LifecycleError> {
    let cfg = &ctx.catalogue.lifecycle.triggers.high_usage;
    let window = i64::from(cfg.days) * DAY;
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM events WHERE customer_id = $1 AND kind = 'task.succeeded' AND created_at > $2
         AND seq <= $3",
    )
    .bind(customer)
    .bind(event.created_at - window)
    .bind(event.seq)
    .fetch_one(&mut *conn)
    .await?;
    if n < i64::from(cfg.tasks) {
        return Ok(None);
    }
    let period = event.created_at.div_euclid(window).to_string();
    fire_journeys(conn, backend, ctx, "high_usage", customer, &period, now).await
}

/// The firings of the last `limit`, newest first (the CLI and the admin pages).
pub async fn recent(db: &j1msky_db::Db, limit: i64) -> Result<Vec<(Fired, i64)>, LifecycleError> {
    let rows = sqlx::query(
        "SELECT trigger_id, customer_id, occurrence, action, fired_at FROM lifecycle_trigger_firings
         ORDER BY fired_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let f = Fired {
                trigger: r.try_get(0)?,
                customer_id: r.try_get(1)?,
                occurrence: r.try_get(2)?,
                action: r.try_get(3)?,
            };
            Ok((f, r.try_get(4)?))
        })
        .collect()
}

fn this_hour(t: i64) -> Occurrence {
    let start = t.div_euclid(HOUR) * HOUR;
    let key = chrono::DateTime::from_timestamp_micros(start).unwrap_or_default().format("%Y-%m-%dT%H").to_string();
    Occurrence { key, run_at: start }
}

fn next_hour(_due: i64, now: i64) -> Occurrence {
    this_hour(now.div_euclid(HOUR) * HOUR + HOUR)
}

/// The triggers' timers: the sweep, every hour (a missed hour is not caught up one by
/// one: the next sweep sees everything that became due meanwhile).
pub fn timer_handlers(ctx: &Ctx, h: Handlers) -> Handlers {
    let every_hour = Recurrence { current: this_hour, next: next_hour, max_attempts: 3 };
    let ctx = ctx.clone();
    h.recurring(SWEEP_TIMER, every_hour, move |fired| {
        let ctx = ctx.clone();
        async move {
            let done = sweep(&ctx, fired.now, false).await.map_err(|e| e.to_string())?;
            if !done.is_empty() {
                tracing::info!(fired = done.len(), "retention triggers fired");
            }
            Ok(())
        }
    })
}
