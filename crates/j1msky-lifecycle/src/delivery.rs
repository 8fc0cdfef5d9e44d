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
/// (source, step, occurrence) was already queued.
pub async fn enqueue(
    _conn: &mut AnyConnection,
    _backend: Backend,
    _msg: &NewMessage<'_>,
    _now: i64,
) -> Result<Option<String>, LifecycleError> {
    Err(LifecycleError::Conflict("delivery::enqueue is not built yet".into()))
}

/// Sends due messages until `stop` turns true (the `reactions` role runs it).
pub async fn run_sender(_ctx: crate::Ctx, mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
