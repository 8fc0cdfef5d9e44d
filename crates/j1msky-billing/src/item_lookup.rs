//! Finding at Stripe the invoice items we made before, so a charge is never sent twice.
//!
//! An invoice item is posted with an `Idempotency-Key` derived from the work it charges
//! (the task, or the customer's day of API calls), so a retried POST returns the first
//! item — but only for 24 hours: Stripe forgets keys after that, and a later replay
//! makes a second item. That happens when a charge stays unreported past the window (a
//! POST whose answer was lost, then a long outage), or when a backup is restored and
//! the marks written after it are gone (the charge comes back unreported, or is written
//! again when its task runs again).
//!
//! The rule: a charge whose work began more than [`LOOKUP_AFTER`] ago (task queued, or
//! any day of API calls: its charge is written once the day is over) may have been sent
//! before the window, in this database or in one it was restored over, so its item is
//! first looked up at Stripe by its metadata and, when found, adopted (marked reported
//! with that item's id). No POST for the work can predate the work, so a charge whose
//! work began within [`LOOKUP_AFTER`] is inside the window whatever happened, and keeps
//! the fast path: one POST.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::{BillingError, Stripe};

/// Microseconds after which the work's first POST may be outside Stripe's 24-hour
/// idempotency window: 23 hours, an hour short, for the request's own time and clocks.
pub const LOOKUP_AFTER: i64 = 23 * 3_600 * 1_000_000;

/// Seconds of slack between Stripe's clock and ours when listing items by creation time.
const CLOCK_MARGIN_SECS: i64 = 3_600;

/// What a charge bills, as its invoice item's metadata names it: one item per subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    Task(String),
    ApiDay(String),
}

impl Subject {
    /// The subject an invoice item's metadata names, if it is one of ours.
    fn of_item(item: &Value) -> Option<Subject> {
        let meta = &item["metadata"];
        match (meta["j1msky_task"].as_str(), meta["j1msky_api_day"].as_str()) {
            (Some(task), _) => Some(Subject::Task(task.to_string())),
            (None, Some(day)) => Some(Subject::ApiDay(day.to_string())),
            (None, None) => None,
        }
    }
}

/// Whether a charge must be looked up at Stripe before it is posted.
pub(crate) fn needs_lookup(subject: &Subject, work_began_at: i64, now: i64) -> bool {
    matches!(subject, Subject::ApiDay(_)) || work_began_at <= now - LOOKUP_AFTER
}

/// The earliest second (Stripe's time) an item for this work can have been made.
pub(crate) fn earliest_item_secs(subject: &Subject, work_began_at: i64) -> i64 {
    let began = crate::secs(work_began_at);
    let day_start = match subject {
        // The day in the business time zone: its start is at most 14 hours before UTC's.
        Subject::ApiDay(day) => chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp() - 14 * 3_600),
        Subject::Task(_) => None,
    };
    day_start.map_or(began, |d| d.min(began)) - CLOCK_MARGIN_SECS
}

/// The customer's invoice items made at or after `since` (Stripe seconds) that name one of
/// our subjects, read page by page (newest first, 100 a page) until Stripe says there
/// are no more. Where Stripe already holds two items for one subject, the oldest wins.
pub(crate) async fn items_since(
    stripe: &Stripe,
    stripe_customer: &str,
    since: i64,
) -> Result<HashMap<Subject, Value>, BillingError> {
    let mut found = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = json!({"customer": stripe_customer, "created": {"gte": since}, "limit": 100});
        if let Some(last) = &after {
            query["starting_after"] = json!(last);
        }
        let page = stripe.get("invoiceitems", &query).await?;
        let data =
            page["data"].as_array().ok_or_else(|| BillingError::Malformed("invoice item list without data".into()))?;
        for item in data {
            if let Some(subject) = Subject::of_item(item) {
                found.insert(subject, item.clone());
            }
        }
        after = data.last().and_then(|i| i["id"].as_str()).map(String::from);
        if page["has_more"] != true || after.is_none() {
            return Ok(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_work_older_than_the_window_and_api_days_are_looked_up() {
        let now = 10 * 86_400 * 1_000_000;
        let task = Subject::Task("tsk_1".into());
        assert!(!needs_lookup(&task, now - LOOKUP_AFTER + 1, now), "recent work: one POST");
        assert!(needs_lookup(&task, now - LOOKUP_AFTER, now));
        assert!(needs_lookup(&Subject::ApiDay("2026-11-30".into()), now, now), "a day's charge comes after the day");
    }

    #[test]
    fn an_api_days_items_are_listed_from_before_the_day_began_anywhere() {
        let day = Subject::ApiDay("2026-11-30".into());
        let midnight_utc = 1_795_996_800; // 2026-11-30T00:00:00Z
        let late = (midnight_utc + 3 * 86_400) * 1_000_000;
        assert_eq!(earliest_item_secs(&day, late), midnight_utc - 14 * 3_600 - CLOCK_MARGIN_SECS);
        let task = Subject::Task("tsk_1".into());
        assert_eq!(earliest_item_secs(&task, late), midnight_utc + 3 * 86_400 - CLOCK_MARGIN_SECS);
    }

    #[test]
    fn items_name_their_subject_by_metadata() {
        assert_eq!(Subject::of_item(&json!({"metadata": {"j1msky_task": "t"}})), Some(Subject::Task("t".into())));
        assert_eq!(
            Subject::of_item(&json!({"metadata": {"j1msky_api_day": "2026-11-30", "j1msky_usage_charge": "u"}})),
            Some(Subject::ApiDay("2026-11-30".into()))
        );
        assert_eq!(Subject::of_item(&json!({"metadata": {}})), None);
    }
}
