//! Disputed payments: a customer's card issuer taking a charge back (`charge.dispute.*`).
//!
//! Each dispute is kept as its newest Stripe snapshot says (an older one arriving late
//! changes nothing). Stripe's dispute names the charge, not the customer: the customer is
//! the one whose paid invoice the charge paid (`revenue_entries.charge_id`).
//!
//! What a dispute does here:
//! - **The money.** Stripe takes the disputed amount from the balance when a dispute (not
//!   an inquiry) opens and gives it back if the business wins: the ledger books
//!   `{dispute}:withdrawn` (−amount, when it opened) and, when won, `{dispute}:reinstated`
//!   (+amount, when it was won), both of kind `dispute`. Inquiries (`warning_*`) and
//!   prevented disputes move no money.
//! - **The operator.** An alert when a dispute needs a response, naming the amount, the
//!   customer and the evidence deadline (the answer itself is given in Stripe's
//!   dashboard, where the evidence files are); the morning review lists open ones.
//! - **Access.** With `stripe.pause_on_dispute` (the default), a customer with a dispute
//!   open or lost is kept from the service ([`j1msky_accounts::access::set_disputed`])
//!   until it is won, or until the operator releases it ([`release`]).

use j1msky_accounts::access;
use j1msky_audit::{audit, Actor};
use j1msky_core::catalogue::Catalogue;
use j1msky_core::events::ChargeDisputed;
use j1msky_db::{outbox, Backend, Db};
use serde::Serialize;
use serde_json::Value;
use sqlx::AnyConnection;

use crate::refs::{id_of, our_customer, MAX_CREATED_SECS};
use crate::BillingError;

/// Statuses in which Stripe has taken the disputed amount from the balance.
fn funds_withdrawn(status: &str) -> bool {
    matches!(status, "needs_response" | "under_review" | "won" | "lost")
}

/// Statuses that keep the customer from the service (with `stripe.pause_on_dispute`).
fn pauses(status: &str) -> bool {
    matches!(status, "needs_response" | "under_review" | "lost")
}

/// Statuses waiting for the business's answer, with a deadline.
pub fn needs_response(status: &str) -> bool {
    matches!(status, "needs_response" | "warning_needs_response")
}

/// One dispute as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dispute {
    pub id: String,
    pub charge_id: String,
    pub customer_id: Option<String>,
    pub amount_cents: i64,
    /// `amount_cents` as a decimal string, for pages.
    pub amount: String,
    pub currency: String,
    pub reason: String,
    pub status: String,
    pub evidence_due_by: Option<i64>,
    pub opened_at: i64,
    pub released_at: Option<i64>,
    pub released_by: Option<String>,
    /// Whether it waits for the business's answer.
    pub needs_response: bool,
}

const COLUMNS: &str = "id, charge_id, customer_id, amount_cents, currency, reason, status, evidence_due_by, \
                       opened_at, released_at, released_by";

type Row = (String, String, Option<String>, i64, String, String, String, Option<i64>, i64, Option<i64>, Option<String>);

fn from_row(r: Row) -> Dispute {
    let (id, charge_id, customer_id, amount_cents, currency, reason, status, evidence_due_by, opened_at, ra, rb) = r;
    Dispute {
        needs_response: needs_response(&status),
        amount: j1msky_core::Money::from_micros(amount_cents.saturating_mul(10_000)).to_decimal_string(),
        currency: currency.to_uppercase(),
        id,
        charge_id,
        customer_id,
        amount_cents,
        reason,
        status,
        evidence_due_by,
        opened_at,
        released_at: ra,
        released_by: rb,
    }
}

/// Unix seconds as Stripe gives them, in microseconds (`None` when absent or out of range).
fn micros(v: &Value) -> Option<i64> {
    v.as_i64().filter(|s| (0..=MAX_CREATED_SECS).contains(s)).map(|s| s * 1_000_000)
}

/// Applies a `charge.dispute.*` event's snapshot inside the caller's transaction.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    backend: Backend,
    catalogue: &Catalogue,
    obj: &Value,
    version: &str,
    created: i64,
    now: i64,
) -> Result<(), BillingError> {
    let bad = |what: &str| BillingError::Malformed(format!("dispute event: `{what}` missing or not valid"));
    let id = obj["id"]
        .as_str()
        .filter(|s| (s.starts_with("du_") || s.starts_with("dp_")) && s.len() <= 255 && !s.contains('\0'))
        .ok_or_else(|| bad("id"))?;
    let charge = id_of(&obj["charge"]).filter(|c| c.len() <= 255 && !c.contains('\0')).ok_or_else(|| bad("charge"))?;
    let amount = obj["amount"].as_i64().filter(|a| *a >= 0).ok_or_else(|| bad("amount"))?;
    let word = |s: &&str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let status = obj["status"].as_str().filter(word).ok_or_else(|| bad("status"))?;
    let reason = obj["reason"].as_str().filter(word).unwrap_or("general");
    let currency = obj["currency"].as_str().filter(word).unwrap_or("usd");
    let due_by = micros(&obj["evidence_details"]["due_by"]);
    let opened = micros(&obj["created"]).unwrap_or(created.saturating_mul(1_000_000));

    let before: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT status, version, customer_id FROM disputes WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    if before.as_ref().is_some_and(|(_, v, _)| v.as_str() >= version) {
        return Ok(()); // an older snapshot than the one kept
    }
    let (stripe_customer, customer) = match before.as_ref().and_then(|(_, _, c)| c.clone()) {
        Some(c) => (None, Some(c)),
        None => owner_of_charge(conn, obj, &charge).await?,
    };
    sqlx::query(
        "INSERT INTO disputes (id, charge_id, customer_id, stripe_customer_id, amount_cents, currency, reason, status,
             evidence_due_by, opened_at, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE SET amount_cents = excluded.amount_cents, reason = excluded.reason,
             status = excluded.status, evidence_due_by = excluded.evidence_due_by, version = excluded.version,
             updated_at = excluded.updated_at, customer_id = COALESCE(disputes.customer_id, excluded.customer_id),
             stripe_customer_id = COALESCE(disputes.stripe_customer_id, excluded.stripe_customer_id)",
    )
    .bind(id)
    .bind(&charge)
    .bind(&customer)
    .bind(&stripe_customer)
    .bind(amount)
    .bind(currency)
    .bind(reason)
    .bind(status)
    .bind(due_by)
    .bind(opened)
    .bind(version)
    .bind(now)
    .execute(&mut *conn)
    .await?;

    // The money Stripe moved, each movement booked once whatever the order of delivery.
    let sc = stripe_customer.as_deref();
    let c = customer.as_deref();
    if funds_withdrawn(status) {
        let source = format!("{id}:withdrawn");
        crate::invoices::book_on_charge(
            conn,
            backend,
            &source,
            "dispute",
            (c, sc),
            -amount,
            &charge,
            currency,
            opened,
            now,
        )
        .await?;
    }
    // Stripe's dispute fee, in the dispute's balance transactions.
    crate::fees::book_from_dispute(conn, backend, obj, &charge, (c, sc), opened, now).await?;
    if status == "won" {
        let source = format!("{id}:reinstated");
        let at = created * 1_000_000;
        crate::invoices::book_on_charge(conn, backend, &source, "dispute", (c, sc), amount, &charge, currency, at, now)
            .await?;
    }

    let restricted = match &customer {
        Some(c) => settle_access(conn, catalogue, c, now).await?,
        None => false,
    };
    if needs_response(status) {
        let who = customer.as_deref().unwrap_or("not one of ours");
        let due = due_by.map_or_else(|| "no deadline given".to_string(), |d| format!("respond by {}", day(d)));
        let message = format!(
            "Payment disputed: {} {} on charge {charge} (customer {who}, reason {reason}); {due} with evidence \
             in the Stripe dashboard{}",
            j1msky_core::Money::from_micros(amount.saturating_mul(10_000)).to_decimal_string(),
            currency.to_uppercase(),
            if restricted { "; the customer is paused until it is settled" } else { "" },
        );
        let detail = serde_json::json!({"dispute": id, "charge": charge, "customer": customer, "status": status});
        j1msky_audit::alerts::record(
            conn,
            &format!("alr_dispute_{id}_{status}"),
            "payment_disputed",
            &message,
            &detail,
            now,
        )
        .await?;
    }
    if before.as_ref().is_none_or(|(s, _, _)| s != status) {
        let event = ChargeDisputed {
            dispute: id.into(),
            charge,
            status: status.into(),
            reason: reason.into(),
            amount_cents: amount,
            currency: currency.into(),
            evidence_due_by: due_by,
            restricted,
        };
        outbox::emit_typed(conn, backend, event, customer.as_deref(), now).await?;
    }
    Ok(())
}

/// A day as `YYYY-MM-DD` (UTC) for messages.
fn day(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map_or_else(|| micros.to_string(), |t| t.format("%Y-%m-%d").to_string())
}

/// The Stripe customer and ours behind a disputed charge: the customer the object names
/// when it names one, else the payer of our paid invoice the charge paid.
async fn owner_of_charge(
    conn: &mut AnyConnection,
    obj: &Value,
    charge: &str,
) -> Result<(Option<String>, Option<String>), BillingError> {
    if let Some(sc) = id_of(&obj["customer"]) {
        let ours = our_customer(conn, &sc).await?;
        return Ok((Some(sc), ours));
    }
    let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT stripe_customer_id, customer_id FROM revenue_entries WHERE charge_id = $1 ORDER BY occurred_at LIMIT 1",
    )
    .bind(charge)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((sc, ours)) = row else { return Ok((None, None)) };
    let ours = match (ours, &sc) {
        (Some(o), _) => Some(o),
        (None, Some(sc)) => our_customer(conn, sc).await?,
        (None, None) => None,
    };
    Ok((sc, ours))
}

/// Sets whether the customer's disputes keep them from the service: since the first
/// that is open or lost and not released, when the catalogue says disputes pause access.
/// Returns whether the customer is kept out after it.
async fn settle_access(
    conn: &mut AnyConnection,
    catalogue: &Catalogue,
    customer: &str,
    now: i64,
) -> Result<bool, BillingError> {
    // The customer's row first, then its disputes: two transactions deciding for one
    // customer at once (a dispute applied while another is released, two appliers) take
    // turns, and the second reads the first's disputes once it committed. Without it,
    // on PostgreSQL, each decided from disputes that missed the other's.
    j1msky_accounts::customer_links::lock(conn, customer).await?;
    let since = if catalogue.stripe.pause_on_dispute {
        let open: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, opened_at FROM disputes WHERE customer_id = $1 AND released_at IS NULL")
                .bind(customer)
                .fetch_all(&mut *conn)
                .await?;
        open.iter().filter(|(status, _)| pauses(status)).map(|(_, opened)| *opened).min()
    } else {
        None
    };
    // The actor of what Stripe's events change (as `apply::actor`).
    access::set_disputed(conn, &Actor("stripe".into()), customer, since, now).await?;
    Ok(since.is_some())
}

/// The operator lets the customer of dispute `id` use the service again despite it (a
/// dispute they settled with the customer, or one they chose to accept): audited; the
/// customer stays paused if another dispute of theirs still pauses them.
pub async fn release(
    db: &Db,
    catalogue: &Catalogue,
    actor: &Actor,
    id: &str,
    now: i64,
) -> Result<Dispute, BillingError> {
    let mut tx = db.begin().await?;
    let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM disputes WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else { return Err(BillingError::NotFound("dispute")) };
    let dispute = from_row(row);
    let Some(customer) = dispute.customer_id.clone() else {
        return Err(BillingError::Invalid {
            field: "dispute",
            message: format!("{id} is on charge {} of no customer of ours: nobody is paused by it", dispute.charge_id),
        });
    };
    if dispute.released_at.is_some() {
        tx.rollback().await?;
        return Ok(dispute);
    }
    sqlx::query("UPDATE disputes SET released_at = $1, released_by = $2 WHERE id = $3")
        .bind(now)
        .bind(&actor.0)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let detail = serde_json::json!({"dispute": id, "status": dispute.status});
    audit::record(&mut tx, actor, "dispute.released", id, Some(&customer), detail, now).await?;
    settle_access(&mut tx, catalogue, &customer, now).await?;
    tx.commit().await?;
    Ok(Dispute { released_at: Some(now), released_by: Some(actor.0.clone()), ..dispute })
}

/// A customer's disputes, newest first.
pub async fn of_customer(db: &Db, customer_id: &str) -> Result<Vec<Dispute>, BillingError> {
    let rows: Vec<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM disputes WHERE customer_id = $1 ORDER BY opened_at DESC, id"))
            .bind(customer_id)
            .fetch_all(db.pool())
            .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Disputes waiting for the business's answer, the nearest deadline first.
pub async fn awaiting_response(db: &Db, limit: i64) -> Result<Vec<Dispute>, BillingError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM disputes WHERE status IN ('needs_response', 'warning_needs_response')
         ORDER BY evidence_due_by IS NULL, evidence_due_by, id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}
