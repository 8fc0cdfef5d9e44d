//! Events that describe a state ("this customer is active", "this customer hits
//! this limit") rather than a change: one an hour per customer and key is enough,
//! and a customer calling a thousand times an hour must not cost a thousand writes.
//! A process-wide memory answers the common case without the database; the
//! outbox itself is the truth (an event of that kind and key in the last hour),
//! so a restart or a second process does not emit again within the hour. Within a
//! process, one call at a time asks the database about a mark; the others go on.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use j1msky_core::events::{Kind, Payload};
use sqlx::Row;

use crate::{outbox, Backend, Db, DbError};

/// The window within which one event per customer and key is emitted.
pub const WINDOW_MICROS: i64 = 3_600 * 1_000_000;

/// Above this many remembered marks, the stale ones are dropped.
const MAX_MARKS: usize = 100_000;

type Marks = HashMap<(Kind, String, String), i64>;

fn marks() -> std::sync::MutexGuard<'static, Marks> {
    static MARKS: OnceLock<Mutex<Marks>> = OnceLock::new();
    MARKS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner())
}

type Mark = (Kind, String, String);

fn flying() -> std::sync::MutexGuard<'static, HashSet<Mark>> {
    static FLYING: OnceLock<Mutex<HashSet<Mark>>> = OnceLock::new();
    FLYING.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// A mark this process is asking the database about: calls of the same customer that find
/// it taken leave the question to the one asking, instead of each opening a transaction and
/// queueing on the same lock (every call of a busy customer at once, when its mark is not
/// in memory: the first calls after a start, then once an hour).
struct InFlight(Mark);

impl InFlight {
    fn take(mark: &Mark) -> Option<InFlight> {
        flying().insert(mark.clone()).then(|| InFlight(mark.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        flying().remove(&self.0);
    }
}

/// Emits `payload` (of its kind) for `customer_id` unless one with the same `key`
/// (the payload's `key_field`, or any when `key_field` is None) was emitted in the
/// last hour, or another call of this process is emitting it now. Returns whether it
/// emitted.
pub async fn emit<P: Payload>(
    db: &Db,
    customer_id: &str,
    key_field: Option<&str>,
    payload: &P,
    now: i64,
) -> Result<bool, DbError> {
    let kind = P::KIND;
    let json = serde_json::to_value(payload).map_err(|e| DbError::Corrupt(format!("event {kind}: {e}")))?;
    let payload = &json;
    let key = key_field.and_then(|f| payload.get(f)).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let mark = (kind, customer_id.to_string(), key.clone());
    if marks().get(&mark).is_some_and(|at| now - at < WINDOW_MICROS && *at <= now) {
        return Ok(false);
    }
    // Another call of this process is emitting it (or finding it emitted) now.
    let Some(_asking) = InFlight::take(&mark) else { return Ok(false) };
    let mut tx = db.begin().await?;
    if db.backend() == Backend::Postgres {
        // Taken before the check so two processes cannot both see "none yet": one lock
        // per kind, customer and key (the two-number key space, apart from the outbox's).
        sqlx::query("SELECT pg_advisory_xact_lock(1785294195, hashtext($1 || '/' || $2 || '/' || $3))")
            .bind(kind.as_str())
            .bind(customer_id)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
    }
    let since = now - WINDOW_MICROS;
    let rows =
        sqlx::query("SELECT payload, created_at FROM events WHERE kind = $1 AND customer_id = $2 AND created_at > $3")
            .bind(kind.as_str())
            .bind(customer_id)
            .bind(since)
            .fetch_all(&mut *tx)
            .await?;
    let mut last = None;
    for r in rows {
        let raw: String = r.try_get(0)?;
        let stored: serde_json::Value = serde_json::from_str(&raw).unwrap_or_default();
        let stored_key = key_field.and_then(|f| stored.get(f)).and_then(|v| v.as_str()).unwrap_or_default();
        if stored_key == key {
            let at: i64 = r.try_get(1)?;
            last = last.max(Some(at));
        }
    }
    let emitted = match last {
        Some(at) => {
            remember(mark, at, now);
            false
        }
        None => {
            outbox::insert(&mut tx, db.backend(), kind, Some(customer_id), payload, now).await?;
            tx.commit().await?;
            remember(mark, now, now);
            true
        }
    };
    Ok(emitted)
}

fn remember(mark: (Kind, String, String), at: i64, now: i64) {
    let mut marks = marks();
    if marks.len() >= MAX_MARKS {
        marks.retain(|_, t| now - *t < WINDOW_MICROS);
    }
    marks.insert(mark, at);
}
