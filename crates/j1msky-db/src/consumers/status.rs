//! What the operator sees of consumers and does to them: cursors, lag and leases,
//! failing and parked events, retrying a parked event, replaying from a sequence.

use serde::Serialize;
use sqlx::Row;

use crate::{Db, DbError};

/// One consumer's position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerStatus {
    pub consumer: String,
    /// The last event it is done with.
    pub cursor: i64,
    /// Events written after its cursor (newest sequence minus cursor).
    pub lag: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    /// Events failing and still being retried.
    pub failing: i64,
    /// Events given up on until the operator retries them.
    pub parked: i64,
    pub updated_at: i64,
}

/// Every consumer that ever ran, by name.
pub async fn status(db: &Db) -> Result<Vec<ConsumerStatus>, DbError> {
    let newest = crate::outbox::newest_seq(db).await?;
    let rows = sqlx::query(
        "SELECT c.consumer, c.last_seq, c.lease_owner, c.lease_until, c.updated_at,
             (SELECT COUNT(*) FROM consumer_failures f WHERE f.consumer = c.consumer AND f.parked = 0),
             (SELECT COUNT(*) FROM consumer_failures f WHERE f.consumer = c.consumer AND f.parked <> 0)
         FROM consumer_cursors c ORDER BY c.consumer",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let cursor: i64 = r.try_get(1)?;
        out.push(ConsumerStatus {
            consumer: r.try_get(0)?,
            cursor,
            lag: (newest - cursor).max(0),
            lease_owner: r.try_get(2)?,
            lease_until: r.try_get(3)?,
            updated_at: r.try_get(4)?,
            failing: r.try_get(5)?,
            parked: r.try_get(6)?,
        });
    }
    Ok(out)
}

/// An event a consumer failed on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub consumer: String,
    pub seq: i64,
    pub kind: String,
    pub attempts: i64,
    pub next_try_at: i64,
    pub last_error: String,
    pub parked: bool,
}

/// Failing events (only the parked ones when `parked_only`), oldest first.
pub async fn failures(db: &Db, parked_only: bool, limit: i64) -> Result<Vec<Failure>, DbError> {
    let rows = sqlx::query(
        "SELECT f.consumer, f.seq, COALESCE(e.kind, ''), f.attempts, f.next_try_at, f.last_error, f.parked
         FROM consumer_failures f LEFT JOIN events e ON e.seq = f.seq
         WHERE f.parked <> 0 OR $1 = 0 ORDER BY f.seq, f.consumer LIMIT $2",
    )
    .bind(i64::from(parked_only))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(Failure {
            consumer: r.try_get(0)?,
            seq: r.try_get(1)?,
            kind: r.try_get(2)?,
            attempts: r.try_get(3)?,
            next_try_at: r.try_get(4)?,
            last_error: r.try_get(5)?,
            parked: r.try_get::<i64, _>(6)? != 0,
        });
    }
    Ok(out)
}

/// Gives a parked event a fresh set of attempts, due at once; false when `consumer` has
/// no parked event `seq`.
pub async fn retry(db: &Db, consumer: &str, seq: i64, now: i64) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE consumer_failures SET parked = 0, attempts = 0, next_try_at = $3, updated_at = $3
         WHERE consumer = $1 AND seq = $2 AND parked <> 0",
    )
    .bind(consumer)
    .bind(seq)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves `consumer`'s cursor so that it handles events again from `from_seq` on (its
/// handler must be idempotent); returns the cursor it had, or None for an unknown consumer.
pub async fn replay(db: &Db, consumer: &str, from_seq: i64, now: i64) -> Result<Option<i64>, DbError> {
    let mut tx = db.begin().await?;
    let before: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM consumer_cursors WHERE consumer = $1")
        .bind(consumer)
        .fetch_optional(&mut *tx)
        .await?;
    if before.is_some() {
        sqlx::query("UPDATE consumer_cursors SET last_seq = $2, updated_at = $3 WHERE consumer = $1")
            .bind(consumer)
            .bind((from_seq - 1).max(0))
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(before)
}
