//! The morning review: errors, queue depth and waits, rate-limit hits, alerts, failed
//! payments and staff to-dos on one list, worst first. (Being built: stub.)

use serde::Serialize;

use crate::{Ctx, InsightsError};

/// How bad one item is; the list is sorted worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

/// One line of the morning review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub severity: Severity,
    /// errors, queue, rate_limits, alerts, payments, todos
    pub area: String,
    pub title: String,
    pub detail: String,
    /// Where the operator acts on it (`/admin/queue`, …).
    pub link: String,
}

/// The review as of now (the last 24 hours for counts of what happened).
pub async fn review(_ctx: &Ctx) -> Result<Vec<Item>, InsightsError> {
    Ok(Vec::new())
}
