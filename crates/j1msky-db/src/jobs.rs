//! Leased jobs: work is claimed with a lease that expires, so a crashed worker's job
//! comes back. The lease is fenced by (owner, attempt): a worker whose lease was
//! taken over cannot complete or extend the job any more.

use sqlx::{AnyConnection, Row};

use crate::{Backend, Db, DbError};

/// A job to be enqueued.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub queue: &'a str,
    pub payload: &'a serde_json::Value,
    pub priority: i64,
    pub run_at: i64,
    pub max_attempts: i64,
    /// A second enqueue with the same key is a no-op.
    pub idempotency_key: Option<&'a str>,
}

/// A claimed job, with the lease that fences it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub job_id: String,
    pub queue: String,
    pub payload: serde_json::Value,
    pub owner: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub lease_until: i64,
}

/// Adds a job; returns its id (the existing one for a repeated idempotency key).
pub async fn enqueue(conn: &mut AnyConnection, job: &NewJob<'_>, now: i64) -> Result<String, DbError> {
    let id = j1msky_core::ids::new_id("job");
    let inserted = sqlx::query(
        "INSERT INTO jobs (id, queue, payload, priority, run_at, state, attempts, max_attempts, idempotency_key, created_at)
         VALUES ($1, $2, $3, $4, $5, 'ready', 0, $6, $7, $8)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(&id)
    .bind(job.queue)
    .bind(job.payload.to_string())
    .bind(job.priority)
    .bind(job.run_at)
    .bind(job.max_attempts)
    .bind(job.idempotency_key)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(id);
    }
    let row = sqlx::query("SELECT id FROM jobs WHERE idempotency_key = $1")
        .bind(job.idempotency_key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

/// Claims the most urgent ready job of `queue` (or one whose lease expired) for
/// `owner` until `now + lease_micros`. Two claimers never get the same job: on
/// SQLite the single UPDATE runs under the one write lock; on PostgreSQL the
/// candidate row is locked with `FOR UPDATE SKIP LOCKED` and re-checked.
pub async fn claim(db: &Db, queue: &str, owner: &str, now: i64, lease_micros: i64) -> Result<Option<Lease>, DbError> {
    let lock = match db.backend() {
        Backend::Sqlite => "",
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
    };
    let sql = format!(
        "UPDATE jobs SET state = 'leased', lease_owner = $1, lease_until = $2, attempts = attempts + 1
         WHERE id = (SELECT id FROM jobs
                     WHERE queue = $3 AND run_at <= $4
                       AND (state = 'ready' OR (state = 'leased' AND lease_until < $4 AND attempts < max_attempts))
                     ORDER BY priority DESC, run_at, id LIMIT 1 {lock})
           AND (state = 'ready' OR (state = 'leased' AND lease_until < $4 AND attempts < max_attempts))
         RETURNING id, queue, payload, attempts, max_attempts, lease_until"
    );
    let row =
        sqlx::query(&sql).bind(owner).bind(now + lease_micros).bind(queue).bind(now).fetch_optional(db.pool()).await?;
    let Some(row) = row else { return Ok(None) };
    let payload: String = row.try_get(2)?;
    Ok(Some(Lease {
        job_id: row.try_get(0)?,
        queue: row.try_get(1)?,
        payload: serde_json::from_str(&payload).map_err(|e| DbError::Corrupt(format!("job payload: {e}")))?,
        owner: owner.to_string(),
        attempt: row.try_get(3)?,
        max_attempts: row.try_get(4)?,
        lease_until: row.try_get(5)?,
    }))
}

/// Extends a live lease; false when the lease was lost (expired and taken, or finished).
pub async fn heartbeat(db: &Db, lease: &mut Lease, now: i64, lease_micros: i64) -> Result<bool, DbError> {
    let until = now + lease_micros;
    let done = sqlx::query(
        "UPDATE jobs SET lease_until = $1
         WHERE id = $2 AND state = 'leased' AND lease_owner = $3 AND attempts = $4",
    )
    .bind(until)
    .bind(&lease.job_id)
    .bind(&lease.owner)
    .bind(lease.attempt)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 1 {
        lease.lease_until = until;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Marks the job done inside the caller's transaction (so its effects and its
/// completion commit together). False when the lease was lost: roll back then.
pub async fn complete(conn: &mut AnyConnection, lease: &Lease, now: i64) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE jobs SET state = 'done', finished_at = $1, lease_owner = NULL, lease_until = NULL
         WHERE id = $2 AND state = 'leased' AND lease_owner = $3 AND attempts = $4",
    )
    .bind(now)
    .bind(&lease.job_id)
    .bind(&lease.owner)
    .bind(lease.attempt)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the job back after a failed attempt: ready again at `retry_at`, or
/// `failed` for good once its attempts are used up. False when the lease was lost.
pub async fn release(db: &Db, lease: &Lease, error: &str, retry_at: i64, now: i64) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE jobs SET
            state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'ready' END,
            finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END,
            run_at = $2, last_error = $3, lease_owner = NULL, lease_until = NULL
         WHERE id = $4 AND state = 'leased' AND lease_owner = $5 AND attempts = $6",
    )
    .bind(now)
    .bind(retry_at)
    .bind(error)
    .bind(&lease.job_id)
    .bind(&lease.owner)
    .bind(lease.attempt)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks as failed the jobs whose lease expired on their last allowed attempt (their
/// worker died every time); returns how many. Claim never takes those back.
pub async fn fail_exhausted(db: &Db, now: i64) -> Result<u64, DbError> {
    let done = sqlx::query(
        "UPDATE jobs SET state = 'failed', finished_at = $1, last_error = 'lease expired on the last attempt',
                lease_owner = NULL, lease_until = NULL
         WHERE state = 'leased' AND lease_until < $1 AND attempts >= max_attempts",
    )
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected())
}

/// A job's state word (`ready`, `leased`, `done`, `failed`) and attempts so far.
pub async fn state(db: &Db, job_id: &str) -> Result<Option<(String, i64)>, DbError> {
    let row =
        sqlx::query("SELECT state, attempts FROM jobs WHERE id = $1").bind(job_id).fetch_optional(db.pool()).await?;
    Ok(match row {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
        None => None,
    })
}
