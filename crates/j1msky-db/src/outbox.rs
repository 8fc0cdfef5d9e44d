//! The event outbox: facts written in the same transaction as the change they
//! describe, read by consumers that each keep a cursor. A consumer that has read up to N
//! never misses an event below N: on SQLite one writer at a time makes sequence order
//! commit order; on PostgreSQL writers run side by side (each holds the outbox key in
//! shared mode from drawing its number until it ends, migration 0042) and a reader goes
//! only up to a mark below which every writer has finished ([`after`]).

use j1msky_core::events::{self, Decoded, Kind, Typed};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::{Backend, Db, DbError};

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
/// On PostgreSQL the number's column default takes the outbox key in shared mode
/// (migration 0042): no statement of its own, and no wait on other writers.
pub(crate) async fn insert(
    conn: &mut AnyConnection,
    _backend: Backend,
    kind: Kind,
    customer_id: Option<&str>,
    payload: &serde_json::Value,
    now: i64,
) -> Result<String, DbError> {
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

/// The events after `seq`, oldest first. On PostgreSQL only those up to the safe mark
/// ([`safe_mark`]): one that is still being written with a lower number is read on a
/// later call, never passed over.
pub async fn after(db: &Db, seq: i64, limit: i64) -> Result<Vec<Event>, DbError> {
    let upto = match db.backend() {
        Backend::Sqlite => i64::MAX,
        Backend::Postgres => safe_mark(db, seq).await?,
    };
    if upto <= seq {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT seq, id, kind, customer_id, payload, created_at FROM events WHERE seq > $1 AND seq <= $3
         ORDER BY seq LIMIT $2",
    )
    .bind(seq)
    .bind(limit)
    .bind(upto)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// PostgreSQL: the highest number below which every writer has finished, or `seq` when
/// none past it can be read yet. One statement in a transaction of its own (it must not
/// run inside a transaction that writes events): it waits for this database's writers
/// in flight, never for other databases', and at most the function's `lock_timeout`.
pub async fn safe_mark(db: &Db, seq: i64) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("SELECT j1msky_events_mark($1)").bind(seq).fetch_one(db.pool()).await?)
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

/// Where a reader that follows from now starts: a number at or below which every event
/// is committed and readable. On SQLite the newest event; on PostgreSQL the safe mark
/// ([`safe_mark`]), so that an event still being written with a lower number is read
/// after it, not passed over. Should writers keep the mark from being taken (each try
/// waits at most the function's `lock_timeout`), the newest committed event after a few
/// tries.
pub async fn horizon(db: &Db) -> Result<i64, DbError> {
    if db.backend() == Backend::Sqlite {
        return newest_seq(db).await;
    }
    for _ in 0..HORIZON_TRIES {
        let newest = newest_seq(db).await?;
        if newest == 0 {
            return Ok(0);
        }
        let mark = safe_mark(db, 0).await?;
        if mark > 0 {
            return Ok(mark);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    newest_seq(db).await
}

const HORIZON_TRIES: usize = 20;

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

/// An event insert for a caller's own statement on PostgreSQL: its rows come from a CTE
/// of that statement, so a change and its event are written in one round trip. The
/// number is drawn by the column default, which keeps the ordering rule of [`after`].
pub struct Embedded {
    id: String,
    kind: Kind,
    payload: String,
    now: i64,
    sql: String,
}

impl Embedded {
    /// `payload` as the event, with the fields named in `per_row` replaced by SQL
    /// expressions over `from` (the caller's CTE: one event per row it returns), and the
    /// customer by `customer` (an expression over `from`). Its four parameters are
    /// numbered from `first_param`: bind them with [`Embedded::bind`] in that place.
    pub fn new(
        payload: impl Into<Typed>,
        from: &str,
        customer: &str,
        per_row: &[(&str, &str)],
        first_param: usize,
        now: i64,
    ) -> Result<Embedded, DbError> {
        let payload = payload.into();
        let kind = payload.kind();
        let json = payload.to_value().map_err(|e| DbError::Corrupt(format!("event {kind}: {e}")))?;
        let fields: Vec<String> = per_row.iter().map(|(k, expr)| format!("'{k}', {expr}")).collect();
        let p = first_param;
        let sql = format!(
            "INSERT INTO events (id, kind, customer_id, payload, created_at)
             SELECT ${p}, ${}, {customer}, (CAST(${} AS JSONB) || jsonb_build_object({}))::text, ${} FROM {from}",
            p + 1,
            p + 2,
            fields.join(", "),
            p + 3,
        );
        let payload = events::versioned(kind, &json).to_string();
        Ok(Embedded { id: j1msky_core::ids::new_id("evt"), kind, payload, now, sql })
    }

    /// The `INSERT … SELECT … FROM {from}` to put in a `WITH` of the caller's statement.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Binds the event's four parameters (id, kind, payload, time), in order.
    pub fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        query.bind(&self.id).bind(self.kind.as_str()).bind(&self.payload).bind(self.now)
    }

    /// The event's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}
