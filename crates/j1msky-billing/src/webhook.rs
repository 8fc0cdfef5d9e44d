//! `POST /webhooks/stripe`: verify, store under Stripe's event id, acknowledge. The
//! event is applied later by `apply_pending` (a worker), so a slow or failing
//! application never makes Stripe retry a delivery we already hold.

use j1msky_db::{Backend, Db};
use serde_json::Value;
use sqlx::Row;

pub use crate::refs::{envelope, Envelope};
use crate::{apply, signature, BillingError};

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Stored for the first time.
    Stored { id: String, kind: String },
    /// Already held: nothing changed.
    Duplicate { id: String },
}

/// Verifies a delivery and stores it. A bad signature or body, or an event of the other
/// mode (`livemode` true on a test deployment, false on a live one), stores nothing.
pub async fn receive(
    db: &Db,
    secrets: &[String],
    live: bool,
    signature_header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<Received, BillingError> {
    signature::verify(signature_header, body, secrets, crate::secs(now))?;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| BillingError::Malformed(format!("webhook body is not JSON: {e}")))?;
    let e = envelope(&v)?;
    if e.livemode != live {
        let (got, mode) = if live { ("false", "live") } else { ("true", "test") };
        return Err(BillingError::Malformed(format!(
            "webhook event {}: `livemode` is {got} but this deployment runs in {mode} mode",
            e.id
        )));
    }
    store(db, &v, now).await
}

/// Stores an event (from a delivery or from the events list) unless already held.
pub async fn store(db: &Db, event: &Value, now: i64) -> Result<Received, BillingError> {
    let e = envelope(event)?;
    let inserted = sqlx::query(
        "INSERT INTO stripe_events (id, type, object_id, created, livemode, payload, received_at, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT (id) DO NOTHING",
    )
    .bind(&e.id)
    .bind(&e.kind)
    .bind(&e.object_id)
    .bind(e.created)
    .bind(i64::from(e.livemode))
    .bind(event.to_string())
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(if inserted.rows_affected() == 1 {
        Received::Stored { id: e.id, kind: e.kind }
    } else {
        Received::Duplicate { id: e.id }
    })
}

/// How long a claimed batch is ours before another applier may take it.
const LEASE_MICROS: i64 = 60_000_000;
/// After this many failed attempts an event stays `failed` for the operator.
const MAX_ATTEMPTS: i64 = 8;

/// Applies up to `limit` pending events; returns how many were applied. Events are
/// claimed with a lease, applied in one transaction per batch (each in its own on
/// error), and marked applied in the same transaction as their effects.
pub async fn apply_pending(db: &Db, ctx: &apply::Ctx<'_>, limit: i64, now: i64) -> Result<usize, BillingError> {
    let claim = match db.backend() {
        Backend::Postgres => {
            "UPDATE stripe_events SET lease_until = $1, attempts = attempts + 1
             WHERE id IN (SELECT id FROM stripe_events WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < $2)
                          ORDER BY received_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING id, payload, received_at"
        }
        Backend::Sqlite => {
            "UPDATE stripe_events SET lease_until = $1, attempts = attempts + 1
             WHERE id IN (SELECT id FROM stripe_events WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < $2)
                          ORDER BY received_at, id LIMIT $3)
             RETURNING id, payload, received_at"
        }
    };
    let rows = sqlx::query(claim).bind(now + LEASE_MICROS).bind(now).bind(limit).fetch_all(db.pool()).await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get(0)?;
        let payload: String = r.try_get(1)?;
        let received: i64 = r.try_get(2)?;
        claimed.push((received, id, payload));
    }
    // RETURNING has no order: apply in the order received (ids break ties).
    claimed.sort();
    let batch: Vec<(String, String)> = claimed.into_iter().map(|(_, id, payload)| (id, payload)).collect();
    if batch.is_empty() {
        return Ok(0);
    }
    // The whole batch in one transaction: one commit instead of one per event.
    let mut tx = db.begin().await?;
    let mut all_ok = true;
    for (id, payload) in &batch {
        if let Err(e) = apply_effects(&mut tx, db.backend(), ctx, id, payload, now).await {
            tracing::warn!(event = %id, error = %e, "stripe event failed in a batch; retrying one by one");
            all_ok = false;
            break;
        }
    }
    if all_ok {
        let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
        mark_applied(&mut tx, &ids, now).await?;
        tx.commit().await?;
        return Ok(batch.len());
    }
    tx.rollback().await?;
    let mut applied = 0;
    for (id, payload) in &batch {
        let mut tx = db.begin().await?;
        let applied_one = async {
            apply_effects(&mut tx, db.backend(), ctx, id, payload, now).await?;
            mark_applied(&mut tx, &[id.as_str()], now).await
        };
        match applied_one.await {
            Ok(()) => {
                tx.commit().await?;
                applied += 1;
            }
            Err(e) => {
                tx.rollback().await?;
                let state: Option<String> = sqlx::query_scalar(
                    "UPDATE stripe_events SET error = $1, lease_until = $2,
                         state = CASE WHEN attempts >= $3 THEN 'failed' ELSE state END WHERE id = $4
                     RETURNING state",
                )
                .bind(e.to_string())
                .bind(now + RETRY_AFTER_FAILURE_MICROS)
                .bind(MAX_ATTEMPTS)
                .bind(id)
                .fetch_optional(db.pool())
                .await?;
                if state.as_deref() == Some("failed") {
                    // Given up for good: the operator must look (one alert per Stripe event).
                    let message = format!("Stripe webhook event {id} could not be applied and was given up: {e}");
                    let raised = j1msky_audit::alerts::raise(
                        db,
                        &format!("alr_stripe_event_{id}"),
                        "webhook_failed",
                        &message,
                        &serde_json::json!({"event": id}),
                        now,
                    )
                    .await;
                    if let Err(e) = raised {
                        tracing::error!(error = %e, "could not record the webhook failure alert");
                    }
                }
            }
        }
    }
    Ok(applied)
}

/// A failed event waits this long before its next try (its lease doubles as the wait).
const RETRY_AFTER_FAILURE_MICROS: i64 = 30_000_000;

async fn apply_effects(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    ctx: &apply::Ctx<'_>,
    id: &str,
    payload: &str,
    now: i64,
) -> Result<(), BillingError> {
    let event: Value =
        serde_json::from_str(payload).map_err(|e| BillingError::Malformed(format!("stored event {id}: {e}")))?;
    apply::event(conn, backend, ctx, &event, now).await
}

/// Marks events applied, in the caller's transaction (one statement for a batch).
async fn mark_applied(conn: &mut sqlx::AnyConnection, ids: &[&str], now: i64) -> Result<(), BillingError> {
    let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "UPDATE stripe_events SET state = 'applied', applied_at = $1, error = NULL, lease_until = NULL WHERE id IN ({})",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(&sql).bind(now);
    for id in ids {
        q = q.bind(*id);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// Counts of stored events by state, for the operator.
pub async fn counts(db: &Db) -> Result<Vec<(String, i64)>, BillingError> {
    Ok(sqlx::query_as("SELECT state, COUNT(*) FROM stripe_events GROUP BY state ORDER BY state")
        .fetch_all(db.pool())
        .await?)
}

/// What `reconcile` found.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct Reconciled {
    /// Events Stripe listed.
    pub listed: usize,
    /// Of those, events we did not hold (missed deliveries), now stored.
    pub missed: usize,
    /// Events applied afterwards (missed ones and any still pending).
    pub applied: usize,
}

/// Lists Stripe's events created since `since_secs` (newest first, page by page) and
/// stores any we missed, then applies everything pending.
pub async fn reconcile(
    db: &Db,
    stripe: &crate::Stripe,
    ctx: &apply::Ctx<'_>,
    since_secs: i64,
    now: i64,
) -> Result<Reconciled, BillingError> {
    let mut out = Reconciled::default();
    let mut after: Option<String> = None;
    loop {
        let mut query = serde_json::json!({"limit": 100, "created": {"gte": since_secs}});
        if let Some(a) = &after {
            query["starting_after"] = serde_json::json!(a);
        }
        let page = stripe.get("events", &query).await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        for ev in &data {
            out.listed += 1;
            if matches!(store(db, ev, now).await?, Received::Stored { .. }) {
                out.missed += 1;
            }
        }
        after = data.last().and_then(|e| e["id"].as_str()).map(String::from);
        if page["has_more"] != serde_json::Value::Bool(true) || after.is_none() {
            break;
        }
    }
    // Invoices listed with only their first lines are completed before being booked.
    crate::invoice_lines::complete_pending(db, stripe).await?;
    loop {
        let n = apply_pending(db, ctx, 200, now).await?;
        if n == 0 {
            break;
        }
        out.applied += n;
    }
    Ok(out)
}
