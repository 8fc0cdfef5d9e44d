//! The message queue: one row per (source, step, occurrence), sent exactly once.
//!
//! States: `queued` → `sending` (leased to one sender) → `sent` | `failed` | `unknown`,
//! or, decided at send time without sending: `stale` (its `stale_at` passed),
//! `suppressed` (address on the suppression list, or no consent for the category) and
//! `deferred` (quiet hours or a frequency cap: due again at `not_before`).
//!
//! Exactly once. A sender claims due rows with a lease ([`claim`]: one UPDATE under
//! SQLite's write lock; `FOR UPDATE SKIP LOCKED` on PostgreSQL), checks the rules, then
//! records `attempt_at` (committed) *before* handing the message to the transport, and
//! `sent` after. Every attempt carries the row's deterministic `Message-ID`
//! ([`message_id`]). The choice for a crash between the two: a `sending` row whose lease
//! expired with `attempt_at` set may already be in the recipient's mailbox, so it is
//! marked `unknown` and never resent automatically (an operator can look at it; the
//! same Message-ID lets a mail system drop a duplicate if one is ever resent by hand).
//! A row whose lease expired before any attempt is simply claimed again. A transport
//! error that is definitely a refusal before the message was taken (a 4xx, no
//! connection) is retried with back-off up to [`MAX_ATTEMPTS`], then `failed`; a 5xx is
//! `failed` at once, and a 550/551/553 (no such mailbox) also suppresses the address
//! as a hard bounce. Any other error (connection lost mid-DATA, timeout) is `unknown`.
//!
//! Send-time rules, in order: staleness; the suppression list (every category: a hard
//! bounce, an operator's entry, or unsubscribe-from-everything); consent
//! (`transactional` always; `onboarding` and `retention` unless the customer opted out;
//! `marketing` only after an explicit opt-in); then, for non-transactional mail only,
//! quiet hours in the customer's time zone (deferred to the window's local end) and the
//! per-local-day and per-local-week caps of `lifecycle.delivery` (deferred to the next
//! local day or week). Two senders racing on one customer may exceed a cap by one.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use j1msky_audit::Actor;
use j1msky_core::catalogue::lifecycle::{parse_hh_mm, Delivery};
use j1msky_db::{Backend, Db};
use sha2::Sha256;
use sqlx::{AnyConnection, Row};

use crate::transport::{Outgoing, SendError};
use crate::{Ctx, LifecycleError};

/// Transport attempts of a message refused before delivery, then `failed`.
pub const MAX_ATTEMPTS: i64 = 5;
/// How long a claimed message is leased to its sender.
pub const LEASE_MICROS: i64 = 120 * 1_000_000;
const SECOND: i64 = 1_000_000;

/// Consent category of a message; `Transactional` is always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Transactional,
    Onboarding,
    Retention,
    Marketing,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transactional => "transactional",
            Category::Onboarding => "onboarding",
            Category::Retention => "retention",
            Category::Marketing => "marketing",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        match s {
            "transactional" => Some(Category::Transactional),
            "onboarding" => Some(Category::Onboarding),
            "retention" => Some(Category::Retention),
            "marketing" => Some(Category::Marketing),
            _ => None,
        }
    }
}

/// A rendered message to queue for a customer.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub customer_id: &'a str,
    /// What it belongs to: an enrollment id, `newsletter:<id>`, `survey:<id>`, …
    pub source: &'a str,
    pub step: &'a str,
    pub occurrence: i64,
    pub category: Category,
    pub template: &'a str,
    pub rendered: &'a crate::templates::Rendered,
    /// Not sent before this time (micros); quiet hours may push it later.
    pub not_before: i64,
    /// Dropped (state `stale`) instead of sent when still unsent at this time.
    pub stale_at: Option<i64>,
}

/// Queues a message inside the caller's transaction; `Ok(None)` when this
/// (source, step, occurrence) was already queued. Its `Message-ID` is derived from
/// that triple, so a resend after a crash carries the same id.
pub async fn enqueue(
    conn: &mut AnyConnection,
    backend: Backend,
    msg: &NewMessage<'_>,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    enqueue_to(conn, backend, msg, None, now).await
}

/// [`enqueue`] for mail to one user's address (`to`) instead of the customer's contact:
/// a password reset, a member's invite.
pub async fn enqueue_to(
    conn: &mut AnyConnection,
    _backend: Backend,
    msg: &NewMessage<'_>,
    to: Option<&str>,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    let id = j1msky_core::ids::new_id("msg");
    let inserted = sqlx::query(
        "INSERT INTO lifecycle_messages (id, customer_id, source, step, occurrence, category, template, subject,
             body_text, body_html, state, not_before, stale_at, message_id, created_at, recipient)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, $12, $13, $14, $15)
         ON CONFLICT (source, step, occurrence) DO NOTHING",
    )
    .bind(&id)
    .bind(msg.customer_id)
    .bind(msg.source)
    .bind(msg.step)
    .bind(msg.occurrence)
    .bind(msg.category.as_str())
    .bind(msg.template)
    .bind(&msg.rendered.subject)
    .bind(&msg.rendered.text)
    .bind(&msg.rendered.html)
    .bind(msg.not_before)
    .bind(msg.stale_at)
    .bind(message_id(msg.source, msg.step, msg.occurrence))
    .bind(now)
    .bind(to)
    .execute(&mut *conn)
    .await?;
    Ok((inserted.rows_affected() == 1).then_some(id))
}

/// The deterministic `Message-ID` of (source, step, occurrence), without angle brackets.
pub fn message_id(source: &str, step: &str, occurrence: i64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(step.as_bytes());
    h.update([0]);
    h.update(occurrence.to_le_bytes());
    let digest = hex::encode(&h.finalize()[..12]);
    format!("{digest}.{occurrence}@lifecycle.j1msky")
}

/// A rendered message to an operator: addressed to `to`, belonging to no customer,
/// always transactional (no consent, quiet hours or caps; the suppression list applies).
#[derive(Debug, Clone)]
pub struct OperatorMessage<'a> {
    pub to: &'a str,
    pub source: &'a str,
    pub step: &'a str,
    pub occurrence: i64,
    pub template: &'a str,
    pub rendered: &'a crate::templates::Rendered,
}

/// Queues an operator's message inside the caller's transaction, due now; `Ok(None)`
/// when this (source, step, occurrence) was already queued.
pub async fn enqueue_for_operator(
    conn: &mut AnyConnection,
    msg: &OperatorMessage<'_>,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    let id = j1msky_core::ids::new_id("msg");
    let inserted = sqlx::query(
        "INSERT INTO lifecycle_messages (id, customer_id, source, step, occurrence, category, template, subject,
             body_text, body_html, state, not_before, stale_at, message_id, recipient, created_at)
         VALUES ($1, NULL, $2, $3, $4, 'transactional', $5, $6, $7, $8, 'queued', $9, NULL, $10, $11, $9)
         ON CONFLICT (source, step, occurrence) DO NOTHING",
    )
    .bind(&id)
    .bind(msg.source)
    .bind(msg.step)
    .bind(msg.occurrence)
    .bind(msg.template)
    .bind(&msg.rendered.subject)
    .bind(&msg.rendered.text)
    .bind(&msg.rendered.html)
    .bind(now)
    .bind(message_id(msg.source, msg.step, msg.occurrence))
    .bind(msg.to)
    .execute(&mut *conn)
    .await?;
    Ok((inserted.rows_affected() == 1).then_some(id))
}

// ---------------------------------------------------------------------------------------
// The queue as shown

/// A queued or finished message, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Message {
    pub id: String,
    pub customer_id: String,
    pub source: String,
    pub step: String,
    pub category: String,
    pub template: String,
    pub subject: String,
    pub state: String,
    pub not_before: i64,
    pub stale_at: Option<i64>,
    pub attempts: i64,
    pub message_id: String,
    pub to_addr: Option<String>,
    pub sent_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
}

/// Every state a message can be in.
pub const STATES: &[&str] = &["queued", "sending", "sent", "failed", "unknown", "stale", "suppressed", "deferred"];

/// How mail delivery is doing, for the morning review: messages due for a while and
/// still not sent (no sender running, no transport, or a server refusing them), and
/// messages that failed or may not have arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Queued or deferred messages due before `overdue_before` and not sent.
    pub overdue: i64,
    /// The earliest due time among them.
    pub oldest_due: Option<i64>,
    /// The newest error recorded on one of them (a refused attempt, retried later).
    pub overdue_error: Option<String>,
    /// Messages whose attempt since `since` ended `failed` or `unknown`.
    pub failed: i64,
    pub unknown: i64,
}

/// Delivery as of now: what is still unsent though due before `overdue_before`, and
/// what failed in attempts made since `since`.
pub async fn health(db: &Db, overdue_before: i64, since: i64) -> Result<Health, LifecycleError> {
    let row = sqlx::query(
        "SELECT COUNT(*), MIN(not_before) FROM lifecycle_messages
         WHERE state IN ('queued', 'deferred') AND not_before < $1",
    )
    .bind(overdue_before)
    .fetch_one(db.pool())
    .await?;
    let overdue: i64 = row.try_get(0)?;
    let oldest_due: Option<i64> = row.try_get(1)?;
    let overdue_error: Option<String> = if overdue > 0 {
        sqlx::query_scalar(
            "SELECT last_error FROM lifecycle_messages
             WHERE state IN ('queued', 'deferred') AND not_before < $1 AND last_error IS NOT NULL
             ORDER BY not_before DESC LIMIT 1",
        )
        .bind(overdue_before)
        .fetch_optional(db.pool())
        .await?
    } else {
        None
    };
    let rows = sqlx::query(
        "SELECT state, COUNT(*) FROM lifecycle_messages
         WHERE state IN ('failed', 'unknown') AND attempt_at >= $1 GROUP BY state",
    )
    .bind(since)
    .fetch_all(db.pool())
    .await?;
    let mut h = Health { overdue, oldest_due, overdue_error, ..Health::default() };
    for r in rows {
        let state: String = r.try_get(0)?;
        let n: i64 = r.try_get(1)?;
        if state == "failed" {
            h.failed = n;
        } else {
            h.unknown = n;
        }
    }
    Ok(h)
}

/// Messages, newest first, optionally of one state and/or one customer.
pub async fn list(
    db: &Db,
    state: Option<&str>,
    customer_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Message>, LifecycleError> {
    if let Some(s) = state {
        if !STATES.contains(&s) {
            return Err(LifecycleError::invalid("state", format!("`{s}` is not one of {}", STATES.join(", "))));
        }
    }
    let rows = sqlx::query(
        "SELECT id, COALESCE(customer_id, ''), source, step, category, template, subject, state, not_before, stale_at,
                attempts, message_id, to_addr, sent_at, last_error, created_at
         FROM lifecycle_messages
         WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR customer_id = $2)
         ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(state)
    .bind(customer_id)
    .bind(limit.clamp(1, 1000))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Message {
                id: r.try_get(0)?,
                customer_id: r.try_get(1)?,
                source: r.try_get(2)?,
                step: r.try_get(3)?,
                category: r.try_get(4)?,
                template: r.try_get(5)?,
                subject: r.try_get(6)?,
                state: r.try_get(7)?,
                not_before: r.try_get(8)?,
                stale_at: r.try_get(9)?,
                attempts: r.try_get(10)?,
                message_id: r.try_get(11)?,
                to_addr: r.try_get(12)?,
                sent_at: r.try_get(13)?,
                last_error: r.try_get(14)?,
                created_at: r.try_get(15)?,
            })
        })
        .collect()
}

/// One message with its bodies, as stored when it was queued.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageWithBody {
    #[serde(flatten)]
    pub message: Message,
    pub body_text: String,
    pub body_html: String,
}

/// The paths of the links whose last segment is a one-time secret: setting a password
/// (a trial's or a member's invite), a reset, a survey's answer; as written in a text
/// body and in an HTML body (its slashes escaped).
const SECRET_LINK_PATHS: &[&str] = &[
    "/set-password/",
    "/reset/",
    "/s/",
    "&#x2f;set-password&#x2f;",
    "&#x2f;reset&#x2f;",
    "&#x2f;s&#x2f;",
    "&#47;set-password&#47;",
    "&#47;reset&#47;",
    "&#47;s&#47;",
];

/// `text` with the token of every one-time link hidden, for showing a stored message to
/// an operator: whoever holds such a link can set the customer's password (or answer as
/// them), which an operator must not be able to do from the message's page.
pub fn without_link_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = SECRET_LINK_PATHS.iter().filter_map(|p| rest.find(p).map(|i| (i, p.len()))).min();
        let Some((at, len)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at + len]);
        rest = &rest[at + len..];
        // Tokens are URL-safe base64 (`secrets::random_token`, 43 characters).
        let n = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_').count();
        if n >= 16 {
            out.push_str("[one-time token hidden]");
            rest = &rest[n..];
        }
    }
}

/// One message by its row id, with its text and HTML bodies.
pub async fn get(db: &Db, id: &str) -> Result<MessageWithBody, LifecycleError> {
    let row = sqlx::query(
        "SELECT id, COALESCE(customer_id, ''), source, step, category, template, subject, state, not_before, stale_at,
                attempts, message_id, to_addr, sent_at, last_error, created_at, body_text, body_html
         FROM lifecycle_messages WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db.pool())
    .await?
    .ok_or_else(|| LifecycleError::NotFound(format!("message {id}")))?;
    Ok(MessageWithBody {
        message: Message {
            id: row.try_get(0)?,
            customer_id: row.try_get(1)?,
            source: row.try_get(2)?,
            step: row.try_get(3)?,
            category: row.try_get(4)?,
            template: row.try_get(5)?,
            subject: row.try_get(6)?,
            state: row.try_get(7)?,
            not_before: row.try_get(8)?,
            stale_at: row.try_get(9)?,
            attempts: row.try_get(10)?,
            message_id: row.try_get(11)?,
            to_addr: row.try_get(12)?,
            sent_at: row.try_get(13)?,
            last_error: row.try_get(14)?,
            created_at: row.try_get(15)?,
        },
        body_text: row.try_get(16)?,
        body_html: row.try_get(17)?,
    })
}

/// The states an operator may send again: `unknown` (it may have arrived) and `failed`.
pub const REQUEUEABLE: &[&str] = &["unknown", "failed"];

/// Puts an `unknown` or `failed` message back in the queue, due now, for an operator who
/// decided to send it again (the CLI and `/admin/lifecycle/messages` call this). It
/// keeps its `Message-ID`, so a mail system that took the first attempt may drop the
/// copy, but the recipient may still get it twice. Its staleness cut-off is dropped:
/// the operator chose to send it late. The send-time rules still apply. Audited.
pub async fn requeue(db: &Db, actor: &Actor, id: &str, now: i64) -> Result<Message, LifecycleError> {
    let before = get(db, id).await?.message;
    if !REQUEUEABLE.contains(&before.state.as_str()) {
        return Err(LifecycleError::Conflict(format!(
            "message {id} is `{}`: only {} messages can be requeued",
            before.state,
            REQUEUEABLE.join(" or ")
        )));
    }
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE lifecycle_messages SET state = 'queued', not_before = $1, stale_at = NULL, attempts = 0,
             attempt_at = NULL, lease_owner = NULL, lease_until = NULL
         WHERE id = $2 AND state = $3",
    )
    .bind(now)
    .bind(id)
    .bind(&before.state)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() != 1 {
        return Err(LifecycleError::Conflict(format!("message {id} changed meanwhile; look at it again")));
    }
    j1msky_audit::audit::record(
        &mut tx,
        actor,
        "lifecycle.message_requeue",
        id,
        Some(before.customer_id.as_str()).filter(|c| !c.is_empty()),
        serde_json::json!({"from_state": before.state, "message_id": before.message_id, "last_error": before.last_error}),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(get(db, id).await?.message)
}

// ---------------------------------------------------------------------------------------
// Suppressions and consent

/// Why an address gets no mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressReason {
    Unsubscribe,
    HardBounce,
    Operator,
}

impl SuppressReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressReason::Unsubscribe => "unsubscribe",
            SuppressReason::HardBounce => "hard_bounce",
            SuppressReason::Operator => "operator",
        }
    }
}

/// One suppressed address.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Suppression {
    pub email: String,
    pub customer_id: Option<String>,
    pub reason: String,
    pub detail: String,
    pub at: i64,
}

fn email_key(email: &str) -> Result<String, LifecycleError> {
    j1msky_accounts::Email::parse(email)
        .map(|e| e.key())
        .map_err(|_| LifecycleError::invalid("email", format!("`{}` is not an email address", email.trim())))
}

async fn insert_suppression(
    conn: &mut AnyConnection,
    email_lower: &str,
    customer_id: Option<&str>,
    reason: SuppressReason,
    detail: &str,
    now: i64,
) -> Result<bool, LifecycleError> {
    let done = sqlx::query(
        "INSERT INTO lifecycle_suppressions (email_lower, customer_id, reason, detail, at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (email_lower) DO NOTHING",
    )
    .bind(email_lower)
    .bind(customer_id)
    .bind(reason.as_str())
    .bind(detail)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Adds an address to the suppression list (audited); false when it was already there.
pub async fn suppress(
    db: &Db,
    actor: &Actor,
    email: &str,
    reason: SuppressReason,
    detail: &str,
    now: i64,
) -> Result<bool, LifecycleError> {
    let key = email_key(email)?;
    let mut tx = db.begin().await?;
    let added = insert_suppression(&mut tx, &key, None, reason, detail, now).await?;
    if added {
        j1msky_audit::audit::record(
            &mut tx,
            actor,
            "lifecycle.suppress",
            &key,
            None,
            serde_json::json!({"reason": reason.as_str(), "detail": detail}),
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// Removes an address from the suppression list (audited); false when it was not there.
pub async fn unsuppress(db: &Db, actor: &Actor, email: &str, now: i64) -> Result<bool, LifecycleError> {
    let key = email_key(email)?;
    let mut tx = db.begin().await?;
    let done =
        sqlx::query("DELETE FROM lifecycle_suppressions WHERE email_lower = $1").bind(&key).execute(&mut *tx).await?;
    let removed = done.rows_affected() == 1;
    if removed {
        j1msky_audit::audit::record(&mut tx, actor, "lifecycle.unsuppress", &key, None, serde_json::json!({}), now)
            .await?;
    }
    tx.commit().await?;
    Ok(removed)
}

/// The suppression list, newest first.
pub async fn suppressions(db: &Db, limit: i64) -> Result<Vec<Suppression>, LifecycleError> {
    let rows = sqlx::query(
        "SELECT email_lower, customer_id, reason, detail, at FROM lifecycle_suppressions ORDER BY at DESC, email_lower LIMIT $1",
    )
    .bind(limit.clamp(1, 10_000))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Suppression {
                email: r.try_get(0)?,
                customer_id: r.try_get(1)?,
                reason: r.try_get(2)?,
                detail: r.try_get(3)?,
                at: r.try_get(4)?,
            })
        })
        .collect()
}

/// Whether an address is on the suppression list.
pub async fn is_suppressed(db: &Db, email: &str) -> Result<bool, LifecycleError> {
    let key = email_key(email)?;
    let row = sqlx::query("SELECT 1 FROM lifecycle_suppressions WHERE email_lower = $1")
        .bind(&key)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// Records a customer's choice for a category (`transactional` cannot be refused).
pub async fn set_consent(
    db: &Db,
    customer_id: &str,
    category: Category,
    granted: bool,
    source: &str,
    now: i64,
) -> Result<(), LifecycleError> {
    let mut tx = db.begin().await?;
    set_consent_in(&mut tx, customer_id, category, granted, source, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn set_consent_in(
    conn: &mut AnyConnection,
    customer_id: &str,
    category: Category,
    granted: bool,
    source: &str,
    now: i64,
) -> Result<(), LifecycleError> {
    if category == Category::Transactional {
        return Err(LifecycleError::invalid("category", "transactional mail is always sent"));
    }
    sqlx::query(
        "INSERT INTO lifecycle_consents (customer_id, category, granted, source, at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (customer_id, category) DO UPDATE SET granted = $3, source = $4, at = $5",
    )
    .bind(customer_id)
    .bind(category.as_str())
    .bind(i64::from(granted))
    .bind(source)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether mail of `category` may go to the customer: transactional always; marketing
/// only after an explicit opt-in; the others unless the customer opted out.
pub async fn consents(db: &Db, customer_id: &str, category: Category) -> Result<bool, LifecycleError> {
    if category == Category::Transactional {
        return Ok(true);
    }
    let row = sqlx::query("SELECT granted FROM lifecycle_consents WHERE customer_id = $1 AND category = $2")
        .bind(customer_id)
        .bind(category.as_str())
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<i64, _>(0)? != 0,
        None => category != Category::Marketing,
    })
}

// ---------------------------------------------------------------------------------------
// Unsubscribe links: an HMAC of (customer, category) under a key kept in the database.

type HmacSha256 = Hmac<Sha256>;

async fn signing_key(db: &Db, now: i64) -> Result<String, LifecycleError> {
    sqlx::query(
        "INSERT INTO lifecycle_keys (name, secret, created_at) VALUES ('unsubscribe', $1, $2)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(j1msky_accounts::secrets::random_token())
    .bind(now)
    .execute(db.pool())
    .await?;
    let row = sqlx::query("SELECT secret FROM lifecycle_keys WHERE name = 'unsubscribe'").fetch_one(db.pool()).await?;
    Ok(row.try_get(0)?)
}

fn sign(key: &str, payload: &str) -> String {
    let mut mac = match HmacSha256::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC takes keys of any length: not reached.
    };
    mac.update(payload.as_bytes());
    URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..18])
}

fn token_with(key: &str, customer_id: &str, category: Category) -> String {
    let payload = URL_SAFE_NO_PAD.encode(format!("{customer_id}\n{}", category.as_str()));
    let mac = sign(key, &payload);
    format!("{payload}.{mac}")
}

/// The unsubscribe token of (customer, category).
pub async fn unsubscribe_token(
    db: &Db,
    customer_id: &str,
    category: Category,
    now: i64,
) -> Result<String, LifecycleError> {
    Ok(token_with(&signing_key(db, now).await?, customer_id, category))
}

/// The (customer, category) a token stands for; `None` for anything not issued by us.
pub async fn verify_token(db: &Db, token: &str, now: i64) -> Result<Option<(String, Category)>, LifecycleError> {
    let Some((payload, mac)) = token.split_once('.') else { return Ok(None) };
    if token.len() > 512 {
        return Ok(None);
    }
    let key = signing_key(db, now).await?;
    if !j1msky_accounts::secrets::same(&sign(&key, payload), mac) {
        return Ok(None);
    }
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload) else { return Ok(None) };
    let Ok(text) = String::from_utf8(bytes) else { return Ok(None) };
    let Some((customer, category)) = text.split_once('\n') else { return Ok(None) };
    Ok(Category::parse(category).map(|c| (customer.to_string(), c)))
}

/// One-click unsubscribe: the customer no longer gets mail of the token's category.
/// `Ok(None)` for a token that is not ours (the page says the same either way).
pub async fn unsubscribe(db: &Db, token: &str, now: i64) -> Result<Option<Category>, LifecycleError> {
    let Some((customer, category)) = verify_token(db, token, now).await? else { return Ok(None) };
    if category == Category::Transactional {
        return Ok(None);
    }
    let mut tx = db.begin().await?;
    set_consent_in(&mut tx, &customer, category, false, "unsubscribe", now).await?;
    j1msky_audit::audit::record(
        &mut tx,
        &Actor::system(),
        "lifecycle.unsubscribe",
        &customer,
        Some(&customer),
        serde_json::json!({"category": category.as_str()}),
        now,
    )
    .await?;
    let event = j1msky_core::events::LifecycleUnsubscribed { category: category.as_str().to_string() };
    j1msky_db::outbox::emit_typed(&mut tx, db.backend(), event, Some(&customer), now).await?;
    tx.commit().await?;
    Ok(Some(category))
}

// ---------------------------------------------------------------------------------------
// Local time: quiet hours and caps

fn local_date(tz: Tz, now: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_micros(now).map(|utc| utc.with_timezone(&tz).date_naive()).unwrap_or_default()
}

/// The instant of a local wall-clock time; a time skipped by a DST change resolves to
/// the first instant after the gap, a repeated one to its first occurrence.
pub fn local_instant(tz: Tz, date: NaiveDate, minutes: u32) -> i64 {
    let Some(naive) = date.and_hms_opt(minutes / 60, minutes % 60, 0) else { return 0 };
    for step in 0..=180 {
        let candidate = naive + chrono::Duration::minutes(step);
        if let Some(dt) = tz.from_local_datetime(&candidate).earliest() {
            return dt.timestamp_micros();
        }
    }
    tz.from_utc_datetime(&naive).timestamp_micros()
}

/// When `now` falls in the daily quiet window `[start, end)` (local minutes, may wrap
/// midnight), the instant the window ends; `None` outside it.
pub fn quiet_until(tz: Tz, now: i64, start: u32, end: u32) -> Option<i64> {
    if start == end {
        return None;
    }
    let date = local_date(tz, now);
    let yesterday = date.pred_opt().unwrap_or(date);
    let tomorrow = date.succ_opt().unwrap_or(date);
    // The windows that could contain now: the one starting yesterday and the one today.
    for day in [yesterday, date] {
        let s = local_instant(tz, day, start);
        let e = if end > start {
            local_instant(tz, day, end)
        } else {
            local_instant(tz, day.succ_opt().unwrap_or(tomorrow), end)
        };
        if s <= now && now < e {
            return Some(e);
        }
    }
    None
}

/// The local week (Monday first) containing `now`: `[start, end)`.
pub fn local_week(tz: Tz, now: i64) -> (i64, i64) {
    let date = local_date(tz, now);
    let monday = date - chrono::Duration::days(i64::from(date.weekday().num_days_from_monday()));
    (local_instant(tz, monday, 0), local_instant(tz, monday + chrono::Duration::days(7), 0))
}

fn customer_zone(ctx: &Ctx, zone: &str) -> Tz {
    zone.parse::<Tz>().or_else(|_| ctx.catalogue.business.time_zone.parse::<Tz>()).unwrap_or(chrono_tz::UTC)
}

async fn sent_since(db: &Db, customer_id: &str, since: i64) -> Result<i64, LifecycleError> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM lifecycle_messages
         WHERE customer_id = $1 AND sent_at >= $2 AND state = 'sent' AND category <> 'transactional'",
    )
    .bind(customer_id)
    .bind(since)
    .fetch_one(db.pool())
    .await?;
    Ok(row.try_get(0)?)
}

/// When a non-transactional message may go no earlier than (quiet hours, caps), or
/// `None` when it may go now.
async fn hold_until(ctx: &Ctx, customer_id: &str, tz: Tz, now: i64) -> Result<Option<(i64, String)>, LifecycleError> {
    let d = &ctx.catalogue.lifecycle.delivery;
    if let (Some(s), Some(e)) = (parse_hh_mm(&d.quiet_hours.start), parse_hh_mm(&d.quiet_hours.end)) {
        if let Some(until) = quiet_until(tz, now, s, e) {
            return Ok(Some((until, "quiet hours".into())));
        }
    }
    if d.max_per_week > 0 {
        let (start, end) = local_week(tz, now);
        if sent_since(&ctx.db, customer_id, start).await? >= i64::from(d.max_per_week) {
            return Ok(Some((end, format!("weekly cap of {}", d.max_per_week))));
        }
    }
    if d.max_per_day > 0 {
        let (start, end) = j1msky_core::windows::day(tz, now);
        if sent_since(&ctx.db, customer_id, start).await? >= i64::from(d.max_per_day) {
            return Ok(Some((end, format!("daily cap of {}", d.max_per_day))));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------
// Composing

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The full RFC 5322 text of a message: multipart/alternative text + HTML, the
/// deterministic Message-ID, the footer with the physical address in both parts and,
/// on non-transactional mail, RFC 8058 one-click `List-Unsubscribe`.
#[allow(clippy::too_many_arguments)]
pub fn compose(
    delivery: &Delivery,
    to: &str,
    message_id: &str,
    subject: &str,
    text: &str,
    html: &str,
    unsubscribe: Option<(&str, &str)>,
    now: i64,
) -> Result<Vec<u8>, SendError> {
    use lettre::message::header::{HeaderName, HeaderValue};
    use lettre::message::{Mailbox, MultiPart};
    let bad = |what: &str, e: String| SendError::Rejected { hard_bounce: false, message: format!("{what}: {e}") };
    let from: Mailbox = format!("{} <{}>", delivery.from_name, delivery.from_address)
        .parse()
        .map_err(|e: lettre::address::AddressError| bad("from", e.to_string()))?;
    let to_box: Mailbox = to.parse().map_err(|e: lettre::address::AddressError| bad("to", e.to_string()))?;
    let mut text_part = format!("{}\n\n-- \n{}\n", text.trim_end(), delivery.physical_address);
    let mut html_footer =
        format!("<hr><p style=\"font-size:12px;color:#666\">{}", escape_html(&delivery.physical_address));
    if let Some((url, _)) = unsubscribe {
        text_part.push_str(&format!("Unsubscribe: {url}\n"));
        html_footer.push_str(&format!("<br><a href=\"{}\">Unsubscribe</a>", escape_html(url)));
    }
    html_footer.push_str("</p>");
    let html_part = match html.rfind("</body>") {
        Some(at) => format!("{}{}{}", &html[..at], html_footer, &html[at..]),
        None => format!("{html}{html_footer}"),
    };
    let date = std::time::UNIX_EPOCH + Duration::from_micros(u64::try_from(now).unwrap_or(0));
    let mut builder = lettre::Message::builder()
        .from(from)
        .to(to_box)
        .subject(subject)
        .date(date)
        .message_id(Some(format!("<{message_id}>")));
    if let Some(reply_to) = &delivery.reply_to {
        let r: Mailbox = reply_to.parse().map_err(|e: lettre::address::AddressError| bad("reply_to", e.to_string()))?;
        builder = builder.reply_to(r);
    }
    if let Some((url, mailto)) = unsubscribe {
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{url}>, <{mailto}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
    }
    let message = builder
        .multipart(MultiPart::alternative_plain_html(text_part, html_part))
        .map_err(|e| bad("message", e.to_string()))?;
    Ok(message.formatted())
}

// ---------------------------------------------------------------------------------------
// Sending

/// What one pass of the sender did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub sent: usize,
    pub deferred: usize,
    pub suppressed: usize,
    pub stale: usize,
    pub retried: usize,
    pub failed: usize,
    pub unknown: usize,
}

struct Claimed {
    id: String,
    /// `None` for an operator's message, which carries its address in `recipient`.
    customer_id: Option<String>,
    category: String,
    subject: String,
    body_text: String,
    body_html: String,
    message_id: String,
    stale_at: Option<i64>,
    attempts: i64,
    attempt_at: Option<i64>,
    template: String,
    source: String,
    /// The address chosen when the message was queued (an operator, an invited member);
    /// `None`: the customer's contact at send time.
    recipient: Option<String>,
}

/// Claims up to `limit` due messages for `owner` (queued or deferred and due, or
/// `sending` with an expired lease).
async fn claim(db: &Db, owner: &str, now: i64, limit: i64) -> Result<Vec<Claimed>, LifecycleError> {
    let lock = match db.backend() {
        Backend::Sqlite => "",
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
    };
    let due = "((state IN ('queued', 'deferred') AND not_before <= $3) OR (state = 'sending' AND lease_until < $3))";
    let sql = format!(
        "UPDATE lifecycle_messages SET state = 'sending', lease_owner = $1, lease_until = $2
         WHERE id IN (SELECT id FROM lifecycle_messages WHERE {due} ORDER BY not_before, id LIMIT $4 {lock})
           AND {due}
         RETURNING id, customer_id, category, subject, body_text, body_html, message_id, stale_at, attempts, attempt_at,
                   template, source, recipient"
    );
    let rows =
        sqlx::query(&sql).bind(owner).bind(now + LEASE_MICROS).bind(now).bind(limit).fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| {
            Ok(Claimed {
                id: r.try_get(0)?,
                customer_id: r.try_get(1)?,
                category: r.try_get(2)?,
                subject: r.try_get(3)?,
                body_text: r.try_get(4)?,
                body_html: r.try_get(5)?,
                message_id: r.try_get(6)?,
                stale_at: r.try_get(7)?,
                attempts: r.try_get(8)?,
                attempt_at: r.try_get(9)?,
                template: r.try_get(10)?,
                source: r.try_get(11)?,
                recipient: r.try_get(12)?,
            })
        })
        .collect()
}

/// Whether a message in `state` may still be sent, by the worker (queued, deferred, being
/// sent) or after an operator's requeue ([`REQUEUEABLE`]): its stored bodies keep their
/// one-time links only while it may.
fn may_be_sent(state: &str) -> bool {
    matches!(state, "queued" | "deferred" | "sending") || REQUEUEABLE.contains(&state)
}

/// Ends a claimed message in `state` (fenced by the lease: false when it was lost). A
/// final `sent`, `failed` or `unknown` emits `lifecycle.message_sent` / `_failed` in the
/// same transaction. A message that will never be sent again (sent, stale, suppressed)
/// keeps its bodies without their one-time link tokens: the recipient has the link, and a
/// copy of the database (a backup, a restore elsewhere) must not hold a way to set the
/// customer's password.
async fn finish(
    db: &Db,
    m: &Claimed,
    owner: &str,
    state: &str,
    error: Option<&str>,
    not_before: Option<i64>,
    now: i64,
) -> Result<bool, LifecycleError> {
    let (text, html) = if may_be_sent(state) {
        (None, None)
    } else {
        (Some(without_link_tokens(&m.body_text)), Some(without_link_tokens(&m.body_html)))
    };
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "UPDATE lifecycle_messages SET state = $1, last_error = COALESCE($2, last_error),
             not_before = COALESCE($3, not_before),
             sent_at = CASE WHEN $1 = 'sent' THEN $4 ELSE sent_at END,
             attempt_at = CASE WHEN $1 IN ('queued', 'deferred') THEN NULL ELSE attempt_at END,
             lease_owner = NULL, lease_until = NULL,
             body_text = COALESCE($7, body_text), body_html = COALESCE($8, body_html)
         WHERE id = $5 AND state = 'sending' AND lease_owner = $6",
    )
    .bind(state)
    .bind(error)
    .bind(not_before)
    .bind(now)
    .bind(&m.id)
    .bind(owner)
    .bind(text.filter(|t| *t != m.body_text))
    .bind(html.filter(|h| *h != m.body_html))
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    emit_outcome(&mut tx, db.backend(), m, state, error, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// The event of a message's final state (none for the others).
async fn emit_outcome(
    conn: &mut AnyConnection,
    backend: Backend,
    m: &Claimed,
    state: &str,
    error: Option<&str>,
    now: i64,
) -> Result<(), LifecycleError> {
    use j1msky_core::events::{LifecycleMessageFailed, LifecycleMessageSent};
    let customer = m.customer_id.as_deref();
    match state {
        "sent" => {
            let p = LifecycleMessageSent {
                message: m.id.clone(),
                template: m.template.clone(),
                category: m.category.clone(),
                source: m.source.clone(),
            };
            j1msky_db::outbox::emit_typed(conn, backend, p, customer, now).await?;
        }
        "failed" | "unknown" => {
            let p = LifecycleMessageFailed {
                message: m.id.clone(),
                template: m.template.clone(),
                state: state.to_string(),
                error: error.unwrap_or_default().to_string(),
            };
            j1msky_db::outbox::emit_typed(conn, backend, p, customer, now).await?;
        }
        _ => {}
    }
    Ok(())
}

/// The address a customer's mail goes to: the contact email, else the first owner's.
pub async fn recipient(db: &Db, customer_id: &str) -> Result<(Option<String>, String), LifecycleError> {
    let customer = j1msky_accounts::customers::get(db, customer_id).await?;
    if let Some(email) = customer.contact_email.filter(|e| !e.trim().is_empty()) {
        return Ok((Some(email), customer.time_zone));
    }
    let owner = j1msky_accounts::users::list(db, Some(customer_id))
        .await?
        .into_iter()
        .find(|u| u.role == j1msky_core::vocab::UserRole::Owner && u.disabled_at.is_none())
        .map(|u| u.email);
    Ok((owner, customer.time_zone))
}

async fn send_one(
    ctx: &Ctx,
    owner: &str,
    m: Claimed,
    key: &str,
    now: i64,
    zones: &HashMap<String, (Option<String>, String)>,
) -> Result<&'static str, LifecycleError> {
    let db = &ctx.db;
    if m.attempt_at.is_some() {
        // A sender died between handing the message over and recording the outcome.
        finish(db, &m, owner, "unknown", Some("lease expired after a send attempt: not resent"), None, now).await?;
        return Ok("unknown");
    }
    if m.stale_at.is_some_and(|s| s <= now) {
        finish(db, &m, owner, "stale", Some("past its staleness cut-off"), None, now).await?;
        return Ok("stale");
    }
    let category = Category::parse(&m.category).unwrap_or(Category::Marketing);
    // An operator's message (no customer) is transactional and addressed when queued; a
    // customer's message may name its recipient (a member's invite), else goes to the
    // customer's contact.
    let (to, customer) = match (&m.customer_id, &m.recipient) {
        (None, Some(to)) => (to.clone(), None),
        (None, None) => {
            finish(db, &m, owner, "failed", Some("an operator message without an address"), None, now).await?;
            return Ok("failed");
        }
        (Some(customer_id), recipient) => {
            let Some((to, zone)) = zones.get(customer_id) else {
                finish(db, &m, owner, "failed", Some("customer not found"), None, now).await?;
                return Ok("failed");
            };
            let Some(to) = recipient.clone().or_else(|| to.clone()) else {
                finish(db, &m, owner, "failed", Some("the customer has no contact or owner email"), None, now).await?;
                return Ok("failed");
            };
            (to, Some((customer_id.as_str(), zone)))
        }
    };
    if is_suppressed(db, &to).await.unwrap_or(false) {
        finish(db, &m, owner, "suppressed", Some("address on the suppression list"), None, now).await?;
        return Ok("suppressed");
    }
    if let Some((customer_id, zone)) = customer {
        if !consents(db, customer_id, category).await? {
            finish(db, &m, owner, "suppressed", Some("no consent for this category"), None, now).await?;
            return Ok("suppressed");
        }
        if category != Category::Transactional {
            let tz = customer_zone(ctx, zone);
            if let Some((until, why)) = hold_until(ctx, customer_id, tz, now).await? {
                finish(db, &m, owner, "deferred", Some(&why), Some(until), now).await?;
                return Ok("deferred");
            }
        }
    }
    let delivery = &ctx.catalogue.lifecycle.delivery;
    let unsubscribe = customer.filter(|_| category != Category::Transactional).map(|(customer_id, _)| {
        let token = token_with(key, customer_id, category);
        let url = format!("{}/u/{}", ctx.base_url.trim_end_matches('/'), token);
        let mailto = format!("mailto:{}?subject=unsubscribe%20{}", delivery.unsubscribe_mailto, token);
        (url, mailto)
    });
    let raw = match compose(
        delivery,
        &to,
        &m.message_id,
        &m.subject,
        &m.body_text,
        &m.body_html,
        unsubscribe.as_ref().map(|(u, m)| (u.as_str(), m.as_str())),
        now,
    ) {
        Ok(raw) => raw,
        Err(e) => {
            finish(db, &m, owner, "failed", Some(&e.to_string()), None, now).await?;
            return Ok("failed");
        }
    };
    // Recorded before the transport is called: from here on a crash means `unknown`.
    let marked = sqlx::query(
        "UPDATE lifecycle_messages SET attempt_at = $1, attempts = attempts + 1, to_addr = $2
         WHERE id = $3 AND state = 'sending' AND lease_owner = $4",
    )
    .bind(now)
    .bind(&to)
    .bind(&m.id)
    .bind(owner)
    .execute(db.pool())
    .await?;
    if marked.rows_affected() != 1 {
        return Ok("lost");
    }
    let out = Outgoing { from: delivery.from_address.clone(), to: to.clone(), message_id: m.message_id.clone(), raw };
    match ctx.transport.send(&out).await {
        Ok(()) => {
            finish(db, &m, owner, "sent", None, None, now).await?;
            Ok("sent")
        }
        Err(SendError::Refused(e)) if m.attempts + 1 < MAX_ATTEMPTS => {
            let backoff = 60 * SECOND * (1 << m.attempts.clamp(0, 10));
            finish(db, &m, owner, "queued", Some(&e), Some(now + backoff), now).await?;
            Ok("retried")
        }
        Err(SendError::Refused(e)) => {
            finish(db, &m, owner, "failed", Some(&e), None, now).await?;
            Ok("failed")
        }
        Err(SendError::Rejected { hard_bounce, message }) => {
            if hard_bounce {
                if let Ok(key) = email_key(&to) {
                    let mut conn = db.pool().acquire().await?;
                    insert_suppression(
                        &mut conn,
                        &key,
                        m.customer_id.as_deref(),
                        SuppressReason::HardBounce,
                        &message,
                        now,
                    )
                    .await?;
                }
            }
            finish(db, &m, owner, "failed", Some(&message), None, now).await?;
            Ok("failed")
        }
        Err(SendError::Unknown(e)) => {
            finish(db, &m, owner, "unknown", Some(&e), None, now).await?;
            Ok("unknown")
        }
    }
}

/// One pass: claims up to `limit` due messages for `owner` and settles each (sent,
/// deferred, suppressed, stale, retried, failed or unknown), sending up to the
/// transport's parallelism at once.
pub async fn send_due_once(ctx: &Ctx, owner: &str, now: i64, limit: i64) -> Result<Pass, LifecycleError> {
    let claimed = claim(&ctx.db, owner, now, limit).await?;
    let mut pass = Pass { claimed: claimed.len(), ..Pass::default() };
    if claimed.is_empty() {
        return Ok(pass);
    }
    let key = signing_key(&ctx.db, now).await?;
    let mut zones = HashMap::new();
    for m in &claimed {
        let Some(customer_id) = &m.customer_id else { continue };
        if !zones.contains_key(customer_id) {
            match recipient(&ctx.db, customer_id).await {
                Ok(r) => {
                    zones.insert(customer_id.clone(), r);
                }
                Err(LifecycleError::Accounts(j1msky_accounts::AccountsError::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let parallel = ctx.transport.parallelism().max(1);
    let mut results =
        futures::stream::iter(claimed).map(|m| send_one(ctx, owner, m, &key, now, &zones)).buffer_unordered(parallel);
    let mut first_error = None;
    while let Some(r) = results.next().await {
        match r {
            Ok("sent") => pass.sent += 1,
            Ok("deferred") => pass.deferred += 1,
            Ok("suppressed") => pass.suppressed += 1,
            Ok("stale") => pass.stale += 1,
            Ok("retried") => pass.retried += 1,
            Ok("failed") => pass.failed += 1,
            Ok("unknown") => pass.unknown += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "lifecycle mail: a message could not be settled");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if pass.sent == 0 => Err(e),
        _ => Ok(pass),
    }
}

/// Sends due messages until `stop` turns true (the `reactions` role runs it): a pass
/// every second, at once again while passes come back full.
pub async fn run_sender(ctx: crate::Ctx, mut stop: tokio::sync::watch::Receiver<bool>) {
    let owner = format!("mail-{}", j1msky_core::ids::new_id("snd"));
    let batch = (ctx.transport.parallelism() * 16).clamp(16, 512) as i64;
    while !*stop.borrow() {
        let now = ctx.clock.now_micros();
        let full = match send_due_once(&ctx, &owner, now, batch).await {
            Ok(pass) => pass.claimed as i64 >= batch,
            Err(e) => {
                tracing::warn!(error = %e, "lifecycle mail: sender pass failed");
                false
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            r = stop.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod link_token_tests {
    use super::without_link_tokens;

    #[test]
    fn one_time_link_tokens_are_hidden_in_text_and_html_and_nothing_else_is() {
        let token = "XRkNXx5qVUTmXq-IYsEXC5gHuq6Sl1hKJh58Pk7sp8U";
        let text = format!("Reset: https://a.test/reset/{token}\nSurvey: https://a.test/s/{token}.");
        let html = format!("<a href=\"https:&#x2f;&#x2f;a.test&#x2f;set-password&#x2f;{token}\">set</a>");
        for body in [text, html] {
            let shown = without_link_tokens(&body);
            assert!(!shown.contains(token), "{shown}");
            assert!(shown.contains("[one-time token hidden]"), "{shown}");
        }
        let plain = "See https://docs.test/s/ab and /reset/ for help.";
        assert_eq!(without_link_tokens(plain), plain, "short segments are not tokens");
    }
}
