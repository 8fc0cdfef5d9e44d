//! PostgreSQL: a worker's claim and its ends, each one statement (one round trip) that
//! changes the task and writes its event together. The event's insert is the outbox's
//! (`outbox::Embedded`), embedded in a `WITH` of the task's update, so it is written once
//! exactly when the fenced update matched; SQLite keeps its transaction of several
//! statements (it cannot write from a `WITH`).

use j1msky_core::events::{TaskFailed, TaskStarted, TaskSucceeded};
use j1msky_db::outbox::Embedded;
use j1msky_db::Db;
use sqlx::any::AnyRow;

use super::{StepRow, FENCE, STEP_INSERT};
use crate::TaskError;

/// Runs `update` (the claim's `UPDATE … RETURNING id, customer_id, …, attempts, …`, with
/// $1 the owner, $2 the lease's end and $3 now) and writes `task.started` for the row it
/// claimed, if any.
pub(super) async fn claim(
    db: &Db,
    update: &str,
    owner: &str,
    lease_until: i64,
    now: i64,
) -> Result<Option<AnyRow>, TaskError> {
    let started = TaskStarted { task_id: String::new(), attempt: 0, worker: owner.to_string() };
    let per_row = [("task_id", "claimed.id"), ("attempt", "claimed.attempts")];
    let event = Embedded::new(started, "claimed", "claimed.customer_id", &per_row, 4, now)?;
    let sql = format!(
        "WITH claimed AS ({update}), started AS ({})
         SELECT id, customer_id, team, category, title, prompt, attempts, failures, pay_per_task FROM claimed",
        event.sql()
    );
    let query = sqlx::query(&sql).bind(owner).bind(lease_until).bind(now);
    Ok(event.bind(query).fetch_optional(db.pool()).await?)
}

/// What a success stores.
pub(super) struct Success<'a> {
    pub task_id: &'a str,
    pub owner: &'a str,
    pub attempt: i64,
    pub result: &'a str,
    pub cost: i64,
    pub tier: &'a str,
    /// The pay-per-task price of the tier, charged only for a task admitted as pay-per-task.
    pub price: i64,
    pub event: TaskSucceeded,
    /// The last step, stored by the same statement (under the same fence).
    pub last: Option<&'a StepRow<'a>>,
    pub now: i64,
}

/// The fenced success with its charge (a task admitted as pay-per-task is charged) and
/// `task.succeeded`. None when the lease was lost; else the charge, if any.
pub(super) async fn succeed(db: &Db, s: Success<'_>) -> Result<Option<Option<i64>>, TaskError> {
    let per_row = [("charge_micros", "done.charge_micros")];
    let event = Embedded::new(s.event, "done", "done.customer_id", &per_row, 12, s.now)?;
    let sql = format!(
        "WITH done AS (
             UPDATE tasks SET state = 'succeeded', result = $4, cost_micros = $5, tier = $6,
                 charge_micros = CASE WHEN tasks.pay_per_task = 1 THEN $7 END,
                 finished_at = $8, lease_owner = NULL, lease_until = NULL, wait_reason = NULL, error = NULL
             WHERE {FENCE} RETURNING id, customer_id, charge_micros),
         charged AS ({}), succeeded AS ({}){}
         SELECT charge_micros FROM done",
        crate::charges::insert_for_task_from("done", 9),
        event.sql(),
        match s.last {
            Some(_) => format!(
                ", stored AS ({STEP_INSERT} SELECT id, $16, $17, $18, $19, $20, $21, $22, $23, $3, $24 FROM done)"
            ),
            None => String::new(),
        }
    );
    let query = sqlx::query(&sql)
        .bind(s.task_id)
        .bind(s.owner)
        .bind(s.attempt)
        .bind(s.result)
        .bind(s.cost)
        .bind(s.tier)
        .bind(s.price)
        .bind(s.now)
        .bind(j1msky_core::ids::new_id("uch"))
        .bind(s.tier)
        .bind(s.now);
    let mut query = event.bind(query);
    if let Some(step) = s.last {
        query = step.bind(query).bind(step.now);
    }
    let row = query.fetch_optional(db.pool()).await?;
    Ok(match row {
        Some(r) => Some(sqlx::Row::try_get(&r, 0)?),
        None => None,
    })
}

/// The fenced failure for good with `task.failed`; false when the lease was lost.
pub(super) async fn fail(
    db: &Db,
    task_id: &str,
    owner: &str,
    attempt: i64,
    event: TaskFailed,
    now: i64,
) -> Result<bool, TaskError> {
    let (failures, error) = (event.failures, event.error.clone());
    let event = Embedded::new(event, "failed", "failed.customer_id", &[], 7, now)?;
    let sql = format!(
        "WITH failed AS (
             UPDATE tasks SET state = 'failed', failures = $4, error = $5, finished_at = $6, lease_owner = NULL,
                 lease_until = NULL WHERE {FENCE} RETURNING customer_id),
         ended AS ({})
         SELECT customer_id FROM failed",
        event.sql()
    );
    let query = sqlx::query(&sql).bind(task_id).bind(owner).bind(attempt).bind(failures).bind(error).bind(now);
    Ok(event.bind(query).fetch_optional(db.pool()).await?.is_some())
}
