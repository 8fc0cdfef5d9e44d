//! The hourly backup as a durable timer: one process takes each hour's backup (the
//! timer's lease), a restart neither doubles nor drops one, and an hour missed while
//! nothing ran is skipped rather than caught up (the next backup covers it).

use std::path::PathBuf;
use std::sync::Arc;

use j1msky_core::Clock;
use j1msky_db::timers::{self, Handlers, Occurrence, Recurrence};
use j1msky_db::Db;

use super::{records, retention, take, CopyTo, Kind, Options, Quiet, Retention};

/// The timer kind of the hourly backup (keyed by its hour, `2026-12-01T10`).
pub const TIMER: &str = "ops.backup";

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

/// Where and how the hourly backups go.
#[derive(Clone)]
pub struct Schedule {
    pub db: Db,
    /// The database's URL (`pg_dump` connects with it).
    pub url: String,
    pub clock: Arc<dyn Clock>,
    pub dir: PathBuf,
    pub copy_to: Option<CopyTo>,
    pub keep: Retention,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("dir", &self.dir)
            .field("copy_to", &self.copy_to)
            .field("keep", &self.keep)
            .finish()
    }
}

fn hour_at(start: i64) -> Occurrence {
    let key = chrono::DateTime::from_timestamp_micros(start).unwrap_or_default().format("%Y-%m-%dT%H").to_string();
    Occurrence { key, run_at: start }
}

fn this_hour(t: i64) -> Occurrence {
    hour_at(t.div_euclid(HOUR) * HOUR)
}

fn next_hour(_due: i64, now: i64) -> Occurrence {
    hour_at(now.div_euclid(HOUR) * HOUR + HOUR)
}

/// The timer's handler: the hour's backup (the day's first is kept as `daily`), then
/// retention. A failure was recorded with its alert by `take`; the timer retries it.
pub fn handlers(s: &Schedule) -> Handlers {
    let every_hour = Recurrence { current: this_hour, next: next_hour, max_attempts: 3 };
    let s = s.clone();
    Handlers::new().recurring(TIMER, every_hour, move |fired| {
        let s = s.clone();
        async move { hourly(&s, fired.now).await.map_err(|e| e.to_string()) }
    })
}

/// One scheduled backup and the pruning after it.
pub async fn hourly(s: &Schedule, now: i64) -> Result<(), super::BackupError> {
    let day = now.div_euclid(DAY) * DAY;
    let kind = if records::daily_between(&s.db, day, day + DAY).await? { Kind::Hourly } else { Kind::Daily };
    let opts = Options { dir: s.dir.clone(), copy_to: s.copy_to.clone(), kind };
    let taken = take(&s.db, &s.url, &opts, s.clock.as_ref(), &Quiet).await;
    if let Ok(b) = &taken {
        tracing::info!(backup = %b.id, kind = kind.name(), size = b.size_bytes, "backup taken");
    }
    let s3 = s.copy_to.as_ref().map(CopyTo::s3_settings).unwrap_or_default();
    // Pruned after a failed attempt too: a copy's store down leaves a local file each time.
    // Pruning is not retried with the hour (that would take its backup again): the next
    // hour prunes what this one could not.
    if let Err(e) = retention::prune(&s.db, s.keep, &s3).await {
        tracing::error!(error = %e, "pruning old backups; the next hour tries again");
    }
    // Each hour's timer row is done for good once past; two days of them are kept.
    timers::prune_done(&s.db, TIMER, now - 2 * DAY).await?;
    // A failure was recorded with its alert by `take`; the timer retries the hour.
    taken?;
    Ok(())
}

/// Schedules this hour's backup and fires the hourly timer until `stop` (the caller
/// tracks the future: the runtime's `billing` role).
pub async fn run_schedule(s: Schedule, stop: tokio::sync::watch::Receiver<bool>) {
    let handlers = handlers(&s).poll_every(std::time::Duration::from_secs(5));
    if let Err(e) = handlers.schedule_recurring(&s.db, s.clock.now_micros()).await {
        tracing::error!(error = %e, "scheduling the hourly backup; it starts with the next restart");
    }
    timers::run(s.db.clone(), handlers, s.clock.clone(), stop).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn hours_follow_each_other() {
        // 2026-11-25T00:00Z.
        let t = 1_795_564_800_000_000;
        assert_eq!(super::this_hour(t + 5).key, "2026-11-25T00");
        assert_eq!(super::next_hour(t, t + super::HOUR * 3 + 7).key, "2026-11-25T04");
    }
}
