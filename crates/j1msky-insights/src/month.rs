//! A calendar month in the business's time zone (`business.time_zone`): the unit every
//! number on the board is counted in.

use std::fmt;

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;

use crate::InsightsError;

/// `YYYY-MM`, ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    /// 1..=12
    pub month: u32,
}

impl Month {
    /// Parses `YYYY-MM`; the error names the field and the expected form.
    pub fn parse(text: &str) -> Result<Month, InsightsError> {
        let bad = || InsightsError::invalid("month", format!("`{text}` is not a month: expected YYYY-MM, e.g. 2026-11"));
        let (y, m) = text.trim().split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    /// The month containing the instant `at` (unix micros) in `tz`.
    pub fn of(tz: Tz, at: i64) -> Month {
        let date = chrono::DateTime::from_timestamp_micros(at)
            .map(|utc| utc.with_timezone(&tz).date_naive())
            .unwrap_or_default();
        Month { year: date.year(), month: date.month() }
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month { year: self.year + 1, month: 1 }
        } else {
            Month { year: self.year, month: self.month + 1 }
        }
    }

    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month { year: self.year - 1, month: 12 }
        } else {
            Month { year: self.year, month: self.month - 1 }
        }
    }

    /// `[start, end)` in unix micros: local midnight of the 1st to local midnight of the
    /// next month's 1st, in `tz`.
    pub fn bounds(self, tz: Tz) -> (i64, i64) {
        (first_instant(tz, self), first_instant(tz, self.next()))
    }

    /// The months from `self` to `last`, both included (empty when `last` is earlier).
    pub fn through(self, last: Month) -> Vec<Month> {
        let mut out = Vec::new();
        let mut m = self;
        while m <= last {
            out.push(m);
            m = m.next();
        }
        out
    }
}

fn first_instant(tz: Tz, m: Month) -> i64 {
    let date = NaiveDate::from_ymd_opt(m.year, m.month, 1).unwrap_or_default();
    let naive = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    match tz.from_local_datetime(&naive).earliest() {
        Some(dt) => dt.timestamp_micros(),
        None => tz.from_utc_datetime(&naive).timestamp_micros(),
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl serde::Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Month::parse("2026-03").unwrap(), Month { year: 2026, month: 3 });
        for bad in ["2026-13", "2026-3", "26-03", "march", "2026-00", ""] {
            let e = Month::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("month:"), "{bad}: {e}");
        }
    }

    #[test]
    fn bounds_follow_the_zone() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let (start, end) = Month { year: 2026, month: 3 }.bounds(berlin);
        // 2026-03-01 00:00 CET = 2026-02-28 23:00 UTC; April 1st is in CEST (UTC+2).
        assert_eq!(start, 1_772_319_600_000_000);
        assert_eq!(end, 1_774_994_400_000_000);
        assert_eq!(Month::of(berlin, start), Month { year: 2026, month: 3 });
        assert_eq!(Month::of(berlin, start - 1), Month { year: 2026, month: 2 });
        assert_eq!(Month { year: 2026, month: 12 }.next().to_string(), "2027-01");
        assert_eq!(Month { year: 2026, month: 1 }.prev().to_string(), "2025-12");
    }
}
