//! `lifecycle.engagement`: surveys, staff to-dos, the newsletter and office hours.

use chrono::{Datelike, NaiveTime, TimeZone, Weekday};
use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, ConfigIssue};

/// Surveys, to-dos, newsletter and office hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engagement {
    /// Recipients queued per newsletter batch (one timer firing).
    #[serde(default = "default_batch")]
    pub newsletter_batch: u32,
    /// Days an NPS link stays answerable.
    #[serde(default = "default_nps_days")]
    pub nps_valid_days: u32,
    /// Days until a to-do opened by hand is due.
    #[serde(default = "default_todo_days")]
    pub todo_due_days: u32,
    /// The weekly office-hours slot, announced in newsletters.
    #[serde(default)]
    pub office_hours: Option<OfficeHours>,
}

fn default_batch() -> u32 {
    200
}
fn default_nps_days() -> u32 {
    30
}
fn default_todo_days() -> u32 {
    2
}

impl Default for Engagement {
    fn default() -> Self {
        Engagement {
            newsletter_batch: default_batch(),
            nps_valid_days: default_nps_days(),
            todo_due_days: default_todo_days(),
            office_hours: None,
        }
    }
}

/// A weekly slot in the business time zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfficeHours {
    /// `mon` … `sun`.
    pub weekday: String,
    /// Local start time, `HH:MM`.
    pub start: String,
    pub minutes: u32,
    /// Where customers join (a video-call link).
    pub join_url: String,
}

impl OfficeHours {
    fn weekday(&self) -> Option<Weekday> {
        match self.weekday.as_str() {
            "mon" => Some(Weekday::Mon),
            "tue" => Some(Weekday::Tue),
            "wed" => Some(Weekday::Wed),
            "thu" => Some(Weekday::Thu),
            "fri" => Some(Weekday::Fri),
            "sat" => Some(Weekday::Sat),
            "sun" => Some(Weekday::Sun),
            _ => None,
        }
    }

    fn start(&self) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(&self.start, "%H:%M").ok()
    }

    /// The next slot that has not ended at `now` (unix micros), as unix micros of its
    /// start; `None` when the slot is malformed (validation refuses that catalogue).
    pub fn next_start(&self, tz: chrono_tz::Tz, now: i64) -> Option<i64> {
        let (weekday, start) = (self.weekday()?, self.start()?);
        let today = tz.timestamp_micros(now).single()?.date_naive();
        (0..15).find_map(|d| {
            let day = today.checked_add_days(chrono::Days::new(d))?;
            if day.weekday() != weekday {
                return None;
            }
            // A slot in a DST gap does not exist that week; an ambiguous one takes the first.
            let at = tz.from_local_datetime(&day.and_time(start)).earliest()?.timestamp_micros();
            (at + i64::from(self.minutes) * 60_000_000 > now).then_some(at)
        })
    }
}

pub(crate) fn validate(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    let e = &c.lifecycle.engagement;
    let path = "lifecycle.engagement";
    if e.newsletter_batch == 0 || e.newsletter_batch > 10_000 {
        out.push(ConfigIssue::new(format!("{path}.newsletter_batch"), "must be between 1 and 10000"));
    }
    if e.nps_valid_days == 0 {
        out.push(ConfigIssue::new(format!("{path}.nps_valid_days"), "must be at least 1 day"));
    }
    if let Some(oh) = &e.office_hours {
        if oh.weekday().is_none() {
            out.push(ConfigIssue::new(
                format!("{path}.office_hours.weekday"),
                format!("`{}` is not one of mon, tue, wed, thu, fri, sat, sun", oh.weekday),
            ));
        }
        if oh.start().is_none() {
            out.push(ConfigIssue::new(
                format!("{path}.office_hours.start"),
                format!("`{}` is not a local time HH:MM", oh.start),
            ));
        }
        if oh.minutes == 0 || oh.minutes > 24 * 60 {
            out.push(ConfigIssue::new(format!("{path}.office_hours.minutes"), "must be between 1 and 1440"));
        }
        if !(oh.join_url.starts_with("https://") || oh.join_url.starts_with("http://")) {
            out.push(ConfigIssue::new(format!("{path}.office_hours.join_url"), "must be an http(s) URL"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_office_hours_slot_is_in_the_business_zone() {
        let oh =
            OfficeHours { weekday: "thu".into(), start: "16:00".into(), minutes: 60, join_url: "https://x".into() };
        let tz: chrono_tz::Tz = "Europe/Berlin".parse().map_err(|_| ()).unwrap_or(chrono_tz::UTC);
        // Monday 2026-03-02 12:00 UTC → Thursday 2026-03-05 16:00 CET = 15:00 UTC.
        let now = chrono::Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).single().map(|t| t.timestamp_micros());
        let want = chrono::Utc.with_ymd_and_hms(2026, 3, 5, 15, 0, 0).single().map(|t| t.timestamp_micros());
        assert_eq!(now.and_then(|n| oh.next_start(tz, n)), want);
        // During the slot it is still "next"; after it, the following week.
        let during = want.map(|w| w + 30 * 60_000_000);
        assert_eq!(during.and_then(|n| oh.next_start(tz, n)), want);
        let after = want.map(|w| w + 61 * 60_000_000);
        assert_eq!(after.and_then(|n| oh.next_start(tz, n)), want.map(|w| w + 7 * 86_400_000_000));
    }
}
