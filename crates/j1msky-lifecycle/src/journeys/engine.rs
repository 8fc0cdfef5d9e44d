//! The step engine. An enrollment runs its steps inside the caller's transaction until
//! it reaches a wait: `wait` schedules a step timer, `wait_until` parks the enrollment in
//! `lifecycle_waits` with a timeout timer. Timer keys are `<enrollment>:<step>:<n>`,
//! `n` counting the steps the enrollment has run, so a timer fires once across
//! processes and a stale one (the enrollment moved on or ended) does nothing. Steps are
//! read from the definition pinned in the enrollment, never from the live catalogue.

use chrono::{Duration, NaiveDateTime, TimeZone};
use j1msky_core::catalogue::lifecycle::{Journey, Step};
use j1msky_db::timers::{self, Fired, NewTimer};
use j1msky_db::Backend;
use sqlx::{AnyConnection, Row};

use super::{attributes, conditions, context};
use crate::delivery::{self, Category, NewMessage};
use crate::todos::{self, NewTodo};
use crate::{Ctx, LifecycleError};

/// Timer kind: a `wait` step is over, go on with the step after it.
pub const STEP_TIMER: &str = "lifecycle.journey_step";
/// Timer kind: a `wait_until` step timed out.
pub const TIMEOUT_TIMER: &str = "lifecycle.journey_timeout";
/// Timer kind: grant an `offer` step's offer through billing (Stripe is called outside
/// the step's transaction).
pub const OFFER_TIMER: &str = "lifecycle.journey_offer";

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// More steps than this without a wait is a loop in the journey.
const MAX_STEPS_AT_ONCE: usize = 64;

/// An active enrollment as the engine needs it.
pub(crate) struct Running {
    pub id: String,
    pub customer_id: String,
    pub journey: String,
    pub def: Journey,
    pub steps_run: i64,
    pub started_at: i64,
}

/// The enrollment `id` when still active.
pub(crate) async fn load_active(conn: &mut AnyConnection, id: &str) -> Result<Option<Running>, LifecycleError> {
    let row = sqlx::query(
        "SELECT id, customer_id, journey, definition, steps_run, started_at FROM lifecycle_enrollments
         WHERE id = $1 AND state = 'active'",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let definition: String = r.try_get(3)?;
    let def: Journey = serde_json::from_str(&definition)
        .map_err(|e| LifecycleError::Conflict(format!("enrollment {id}: stored journey definition unreadable: {e}")))?;
    Ok(Some(Running {
        id: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        journey: r.try_get(2)?,
        def,
        steps_run: r.try_get(4)?,
        started_at: r.try_get(5)?,
    }))
}

/// Ends an active enrollment (`completed` or `exited`) and drops its pending wait.
pub(crate) async fn finish(
    conn: &mut AnyConnection,
    id: &str,
    state: &str,
    reason: &str,
    now: i64,
) -> Result<bool, LifecycleError> {
    let done = sqlx::query(
        "UPDATE lifecycle_enrollments SET state = $2, ended_at = $3, end_reason = $4, current_step = NULL
         WHERE id = $1 AND state = 'active'",
    )
    .bind(id)
    .bind(state)
    .bind(now)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM lifecycle_waits WHERE enrollment_id = $1").bind(id).execute(&mut *conn).await?;
    Ok(done.rows_affected() == 1)
}

async fn log(
    conn: &mut AnyConnection,
    e: &Running,
    step: &str,
    occurrence: i64,
    outcome: &str,
    detail: Option<&str>,
    now: i64,
) -> Result<(), LifecycleError> {
    sqlx::query(
        "INSERT INTO lifecycle_step_log (enrollment_id, step, occurrence, outcome, detail, at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (enrollment_id, step, occurrence) DO NOTHING",
    )
    .bind(&e.id)
    .bind(step)
    .bind(occurrence)
    .bind(outcome)
    .bind(detail)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The customer's zone, else the business's, else UTC.
async fn zone(conn: &mut AnyConnection, ctx: &Ctx, customer_id: &str) -> Result<chrono_tz::Tz, LifecycleError> {
    let c = j1msky_accounts::customers::get_in(conn, customer_id).await?;
    Ok(c.time_zone.parse().or_else(|_| ctx.catalogue.business.time_zone.parse()).unwrap_or(chrono_tz::UTC))
}

/// The first instant at or after `after` (micros) that reads `hh:mm` on a wall clock in
/// `tz`. On a spring-forward day whose `hh:mm` does not exist, the first instant after
/// the gap; on a fall-back day whose `hh:mm` happens twice, the first of the two.
pub fn next_local_time(tz: chrono_tz::Tz, after: i64, hh: u32, mm: u32) -> i64 {
    let Some(utc) = chrono::DateTime::from_timestamp_micros(after) else { return after };
    let mut date = utc.with_timezone(&tz).date_naive();
    for _ in 0..3 {
        if let Some(naive) = date.and_hms_opt(hh, mm, 0) {
            if let Some(at) = resolve(tz, naive) {
                if at >= after {
                    return at;
                }
            }
        }
        date = date.succ_opt().unwrap_or(date);
    }
    after
}

fn resolve(tz: chrono_tz::Tz, naive: NaiveDateTime) -> Option<i64> {
    if let Some(t) = tz.from_local_datetime(&naive).earliest() {
        return Some(t.timestamp_micros());
    }
    // In a gap: walk forward a minute at a time to its end (gaps are at most a few hours).
    let mut n = naive;
    for _ in 0..(4 * 60) {
        n += Duration::minutes(1);
        if let Some(t) = tz.from_local_datetime(&n).earliest() {
            return Some(t.timestamp_micros());
        }
    }
    None
}

/// Starts a new enrollment at its first step, due at `due` (called by `enroll`).
pub(crate) async fn start(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    id: &str,
    due: i64,
    now: i64,
) -> Result<(), LifecycleError> {
    let Some(mut e) = load_active(conn, id).await? else { return Ok(()) };
    let first = e.def.steps.first().map(|s| s.id().to_string());
    run_from(conn, backend, ctx, &mut e, first, due, now).await
}

/// Runs the enrollment from step `next` (due at `due`) until a wait, an exit or the end.
pub(crate) async fn run_from(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    e: &mut Running,
    mut next: Option<String>,
    due: i64,
    now: i64,
) -> Result<(), LifecycleError> {
    for _ in 0..MAX_STEPS_AT_ONCE {
        let Some(step_id) = next.take() else {
            finish(conn, &e.id, "completed", "completed", now).await?;
            return Ok(());
        };
        let step = e
            .def
            .step(&step_id)
            .cloned()
            .ok_or_else(|| LifecycleError::Conflict(format!("journey {}: no step `{step_id}`", e.journey)))?;
        e.steps_run += 1;
        let occ = e.steps_run;
        sqlx::query("UPDATE lifecycle_enrollments SET current_step = $2, steps_run = $3 WHERE id = $1")
            .bind(&e.id)
            .bind(&step_id)
            .bind(occ)
            .execute(&mut *conn)
            .await?;
        let key = format!("{}:{step_id}:{occ}", e.id);
        let following = e.def.following(&step_id).map(String::from);
        match &step {
            Step::Wait { days, hours, until_local_time, grace_percent, .. } => {
                // A grace wait counts from the enrollment's start, in shares of the grace
                // period the catalogue gives today (the journey's dunning spreads over it).
                let grace_end = e.started_at + i64::from(ctx.catalogue.stripe.past_due_grace_days) * DAY;
                let mut run_at = match grace_percent {
                    Some(p) => e.started_at + (grace_end - e.started_at) * i64::from((*p).min(100)) / 100,
                    None => due + i64::from(*days) * DAY + i64::from(*hours) * HOUR,
                };
                if let Some((hh, mm)) =
                    until_local_time.as_deref().and_then(j1msky_core::catalogue::lifecycle::parse_local_time)
                {
                    let tz = zone(conn, ctx, &e.customer_id).await?;
                    let local = next_local_time(tz, run_at, hh, mm);
                    if grace_percent.is_none() || local < grace_end {
                        run_at = local;
                    }
                }
                let payload = serde_json::json!({"enrollment": e.id, "step": step_id, "occurrence": occ});
                let t = NewTimer { kind: STEP_TIMER, key: &key, payload: &payload, run_at, max_attempts: 10 };
                timers::schedule(conn, &t, now).await?;
                return Ok(());
            }
            Step::WaitUntil { event, condition, timeout_hours, then, .. } => {
                if let Some(cond) = condition {
                    if conditions::holds(conn, cond, &e.customer_id, e.started_at).await? {
                        log(conn, e, &step_id, occ, "happened", Some(cond), now).await?;
                        next = Some(then.clone());
                        continue;
                    }
                }
                let timeout_at = due + i64::from(*timeout_hours) * HOUR;
                sqlx::query(
                    "INSERT INTO lifecycle_waits (enrollment_id, customer_id, step, occurrence, event, condition, timeout_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&e.id)
                .bind(&e.customer_id)
                .bind(&step_id)
                .bind(occ)
                .bind(event.as_deref())
                .bind(condition.as_deref())
                .bind(timeout_at)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                let payload = serde_json::json!({"enrollment": e.id, "step": step_id, "occurrence": occ});
                let t = NewTimer {
                    kind: TIMEOUT_TIMER,
                    key: &key,
                    payload: &payload,
                    run_at: timeout_at,
                    max_attempts: 10,
                };
                timers::schedule(conn, &t, now).await?;
                return Ok(());
            }
            Step::Branch { condition, then, otherwise, .. } => {
                let yes = conditions::holds(conn, condition, &e.customer_id, e.started_at).await?;
                log(conn, e, &step_id, occ, if yes { "then" } else { "otherwise" }, Some(condition), now).await?;
                next = Some(if yes { then.clone() } else { otherwise.clone() });
            }
            Step::Send { template, stale_after_hours, needs_link, .. } => {
                let stale_at = stale_after_hours.map(|h| due + i64::from(h) * HOUR);
                let missing = needs_link.as_deref().filter(|l| ctx.catalogue.lifecycle.delivery.links.get(l).is_none());
                if let Some(link) = missing {
                    log(conn, e, &step_id, occ, "skipped_no_link", Some(link), now).await?;
                } else if stale_at.is_some_and(|s| now > s) {
                    log(conn, e, &step_id, occ, "skipped_stale", Some(template), now).await?;
                } else if let Some(kind) = crate::surveys::SurveyKind::for_template(template) {
                    // A survey mail carries its own one-time link: the survey module makes
                    // the link and queues the mail (once per open survey).
                    let queued = crate::surveys::send(conn, backend, ctx, &e.customer_id, kind, now).await?;
                    log(conn, e, &step_id, occ, "queued", queued.as_deref(), now).await?;
                } else {
                    let context = context::of_customer(conn, ctx, &e.customer_id, now).await?;
                    let rendered = crate::templates::render(ctx, template, &context)?;
                    let category = Category::parse(&e.def.category).unwrap_or(Category::Onboarding);
                    let msg = NewMessage {
                        customer_id: &e.customer_id,
                        source: &e.id,
                        step: &step_id,
                        occurrence: occ,
                        category,
                        template,
                        rendered: &rendered,
                        not_before: now,
                        stale_at,
                    };
                    let queued = delivery::enqueue(conn, backend, &msg, now).await?;
                    log(conn, e, &step_id, occ, "queued", queued.as_deref(), now).await?;
                }
                next = following;
            }
            Step::Todo { reason, due_days, .. } => {
                let dedupe = format!("{}:{step_id}", e.id);
                let todo = NewTodo {
                    customer_id: Some(&e.customer_id),
                    reason,
                    dedupe_key: &dedupe,
                    due_at: now + i64::from(*due_days) * DAY,
                };
                let id = todos::create(conn, backend, &todo, now).await?;
                log(conn, e, &step_id, occ, "todo", id.as_deref(), now).await?;
                next = following;
            }
            Step::Offer { offer, on_refused, .. } => {
                // Billing's own rule first, in this transaction: a refused offer is never
                // announced (the mail after this step is not queued).
                if let Some(why) =
                    j1msky_billing::offers::refusal_in(conn, &ctx.catalogue, &e.customer_id, offer, now).await?
                {
                    log(conn, e, &step_id, occ, "offer_refused", Some(&why), now).await?;
                    match on_refused {
                        Some(to) => next = Some(to.clone()),
                        None => {
                            finish(conn, &e.id, "exited", "offer refused", now).await?;
                            return Ok(());
                        }
                    }
                } else if ctx.stripe.is_some() {
                    // Granted outside any transaction (it calls Stripe): the enrollment
                    // waits here and the timer goes on, or takes the refusal, once billing
                    // has answered.
                    let payload = serde_json::json!({
                        "enrollment": e.id, "customer": e.customer_id, "offer": offer,
                        "step": step_id, "occurrence": occ,
                    });
                    let t = NewTimer { kind: OFFER_TIMER, key: &key, payload: &payload, run_at: now, max_attempts: 5 };
                    timers::schedule(conn, &t, now).await?;
                    return Ok(());
                } else {
                    let reason = format!(
                        "Grant offer `{offer}` by hand: no Stripe client is configured, so the journey could not"
                    );
                    let dedupe = format!("{}:{step_id}", e.id);
                    let todo = NewTodo {
                        customer_id: Some(&e.customer_id),
                        reason: &reason,
                        dedupe_key: &dedupe,
                        due_at: now,
                    };
                    todos::create(conn, backend, &todo, now).await?;
                    log(conn, e, &step_id, occ, "offer_todo", Some(offer), now).await?;
                    next = following;
                }
            }
            Step::SetAttribute { name, value, .. } => {
                attributes::set(conn, &e.customer_id, name, value, now).await?;
                log(conn, e, &step_id, occ, "set", Some(&format!("{name}={value}")), now).await?;
                next = following;
            }
            Step::Exit { .. } => {
                finish(conn, &e.id, "completed", &format!("exit step {step_id}"), now).await?;
                return Ok(());
            }
        }
    }
    Err(LifecycleError::Conflict(format!(
        "journey {}: more than {MAX_STEPS_AT_ONCE} steps without a wait (a loop?)",
        e.journey
    )))
}

fn payload_str<'a>(f: &'a Fired, k: &str) -> Result<&'a str, String> {
    f.payload.get(k).and_then(|v| v.as_str()).ok_or_else(|| format!("timer {} without `{k}`", f.key))
}

/// A `wait` step's timer: goes on with the step after it (due when the timer was due).
pub(crate) async fn on_step_timer(ctx: Ctx, f: Fired) -> Result<(), String> {
    let enrollment = payload_str(&f, "enrollment")?;
    let step = payload_str(&f, "step")?;
    let occ = f.payload.get("occurrence").and_then(|v| v.as_i64()).unwrap_or(-1);
    let backend = ctx.db.backend();
    let mut tx = ctx.db.begin().await.map_err(|e| e.to_string())?;
    if let Some(mut e) = load_active(&mut tx, enrollment).await.map_err(|e| e.to_string())? {
        // A timer of a step the enrollment has left behind does nothing.
        if e.steps_run == occ {
            let next = e.def.following(step).map(String::from);
            run_from(&mut tx, backend, &ctx, &mut e, next, f.run_at, f.now).await.map_err(|e| e.to_string())?;
        }
    }
    if f.complete(&mut tx).await.map_err(|e| e.to_string())? {
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A `wait_until` step's timeout: takes `on_timeout` unless the event came first.
pub(crate) async fn on_timeout_timer(ctx: Ctx, f: Fired) -> Result<(), String> {
    let enrollment = payload_str(&f, "enrollment")?;
    let step = payload_str(&f, "step")?;
    let occ = f.payload.get("occurrence").and_then(|v| v.as_i64()).unwrap_or(-1);
    let backend = ctx.db.backend();
    let mut tx = ctx.db.begin().await.map_err(|e| e.to_string())?;
    if claim_wait(&mut tx, enrollment, step, occ).await.map_err(|e| e.to_string())? {
        if let Some(mut e) = load_active(&mut tx, enrollment).await.map_err(|e| e.to_string())? {
            if let Some(Step::WaitUntil { on_timeout, .. }) = e.def.step(step).cloned() {
                log(&mut tx, &e, step, occ, "timed_out", None, f.now).await.map_err(|e| e.to_string())?;
                run_from(&mut tx, backend, &ctx, &mut e, Some(on_timeout), f.run_at, f.now)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    if f.complete(&mut tx).await.map_err(|e| e.to_string())? {
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Takes a parked wait: true for exactly one caller (the event's consumer or the
/// timeout), whoever deletes the row first; the other waits for that commit (PostgreSQL
/// row lock, SQLite's single writer) and then finds nothing.
pub(crate) async fn claim_wait(
    conn: &mut AnyConnection,
    enrollment: &str,
    step: &str,
    occ: i64,
) -> Result<bool, LifecycleError> {
    let done = sqlx::query("DELETE FROM lifecycle_waits WHERE enrollment_id = $1 AND step = $2 AND occurrence = $3")
        .bind(enrollment)
        .bind(step)
        .bind(occ)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Wakes the customer's parked waits that `kind` (an event just handled) satisfies:
/// the event they wait for, or a condition that now holds.
pub(crate) async fn wake(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    customer_id: &str,
    kind: &str,
    now: i64,
) -> Result<(), LifecycleError> {
    let rows = sqlx::query(
        "SELECT enrollment_id, step, occurrence, event, condition FROM lifecycle_waits WHERE customer_id = $1 ORDER BY created_at",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        let enrollment: String = r.try_get(0)?;
        let step: String = r.try_get(1)?;
        let occ: i64 = r.try_get(2)?;
        let event: Option<String> = r.try_get(3)?;
        let condition: Option<String> = r.try_get(4)?;
        let Some(mut e) = load_active(conn, &enrollment).await? else { continue };
        let happened = match (&event, &condition) {
            (Some(ev), _) => ev == kind,
            (None, Some(c)) => conditions::holds(conn, c, customer_id, e.started_at).await?,
            (None, None) => false,
        };
        if !happened || !claim_wait(conn, &enrollment, &step, occ).await? {
            continue;
        }
        if let Some(Step::WaitUntil { then, .. }) = e.def.step(&step).cloned() {
            log(conn, &e, &step, occ, "happened", Some(kind), now).await?;
            run_from(conn, backend, ctx, &mut e, Some(then), now, now).await?;
        }
    }
    Ok(())
}

/// An `offer` step's grant through billing, outside any transaction (it calls Stripe),
/// then the enrollment goes on: to the next step when granted, to `on_refused` (or out)
/// when billing refused. Billing refuses a second grant of the same offer, so a retry
/// after a crash finds this enrollment's own grant and counts it as granted.
pub(crate) async fn on_offer_timer(ctx: Ctx, f: Fired) -> Result<(), String> {
    let customer = payload_str(&f, "customer")?;
    let offer = payload_str(&f, "offer")?;
    let enrollment = payload_str(&f, "enrollment")?;
    let Some(stripe) = ctx.stripe.as_ref() else { return Err("no Stripe client configured".into()) };
    let by = format!("journey:{enrollment}");
    let refused =
        match j1msky_billing::offers::grant(&ctx.db, stripe, &ctx.catalogue, customer, offer, &by, f.now).await {
            Ok(_) => None,
            Err(j1msky_billing::BillingError::Invalid { field: "offer", message: m }) => {
                let mine = j1msky_billing::offers::for_customer(&ctx.db, customer)
                    .await
                    .map_err(|e| e.to_string())?
                    .iter()
                    .any(|g| g.offer == offer && g.granted_by == by);
                if mine {
                    None
                } else {
                    tracing::info!(customer, offer, reason = %m, "journey offer not granted");
                    Some(m)
                }
            }
            Err(e) => return Err(e.to_string()),
        };
    let (Ok(step), Some(occ)) = (payload_str(&f, "step"), f.payload.get("occurrence").and_then(|v| v.as_i64())) else {
        // A timer scheduled before offer steps waited for their grant: nothing to resume.
        let mut tx = ctx.db.begin().await.map_err(|e| e.to_string())?;
        if f.complete(&mut tx).await.map_err(|e| e.to_string())? {
            tx.commit().await.map_err(|e| e.to_string())?;
        }
        return Ok(());
    };
    let backend = ctx.db.backend();
    let mut tx = ctx.db.begin().await.map_err(|e| e.to_string())?;
    if let Some(mut e) = load_active(&mut tx, enrollment).await.map_err(|e| e.to_string())? {
        if e.steps_run == occ {
            let on_refused = match e.def.step(step) {
                Some(Step::Offer { on_refused, .. }) => on_refused.clone(),
                _ => None,
            };
            let go = async {
                match &refused {
                    None => {
                        log(&mut tx, &e, step, occ, "offer_granted", Some(offer), f.now).await?;
                        let next = e.def.following(step).map(String::from);
                        run_from(&mut tx, backend, &ctx, &mut e, next, f.run_at, f.now).await
                    }
                    Some(why) => {
                        log(&mut tx, &e, step, occ, "offer_refused", Some(why), f.now).await?;
                        match on_refused {
                            Some(to) => run_from(&mut tx, backend, &ctx, &mut e, Some(to), f.run_at, f.now).await,
                            None => finish(&mut tx, &e.id, "exited", "offer refused", f.now).await.map(|_| ()),
                        }
                    }
                }
            };
            go.await.map_err(|e| e.to_string())?;
        }
    }
    if f.complete(&mut tx).await.map_err(|e| e.to_string())? {
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn the_next_local_time_is_dst_safe() {
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        // Before and after the spring change (2026-03-08): 10:00 is UTC-5, then UTC-4.
        assert_eq!(next_local_time(ny, at("2026-03-07T16:00:00Z"), 10, 0), at("2026-03-08T14:00:00Z"));
        assert_eq!(next_local_time(ny, at("2026-03-06T12:00:00Z"), 10, 0), at("2026-03-06T15:00:00Z"));
        // 02:30 does not exist on 2026-03-08: the first instant after the gap (03:00 EDT).
        assert_eq!(next_local_time(ny, at("2026-03-08T05:00:00Z"), 2, 30), at("2026-03-08T07:00:00Z"));
        // 01:30 happens twice on 2026-11-01: the first one (EDT, UTC-4).
        assert_eq!(next_local_time(ny, at("2026-11-01T04:00:00Z"), 1, 30), at("2026-11-01T05:30:00Z"));
        // After the fall change 10:00 is UTC-5 again.
        assert_eq!(next_local_time(ny, at("2026-11-01T12:00:00Z"), 10, 0), at("2026-11-01T15:00:00Z"));
        // Exactly at the time: that instant, not the next day.
        assert_eq!(next_local_time(chrono_tz::UTC, at("2026-03-03T10:00:00Z"), 10, 0), at("2026-03-03T10:00:00Z"));
    }
}
