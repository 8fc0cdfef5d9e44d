//! Calendar windows (the clock hour, the business day, a month) in a time zone, as UTC
//! microseconds: every domain that counts per hour, day or month uses these.

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;

fn local_midnight(tz: Tz, date: NaiveDate) -> i64 {
    let naive = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    // A zone whose midnight is skipped by a DST change starts the day at the first valid instant.
    match tz.from_local_datetime(&naive).earliest() {
        Some(dt) => dt.timestamp_micros(),
        None => tz.from_utc_datetime(&naive).timestamp_micros(),
    }
}

fn local_date(tz: Tz, now: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_micros(now).map(|utc| utc.with_timezone(&tz).date_naive()).unwrap_or_default()
}

/// The clock hour containing `now` (the same in every zone we accept: whole-hour offsets).
pub fn hour(now: i64) -> (i64, i64) {
    let hour = 3600 * crate::clock::SECOND;
    let start = now - now.rem_euclid(hour);
    (start, start + hour)
}

/// The day containing `now` in `tz`: `[start, end)`.
pub fn day(tz: Tz, now: i64) -> (i64, i64) {
    let date = local_date(tz, now);
    let next = date.succ_opt().unwrap_or(date);
    (local_midnight(tz, date), local_midnight(tz, next))
}

/// The calendar month containing `now` in `tz`: `[start, end)`.
pub fn month(tz: Tz, now: i64) -> (i64, i64) {
    let date = local_date(tz, now);
    let first = date.with_day(1).unwrap_or(date);
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .unwrap_or(first);
    (local_midnight(tz, first), local_midnight(tz, next))
}

/// A `YYYY-MM-DD` day in `tz` as `[start, end)`.
pub fn parse_day(tz: Tz, text: &str) -> Option<(i64, i64)> {
    let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
    Some((local_midnight(tz, date), local_midnight(tz, date.succ_opt()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_follow_the_zone() {
        // 2026-03-29 is the night Europe/Berlin moves to summer time: a 23-hour day.
        let (start, end) = parse_day(chrono_tz::Europe::Berlin, "2026-03-29").expect("day");
        assert_eq!(end - start, 23 * 3_600_000_000);
        let (s2, e2) = day(chrono_tz::Europe::Berlin, start + 3_600_000_000);
        assert_eq!((s2, e2), (start, end));
        let (m_start, m_end) = month(chrono_tz::UTC, start);
        assert_eq!(m_end - m_start, 31 * 86_400_000_000);
    }
}
