//! Durable timers: "do X at time T" as rows of the `jobs` queue. A timer is scheduled
//! under a key (scheduling the same key again is a no-op), claimed with a lease (one
//! process fires it, however many run), survives restarts (it is a row), is retried
//! with back-off when its handler fails and ends `failed` for good after its attempts.
//! A recurring timer schedules its next occurrence, under the next period's key, in the
//! transaction that completes it, so neither a restart nor a second process doubles or
//! drops an occurrence.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Row};

use crate::{jobs, Db, DbError};

const SEC: i64 = 1_000_000;
/// Jobs of a timer live on this queue prefix, apart from other job queues.
const QUEUE_PREFIX: &str = "timer:";
/// How long a claimed timer stays with its process without a heartbeat.
pub const LEASE: i64 = 120 * SEC;

/// A timer to schedule: `kind` picks the handler, `key` makes it unique within the kind.
#[derive(Debug, Clone)]
pub struct NewTimer<'a> {
    pub kind: &'a str,
    pub key: &'a str,
    pub payload: &'a serde_json::Value,
    pub run_at: i64,
    pub max_attempts: i64,
}

/// One occurrence of a recurring timer: its key and when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub key: String,
    pub run_at: i64,
}

/// How a recurring timer's occurrences follow each other: `current(t)` is the
/// occurrence of the period `t` is in (scheduled at start-up), `next(due, now)` the one
/// after an occurrence due at `due` that fired at `now` (scheduled when it is done):
/// from `now` to skip periods missed while down, from `due` to catch each one up.
#[derive(Clone, Copy)]
pub struct Recurrence {
    pub current: fn(i64) -> Occurrence,
    pub next: fn(i64, i64) -> Occurrence,
    pub max_attempts: i64,
}

/// Schedules a timer; returns its job id (the existing one when the key was scheduled
/// before, whatever became of it).
pub async fn schedule(conn: &mut AnyConnection, timer: &NewTimer<'_>, now: i64) -> Result<String, DbError> {
    let queue = format!("{QUEUE_PREFIX}{}", timer.kind);
    let key = idempotency_key(timer.kind, timer.key);
    let job = jobs::NewJob {
        queue: &queue,
        payload: timer.payload,
        priority: 0,
        run_at: timer.run_at,
        max_attempts: timer.max_attempts.max(1),
        idempotency_key: Some(&key),
    };
    jobs::enqueue(conn, &job, now).await
}

/// Schedules a timer on a pooled connection.
pub async fn schedule_on(db: &Db, timer: &NewTimer<'_>, now: i64) -> Result<String, DbError> {
    let mut conn = db.pool().acquire().await?;
    schedule(&mut conn, timer, now).await
}

fn idempotency_key(kind: &str, key: &str) -> String {
    format!("{kind}@{key}")
}

/// The timer's own key from its job's idempotency key (`prefix` is `kind@`).
fn key_of(prefix: &str, stored: Option<String>) -> String {
    let stored = stored.unwrap_or_default();
    stored.strip_prefix(prefix).map_or_else(|| stored.clone(), str::to_string)
}

/// What is known of a timer: `ready`, `leased`, `done` or `failed`, attempts so far,
/// the last error and when it is (or was) due.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerState {
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub run_at: i64,
}

/// The timer scheduled under `kind` and `key`, if any.
pub async fn find(db: &Db, kind: &str, key: &str) -> Result<Option<TimerState>, DbError> {
    let row = sqlx::query("SELECT state, attempts, last_error, run_at FROM jobs WHERE idempotency_key = $1")
        .bind(idempotency_key(kind, key))
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => Some(TimerState {
            state: r.try_get(0)?,
            attempts: r.try_get(1)?,
            last_error: r.try_get(2)?,
            run_at: r.try_get(3)?,
        }),
        None => None,
    })
}

/// Timers of `kind` that ended failed for good (their keys), for the operator to see.
pub async fn failed(db: &Db, kind: &str) -> Result<Vec<String>, DbError> {
    let rows = sqlx::query("SELECT idempotency_key FROM jobs WHERE queue = $1 AND state = 'failed' ORDER BY run_at")
        .bind(format!("{QUEUE_PREFIX}{kind}"))
        .fetch_all(db.pool())
        .await?;
    let prefix = idempotency_key(kind, "");
    rows.iter()
        .map(|r| {
            let k: Option<String> = r.try_get(0)?;
            Ok(key_of(&prefix, k))
        })
        .collect()
}

/// When the earliest timer of `kind` still stored was due: for a recurring kind never
/// pruned, since when the loop that fires it has been running. `None`: never scheduled.
pub async fn earliest(db: &Db, kind: &str) -> Result<Option<i64>, DbError> {
    let t: Option<i64> = sqlx::query_scalar("SELECT MIN(run_at) FROM jobs WHERE queue = $1")
        .bind(format!("{QUEUE_PREFIX}{kind}"))
        .fetch_one(db.pool())
        .await?;
    Ok(t)
}

/// Deletes the done timers of `kind` finished before `before`; returns how many. Only
/// for kinds whose keys are never scheduled again (a deleted key could fire anew).
pub async fn prune_done(db: &Db, kind: &str, before: i64) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM jobs WHERE queue = $1 AND state = 'done' AND finished_at < $2")
        .bind(format!("{QUEUE_PREFIX}{kind}"))
        .bind(before)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

/// A timer that came due, handed to its handler.
pub struct Fired {
    pub kind: String,
    pub key: String,
    pub payload: serde_json::Value,
    /// When it was due.
    pub run_at: i64,
    /// When it fired (the clock of the process firing it).
    pub now: i64,
    pub attempt: i64,
    completion: Completion,
}

impl Fired {
    /// Marks the timer done inside the handler's transaction, so its writes and its
    /// completion (and, when recurring, the next occurrence) commit together. False when
    /// the lease was lost to another process: roll back then.
    pub async fn complete(&self, conn: &mut AnyConnection) -> Result<bool, DbError> {
        self.completion.complete(conn).await
    }
}

/// What completing a fired timer takes; shared by the handler and the runner.
#[derive(Clone)]
struct Completion {
    kind: String,
    lease: jobs::Lease,
    now: i64,
    next: Option<(Occurrence, i64)>,
    completed: Arc<AtomicBool>,
}

impl Completion {
    async fn complete(&self, conn: &mut AnyConnection) -> Result<bool, DbError> {
        if !jobs::complete(&mut *conn, &self.lease, self.now).await? {
            return Ok(false);
        }
        self.schedule_next(conn).await?;
        self.completed.store(true, Ordering::SeqCst);
        Ok(true)
    }

    async fn schedule_next(&self, conn: &mut AnyConnection) -> Result<(), DbError> {
        if let Some((next, max_attempts)) = &self.next {
            let payload = serde_json::Value::Null;
            let timer = NewTimer {
                kind: &self.kind,
                key: &next.key,
                payload: &payload,
                run_at: next.run_at,
                max_attempts: *max_attempts,
            };
            schedule(conn, &timer, self.now).await?;
        }
        Ok(())
    }
}

/// What a handler returns: `Err` with a message means "retry later".
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type HandlerFn = Arc<dyn Fn(Fired) -> HandlerFuture + Send + Sync>;

/// The handlers a runner fires timers for, by kind.
#[derive(Clone, Default)]
pub struct Handlers {
    map: BTreeMap<String, (HandlerFn, Option<Recurrence>)>,
    poll: Option<Duration>,
}

impl Handlers {
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Fires timers of `kind` with `handler`.
    pub fn on<F, Fut>(mut self, kind: &str, handler: F) -> Handlers
    where
        F: Fn(Fired) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.map.insert(kind.to_string(), (Arc::new(move |f| Box::pin(handler(f))), None));
        self
    }

    /// Fires timers of `kind` with `handler`, each occurrence followed by the next.
    pub fn recurring<F, Fut>(mut self, kind: &str, every: Recurrence, handler: F) -> Handlers
    where
        F: Fn(Fired) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.map.insert(kind.to_string(), (Arc::new(move |f| Box::pin(handler(f))), Some(every)));
        self
    }

    /// How often `run` looks for due timers (default: every second).
    pub fn poll_every(mut self, every: Duration) -> Handlers {
        self.poll = Some(every);
        self
    }

    /// Schedules the current occurrence of every recurring kind (a no-op for the ones
    /// already scheduled): what keeps a chain going after a deployment or a crash.
    pub async fn schedule_recurring(&self, db: &Db, now: i64) -> Result<(), DbError> {
        let mut conn = db.pool().acquire().await?;
        for (kind, (_, every)) in &self.map {
            if let Some(every) = every {
                let o = (every.current)(now);
                let payload = serde_json::Value::Null;
                let timer = NewTimer {
                    kind,
                    key: &o.key,
                    payload: &payload,
                    run_at: o.run_at,
                    max_attempts: every.max_attempts,
                };
                schedule(&mut conn, &timer, now).await?;
            }
        }
        Ok(())
    }
}

/// Fires every timer due at `now` of the kinds `handlers` knows, one after another;
/// returns how many fired successfully. A process id is made up for the leases.
pub async fn run_due_once(db: &Db, handlers: &Handlers, now: i64) -> Result<usize, DbError> {
    let owner = j1msky_core::ids::new_id("timers");
    // One read finds the kinds with work, so an idle round claims (writes) nothing.
    let due: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT queue FROM jobs WHERE queue LIKE 'timer:%' AND state IN ('ready', 'leased') AND run_at <= $1",
    )
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    let mut fired = 0;
    for (queue,) in due {
        let Some((kind, (handler, every))) =
            queue.strip_prefix(QUEUE_PREFIX).and_then(|kind| handlers.map.get_key_value(kind))
        else {
            continue;
        };
        while let Some(lease) = jobs::claim(db, &queue, &owner, now, LEASE).await? {
            if fire(db, kind, handler, every.as_ref(), lease, now).await? {
                fired += 1;
            }
        }
    }
    Ok(fired)
}

/// Fires due timers until `stop`, with `clock`'s time; the caller tracks the returned
/// future (no task is spawned here).
pub async fn run(
    db: Db,
    handlers: Handlers,
    clock: Arc<dyn j1msky_core::Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let poll = handlers.poll.unwrap_or(Duration::from_secs(1));
    let mut swept_at = i64::MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let now = clock.now_micros();
        if now.saturating_sub(swept_at) >= 60 * SEC {
            swept_at = now;
            if let Err(e) = jobs::fail_exhausted(&db, now).await {
                tracing::warn!(error = %e, "failing timers whose process died on every attempt");
            }
        }
        if let Err(e) = run_due_once(&db, &handlers, now).await {
            tracing::warn!(error = %e, "firing due timers");
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Runs one claimed timer: its handler (the lease kept alive meanwhile), then its
/// completion, or its release for a retry with back-off. True when it succeeded.
async fn fire(
    db: &Db,
    kind: &str,
    handler: &HandlerFn,
    every: Option<&Recurrence>,
    mut lease: jobs::Lease,
    now: i64,
) -> Result<bool, DbError> {
    let row = sqlx::query("SELECT idempotency_key, run_at FROM jobs WHERE id = $1")
        .bind(&lease.job_id)
        .fetch_one(db.pool())
        .await?;
    let full_key: Option<String> = row.try_get(0)?;
    let key = key_of(&idempotency_key(kind, ""), full_key);
    let run_at: i64 = row.try_get(1)?;
    let mut completion = Completion {
        kind: kind.to_string(),
        lease: lease.clone(),
        now,
        next: every.map(|e| ((e.next)(run_at, now), e.max_attempts)),
        completed: Arc::new(AtomicBool::new(false)),
    };
    let fired = Fired {
        kind: kind.to_string(),
        key: key.clone(),
        payload: lease.payload.clone(),
        run_at,
        now,
        attempt: lease.attempt,
        completion: completion.clone(),
    };
    let outcome = {
        let work = handler(fired);
        tokio::pin!(work);
        let beat = LEASE / 3;
        let mut beats = 0;
        loop {
            tokio::select! {
                out = &mut work => break out,
                _ = tokio::time::sleep(Duration::from_micros(beat.unsigned_abs())) => {
                    // Only `now` is known here (tests drive time by hand), so the lease
                    // is extended on the timer's own time line, a beat further each time.
                    beats += 1;
                    if !jobs::heartbeat(db, &mut lease, now + beats * beat, LEASE).await? {
                        tracing::warn!(kind, key = %key, "timer lease lost while its handler ran");
                    }
                }
            }
        }
    };
    match outcome {
        Ok(()) => {
            // Done in the handler's own transaction (were it rolled back after all, the
            // lease runs out and the timer is fired again).
            if completion.completed.load(Ordering::SeqCst) {
                return Ok(true);
            }
            completion.lease = lease;
            let mut tx = db.begin().await?;
            if completion.complete(&mut tx).await? {
                tx.commit().await?;
                Ok(true)
            } else {
                tracing::warn!(kind, key = %key, "timer taken over by another process before it completed");
                Ok(false)
            }
        }
        Err(error) => {
            let retry_at = now + backoff(lease.attempt);
            jobs::release(db, &lease, &error, retry_at, now).await?;
            if lease.attempt >= lease.max_attempts {
                tracing::error!(kind, key = %key, attempts = lease.attempt, %error, "timer failed for good");
                // A recurring chain goes on past an occurrence that failed for good.
                let mut conn = db.pool().acquire().await?;
                completion.schedule_next(&mut conn).await?;
            } else {
                tracing::warn!(kind, key = %key, attempt = lease.attempt, %error, "timer failed; retried later");
            }
            Ok(false)
        }
    }
}

/// 30 s after the first failure, doubling, at most an hour.
pub fn backoff(attempt: i64) -> i64 {
    let exp = attempt.clamp(1, 8) - 1;
    (30 * SEC * (1 << exp)).min(3600 * SEC)
}
