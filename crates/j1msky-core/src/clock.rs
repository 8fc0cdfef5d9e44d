//! Injected time: production reads the system clock, tests move a manual one.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current UTC instant in unix microseconds.
pub trait Clock: Send + Sync + 'static {
    /// Now, as microseconds since the unix epoch (UTC).
    fn now_micros(&self) -> i64;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place allowed to read the wall clock: everything else asks a Clock.
    #[allow(clippy::disallowed_methods)]
    fn now_micros(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// Starts at the given unix-microsecond instant.
    pub fn new(start_micros: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start_micros)))
    }

    /// Moves time forward by `micros`.
    pub fn advance_micros(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }

    /// Moves time forward by whole seconds.
    pub fn advance_secs(&self, secs: i64) {
        self.advance_micros(secs * 1_000_000);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Microseconds in one second.
pub const SECOND: i64 = 1_000_000;
/// Microseconds in one day.
pub const DAY: i64 = 86_400 * SECOND;

/// Formats unix microseconds as RFC 3339 UTC to the second (`2026-11-24T14:00:00Z`).
pub fn format_utc(micros: i64) -> String {
    let secs = micros.div_euclid(SECOND);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm; a date crate would be a whole dependency for one line).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_instants() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_795_003_200 * SECOND), "2026-11-18T12:00:00Z");
        assert_eq!(format_utc(951_782_400 * SECOND + 59 * SECOND), "2000-02-29T00:00:59Z");
        assert_eq!(format_utc(-SECOND), "1969-12-31T23:59:59Z");
    }
}
