//! The event outbox: facts written in the same transaction as the change they
//! describe, read by consumers that each keep a cursor. Sequence order is commit
//! order, so a consumer that has read up to N never misses an event below N.

use j1msky_core::events::{self, Decoded, Kind, Typed};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::{Backend, Db, DbError};

/// Advisory-lock key that serialises outbox inserts on PostgreSQL (from the
/// first insert until commit), which makes `seq` order equal commit order there.
const OUTBOX_LOCK_KEY: i64 = 0x6a31_6d73_6b79;

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub customer_id: Option<String>,
    pub payload: serde_json::Value,
    pub created_at: i64,
}

impl Event {
    /// The event in typed terms. A row this build cannot read (a kind it does
    /// not know, a payload that no longer decodes) stays stored untouched; readers
    /// skip it, and this says so in the log.
    pub fn decode(&self) -> Option<Decoded> {
        match events::decode(&self.kind, &self.payload) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(seq = self.seq, id = %self.id, error = %e, "skipping an event this build cannot read");
                None
            }
        }
    }

    /// The event as its kind's payload struct; like [`Event::decode`], a row this
    /// build cannot read is skipped with a log line, never an error.
    pub fn typed(&self) -> Option<Typed> {
        match events::decode_typed(&self.kind, &self.payload) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(seq = self.seq, id = %self.id, error = %e, "skipping an event this build cannot read");
                None
            }
        }
    }
}

/// Serialises outbox writers on PostgreSQL until the caller's transaction ends.
pub(crate) async fn lock(conn: &mut AnyConnection) -> Result<(), DbError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(OUTBOX_LOCK_KEY).execute(&mut *conn).await?;
    Ok(())
}

/// Writes an event inside the caller's transaction; returns its id. The payload's
/// type fixes the kind (a struct of one kind, or a [`Typed`] variant), and it is
/// stored with the kind's version under `v`.
pub async fn emit_typed(
    conn: &mut AnyConnection,
    backend: Backend,
    payload: impl Into<Typed>,
    customer_id: Option<&str>,
    now: i64,
) -> Result<String, DbError> {
    let payload = payload.into();
    let json = payload.to_value().map_err(|e| DbError::Corrupt(format!("event {}: {e}", payload.kind())))?;
    insert(conn, backend, payload.kind(), customer_id, &json, now).await
}

/// Stores a kind and a JSON payload as given: only for [`emit_typed`] and for tests
/// that need rows no current build writes (`testing::emit_raw`).
pub(crate) async fn insert(
    conn: &mut AnyConnection,
    backend: Backend,
    kind: Kind,
    customer_id: Option<&str>,
    payload: &serde_json::Value,
    now: i64,
) -> Result<String, DbError> {
    if backend == Backend::Postgres {
        lock(conn).await?;
    }
    let id = j1msky_core::ids::new_id("evt");
    sqlx::query("INSERT INTO events (id, kind, customer_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(kind.as_str())
        .bind(customer_id)
        .bind(events::versioned(kind, payload).to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<Event, DbError> {
    let raw: String = row.try_get(4)?;
    // A payload that is not JSON is kept as its text, so the row is still listed
    // (and skipped by `decode`) instead of failing the whole read.
    let payload = serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw));
    Ok(Event {
        seq: row.try_get(0)?,
        id: row.try_get(1)?,
        kind: row.try_get(2)?,
        customer_id: row.try_get(3)?,
        payload,
        created_at: row.try_get(5)?,
    })
}

/// Where `consumer` has read up to (0 when it never read).
pub async fn cursor(conn: &mut AnyConnection, consumer: &str) -> Result<i64, DbError> {
    let row = sqlx::query("SELECT last_seq FROM consumer_cursors WHERE consumer = $1")
        .bind(consumer)
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(r) => r.try_get(0)?,
        None => 0,
    })
}

/// The next events after `consumer`'s cursor, oldest first.
pub async fn next_batch(db: &Db, consumer: &str, limit: i64) -> Result<Vec<Event>, DbError> {
    let mut conn = db.pool().acquire().await?;
    let seq = cursor(&mut conn, consumer).await?;
    drop(conn);
    after(db, seq, limit).await
}

/// The events after `seq`, oldest first.
pub async fn after(db: &Db, seq: i64, limit: i64) -> Result<Vec<Event>, DbError> {
    let rows = sqlx::query(
        "SELECT seq, id, kind, customer_id, payload, created_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(seq)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// The latest `limit` events (of `kind` only, when given), oldest first.
pub async fn latest(db: &Db, kind: Option<&str>, limit: i64) -> Result<Vec<Event>, DbError> {
    let rows = sqlx::query(
        "SELECT seq, id, kind, customer_id, payload, created_at FROM events WHERE $1 = '' OR kind = $1
         ORDER BY seq DESC LIMIT $2",
    )
    .bind(kind.unwrap_or(""))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut events = rows.iter().map(event_from_row).collect::<Result<Vec<_>, _>>()?;
    events.reverse();
    Ok(events)
}

/// The sequence number of the newest event (0 when there is none).
pub async fn newest_seq(db: &Db) -> Result<i64, DbError> {
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events").fetch_one(db.pool()).await?;
    Ok(newest.unwrap_or(0))
}

/// The event numbered `seq`.
pub async fn event_at(db: &Db, seq: i64) -> Result<Option<Event>, DbError> {
    let row = sqlx::query("SELECT seq, id, kind, customer_id, payload, created_at FROM events WHERE seq = $1")
        .bind(seq)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(event_from_row).transpose()
}

/// Moves `consumer`'s cursor forward to `seq` (never backwards), inside the
/// transaction that applied the consumer's reaction so both commit together.
pub async fn advance(conn: &mut AnyConnection, consumer: &str, seq: i64, now: i64) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO consumer_cursors (consumer, last_seq, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (consumer) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at
         WHERE consumer_cursors.last_seq < excluded.last_seq",
    )
    .bind(consumer)
    .bind(seq)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The latest events of every kind, newest first (for operator views).
pub async fn recent(db: &Db, limit: i64) -> Result<Vec<Event>, DbError> {
    let rows =
        sqlx::query("SELECT seq, id, kind, customer_id, payload, created_at FROM events ORDER BY seq DESC LIMIT $1")
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
    rows.iter().map(event_from_row).collect()
}
