//! Event consumers: named readers of the outbox, each with a durable cursor. A
//! consumer's handler runs inside a transaction that also moves the cursor, so its
//! effects and "this event is done" commit together (exactly once). With several
//! processes the cursor row carries a lease: one process handles a consumer's batch at
//! a time, each advance is fenced on still holding the lease, and a dead owner's lease
//! runs out and is taken over. A failing event is retried with back-off, then parked
//! for the operator (`failures`, `retry`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Row};

use crate::outbox::Event;
use crate::{Backend, Db, DbError};

/// What a handler's failure says (kept as text in `consumer_failures.last_error`).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;
/// The future a handler returns.
pub type Handled<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// Reacts to one event inside the consumer's transaction (`conn`): it must not commit.
pub trait Handler: Send + Sync {
    /// Applies `event`'s reaction; an error rolls back its writes and counts an attempt.
    fn handle<'a>(&'a self, conn: &'a mut AnyConnection, backend: Backend, event: &'a Event, now: i64) -> Handled<'a>;
}

/// What a consumer does when an event keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Later events wait until the failing one succeeds (order matters to the consumer).
    Block,
    /// Later events keep flowing; the failing one is retried aside, then parked.
    SkipAndPark,
}

/// Attempts before an event is parked, unless a consumer says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 5;
/// How long a runner holds a consumer's cursor without renewing it.
pub const DEFAULT_LEASE_MICROS: i64 = 30_000_000;
const FIRST_RETRY_MICROS: i64 = 1_000_000;
const MAX_RETRY_MICROS: i64 = 15 * 60 * 1_000_000;

/// A named reader of the outbox.
#[derive(Clone)]
pub struct Consumer {
    pub name: String,
    /// Event kinds it handles; the others only move its cursor.
    pub kinds: Vec<String>,
    pub on_failure: OnFailure,
    pub max_attempts: i64,
    pub handler: Arc<dyn Handler>,
    /// Handle a round's new events in one transaction (see [`Consumer::batched`]).
    pub batched: bool,
}

impl Consumer {
    /// A consumer of `kinds` with the default number of attempts.
    pub fn new(
        name: &str,
        kinds: &[j1msky_core::events::Kind],
        on_failure: OnFailure,
        handler: impl Handler + 'static,
    ) -> Consumer {
        Consumer {
            name: name.to_string(),
            kinds: kinds.iter().map(|k| k.as_str().to_string()).collect(),
            on_failure,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            handler: Arc::new(handler),
            batched: false,
        }
    }

    /// Handles each round's new events in one transaction with one fenced cursor move,
    /// instead of one transaction per event: for consumers whose per-event work is small
    /// and frequent (rollups), where the commit is most of the cost. Still exactly once:
    /// the effects and the cursor commit together. When any event of the round fails, the
    /// whole round is rolled back and its events are handled one by one as usual, so a
    /// failure is recorded against its own event. Only for `SkipAndPark` consumers.
    pub fn batched(mut self) -> Consumer {
        self.batched = self.on_failure == OnFailure::SkipAndPark;
        self
    }

    fn wants(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }
}

/// One process's identity and pace as a runner of consumers.
#[derive(Debug, Clone)]
pub struct Runner {
    /// Names the lease holder (distinct per process).
    pub owner: String,
    pub lease_micros: i64,
    /// Events read per consumer per round.
    pub batch: i64,
}

impl Runner {
    /// A runner named `owner`, with the default lease and batch.
    pub fn new(owner: impl Into<String>) -> Runner {
        Runner { owner: owner.into(), lease_micros: DEFAULT_LEASE_MICROS, batch: 100 }
    }

    /// A runner named after this process, unique even across restarts.
    pub fn for_this_process() -> Runner {
        Runner::new(format!("pid{}-{}", std::process::id(), j1msky_core::ids::new_id("run")))
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events whose handler succeeded.
    pub handled: usize,
    /// Handler failures recorded.
    pub failed: usize,
    /// Events of unwanted kinds passed over.
    pub passed: usize,
}

impl Progress {
    /// Did anything move?
    pub fn moved(&self) -> bool {
        self.handled + self.failed + self.passed > 0
    }

    fn add(&mut self, other: Progress) {
        self.handled += other.handled;
        self.failed += other.failed;
        self.passed += other.passed;
    }
}

/// Takes (or renews) the lease on `consumer`'s cursor for `owner`; returns the cursor,
/// or None while another owner's lease is live.
pub async fn acquire_lease(
    db: &Db,
    consumer: &str,
    owner: &str,
    now: i64,
    lease_micros: i64,
) -> Result<Option<i64>, DbError> {
    sqlx::query(
        "INSERT INTO consumer_cursors (consumer, last_seq, updated_at) VALUES ($1, 0, $2) ON CONFLICT (consumer) DO NOTHING",
    )
    .bind(consumer)
    .bind(now)
    .execute(db.pool())
    .await?;
    let row = sqlx::query(
        "UPDATE consumer_cursors SET lease_owner = $2, lease_until = $3
         WHERE consumer = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until IS NULL OR lease_until < $4)
         RETURNING last_seq",
    )
    .bind(consumer)
    .bind(owner)
    .bind(now + lease_micros)
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

/// Gives the lease back, so another process need not wait for it to run out.
async fn release_lease(db: &Db, consumer: &str, owner: &str) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE consumer_cursors SET lease_owner = NULL, lease_until = NULL WHERE consumer = $1 AND lease_owner = $2",
    )
    .bind(consumer)
    .bind(owner)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Inside `conn`'s transaction: proves `owner` still holds a live lease (and renews it),
/// moving the cursor up to `to` when given. False when the lease was lost: the caller
/// must roll back. On PostgreSQL this also locks the cursor row until commit, so a
/// process taking the lease over waits for the in-flight event and then sees its cursor.
async fn fence(
    conn: &mut AnyConnection,
    consumer: &str,
    runner: &Runner,
    to: Option<i64>,
    now: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE consumer_cursors SET lease_until = $3,
             last_seq = CASE WHEN last_seq < $4 THEN $4 ELSE last_seq END,
             updated_at = CASE WHEN last_seq < $4 THEN $5 ELSE updated_at END
         WHERE consumer = $1 AND lease_owner = $2 AND lease_until >= $5",
    )
    .bind(consumer)
    .bind(&runner.owner)
    .bind(now + runner.lease_micros)
    .bind(to.unwrap_or(0))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How one event went.
enum Attempt {
    Handled,
    Failed,
    LeaseLost,
}

/// Runs the handler on `event` in its own transaction with the fenced advance (to
/// `advance_to`); a failure is recorded (and, for skip-and-park, the cursor moved past
/// it) in a second transaction.
async fn attempt(
    db: &Db,
    runner: &Runner,
    consumer: &Consumer,
    event: &Event,
    advance_to: Option<i64>,
    now: i64,
) -> Result<Attempt, DbError> {
    let mut tx = db.begin().await?;
    if !fence(&mut tx, &consumer.name, runner, advance_to, now).await? {
        return Ok(Attempt::LeaseLost);
    }
    let error = match consumer.handler.handle(&mut tx, db.backend(), event, now).await {
        Ok(()) => {
            sqlx::query("DELETE FROM consumer_failures WHERE consumer = $1 AND seq = $2")
                .bind(&consumer.name)
                .bind(event.seq)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Attempt::Handled);
        }
        Err(e) => e.to_string(),
    };
    tx.rollback().await?;
    tracing::warn!(consumer = %consumer.name, seq = event.seq, kind = %event.kind, error = %error, "event consumer failed");
    let mut tx = db.begin().await?;
    let past = match consumer.on_failure {
        OnFailure::SkipAndPark => advance_to,
        OnFailure::Block => advance_to.map(|_| event.seq - 1),
    };
    if !fence(&mut tx, &consumer.name, runner, past, now).await? {
        return Ok(Attempt::LeaseLost);
    }
    let before: Option<i64> =
        sqlx::query_scalar("SELECT attempts FROM consumer_failures WHERE consumer = $1 AND seq = $2")
            .bind(&consumer.name)
            .bind(event.seq)
            .fetch_optional(&mut *tx)
            .await?;
    let attempts = before.unwrap_or(0) + 1;
    let parked = attempts >= consumer.max_attempts;
    let wait = FIRST_RETRY_MICROS.saturating_mul(1_i64 << (attempts - 1).clamp(0, 20)).min(MAX_RETRY_MICROS);
    sqlx::query(
        "INSERT INTO consumer_failures (consumer, seq, attempts, next_try_at, last_error, parked, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (consumer, seq) DO UPDATE SET attempts = excluded.attempts, next_try_at = excluded.next_try_at,
             last_error = excluded.last_error, parked = excluded.parked, updated_at = excluded.updated_at",
    )
    .bind(&consumer.name)
    .bind(event.seq)
    .bind(attempts)
    .bind(now + wait)
    .bind(&error)
    .bind(i64::from(parked))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Attempt::Failed)
}

/// One round of every consumer; see [`run_consumer_once`].
pub async fn run_once(
    db: &Db,
    runner: &Runner,
    consumers: &[Consumer],
    clock: &dyn j1msky_core::Clock,
) -> Result<Progress, DbError> {
    let mut all = Progress::default();
    for consumer in consumers {
        all.add(run_consumer_once(db, runner, consumer, clock).await?);
    }
    Ok(all)
}

/// One round of `consumer` when this runner gets its lease: due retries of events it
/// skipped, then up to a batch of new events. Nothing happens while another runner
/// holds the lease. Time is read per event: a round that outlives its lease stops.
pub async fn run_consumer_once(
    db: &Db,
    runner: &Runner,
    consumer: &Consumer,
    clock: &dyn j1msky_core::Clock,
) -> Result<Progress, DbError> {
    let now = clock.now_micros();
    // Idle: no lease taken, nothing written (the runner polls every second).
    if !has_work(db, &consumer.name, now).await? {
        return Ok(Progress::default());
    }
    let Some(cursor) = acquire_lease(db, &consumer.name, &runner.owner, now, runner.lease_micros).await? else {
        return Ok(Progress::default());
    };
    let progress = handle_batch(db, runner, consumer, cursor, clock).await;
    release_lease(db, &consumer.name, &runner.owner).await?;
    progress
}

/// Has `consumer` anything to do: events after its cursor, a retry come due, or no
/// cursor yet? Reads only, so a runner with nothing to do writes nothing. (A blocking
/// consumer waiting out a failed event's back-off still takes its lease each poll.)
async fn has_work(db: &Db, consumer: &str, now: i64) -> Result<bool, DbError> {
    let cursor: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM consumer_cursors WHERE consumer = $1")
        .bind(consumer)
        .fetch_optional(db.pool())
        .await?;
    let Some(cursor) = cursor else { return Ok(true) };
    let newer: Option<i64> = sqlx::query_scalar("SELECT seq FROM events WHERE seq > $1 ORDER BY seq LIMIT 1")
        .bind(cursor)
        .fetch_optional(db.pool())
        .await?;
    if newer.is_some() {
        return Ok(true);
    }
    let due: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM consumer_failures WHERE consumer = $1 AND parked = 0 AND next_try_at <= $2 LIMIT 1",
    )
    .bind(consumer)
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    Ok(due.is_some())
}

async fn handle_batch(
    db: &Db,
    runner: &Runner,
    consumer: &Consumer,
    cursor: i64,
    clock: &dyn j1msky_core::Clock,
) -> Result<Progress, DbError> {
    let now = clock.now_micros();
    let mut progress = Progress::default();
    let due: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM consumer_failures WHERE consumer = $1 AND parked = 0 AND next_try_at <= $2 AND seq <= $3
         ORDER BY seq LIMIT $4",
    )
    .bind(&consumer.name)
    .bind(now)
    .bind(cursor)
    .bind(runner.batch)
    .fetch_all(db.pool())
    .await?;
    for seq in due {
        let Some(event) = crate::outbox::event_at(db, seq).await? else { continue };
        match attempt(db, runner, consumer, &event, None, clock.now_micros()).await? {
            Attempt::Handled => progress.handled += 1,
            Attempt::Failed => progress.failed += 1,
            Attempt::LeaseLost => return Ok(progress),
        }
    }
    let events = crate::outbox::after(db, cursor, runner.batch).await?;
    if consumer.batched && events.len() > 1 {
        if let Some(all) = attempt_all(db, runner, consumer, &events, clock.now_micros()).await? {
            progress.add(all);
            return Ok(progress);
        }
        // A failure: one by one below, so it is recorded against its own event.
    }
    let mut passed_to = None;
    for event in &events {
        if !consumer.wants(&event.kind) {
            passed_to = Some(event.seq);
            progress.passed += 1;
            continue;
        }
        if consumer.on_failure == OnFailure::Block && waiting(db, &consumer.name, event.seq, now).await? {
            break;
        }
        passed_to = None;
        match attempt(db, runner, consumer, event, Some(event.seq), clock.now_micros()).await? {
            Attempt::Handled => progress.handled += 1,
            Attempt::Failed => {
                progress.failed += 1;
                if consumer.on_failure == OnFailure::Block {
                    return Ok(progress);
                }
            }
            Attempt::LeaseLost => return Ok(progress),
        }
    }
    if let Some(to) = passed_to {
        let mut tx = db.begin().await?;
        if fence(&mut tx, &consumer.name, runner, Some(to), clock.now_micros()).await? {
            tx.commit().await?;
        }
    }
    Ok(progress)
}

/// Handles `events` (in order, after the cursor) in one transaction that moves the cursor
/// past the last; `None` (everything rolled back) when a handler failed or the lease was
/// lost.
async fn attempt_all(
    db: &Db,
    runner: &Runner,
    consumer: &Consumer,
    events: &[Event],
    now: i64,
) -> Result<Option<Progress>, DbError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(Some(Progress::default())) };
    let mut tx = db.begin().await?;
    if !fence(&mut tx, &consumer.name, runner, Some(last.seq), now).await? {
        return Ok(None);
    }
    let mut progress = Progress::default();
    for event in events {
        if !consumer.wants(&event.kind) {
            progress.passed += 1;
            continue;
        }
        if let Err(e) = consumer.handler.handle(&mut tx, db.backend(), event, now).await {
            tracing::debug!(consumer = %consumer.name, seq = event.seq, error = %e, "batch failed: one by one");
            tx.rollback().await?;
            return Ok(None);
        }
        progress.handled += 1;
    }
    // Events replayed after a failure was recorded: handled now.
    sqlx::query("DELETE FROM consumer_failures WHERE consumer = $1 AND seq >= $2 AND seq <= $3")
        .bind(&consumer.name)
        .bind(first.seq)
        .bind(last.seq)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(progress))
}

/// Is the event at `seq` a failure that may not be tried yet (parked, or backing off)?
async fn waiting(db: &Db, consumer: &str, seq: i64, now: i64) -> Result<bool, DbError> {
    let row = sqlx::query("SELECT parked, next_try_at FROM consumer_failures WHERE consumer = $1 AND seq = $2")
        .bind(consumer)
        .bind(seq)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<i64, _>(0)? != 0 || r.try_get::<i64, _>(1)? > now,
        None => false,
    })
}

/// Runs `consumers` until `stop`: at once when `wake` is notified, else every second
/// (failed events come due by time alone). The caller tracks the returned future.
pub async fn run(
    db: Db,
    consumers: Vec<Consumer>,
    clock: Arc<dyn j1msky_core::Clock>,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let runner = Runner::for_this_process();
    loop {
        if *stop.borrow() {
            return;
        }
        match run_once(&db, &runner, &consumers, clock.as_ref()).await {
            Ok(p) if p.handled + p.passed > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "running event consumers"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}

mod status;
pub use status::{failures, replay, retry, status, ConsumerStatus, Failure};
