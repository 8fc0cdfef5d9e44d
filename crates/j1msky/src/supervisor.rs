//! Running under a supervisor (systemd, a container runtime): readiness and stopping
//! notices, a watchdog that is pinged only while the process is healthy, and an exit
//! with [`EXIT_UNHEALTHY`] when it can no longer do its work, so the supervisor
//! restarts it. The notices are systemd's `sd_notify` protocol; without
//! `NOTIFY_SOCKET` in the environment they are no-ops.

use std::time::Duration;

use clap::Args;
use j1msky_runtime::Runtime;
use sd_notify::NotifyState;
use tokio::time::Instant;

/// Exit code of a process that stopped because it was no longer healthy.
pub const EXIT_UNHEALTHY: u8 = 3;

/// How the process watches itself.
#[derive(Debug, Clone, Args)]
pub struct SupervisionArgs {
    /// How often the process checks itself (a database round trip, its background
    /// loops), in milliseconds. Under a systemd watchdog it checks at least twice per
    /// `WatchdogSec`.
    #[arg(long, env = "J1MSKY_HEALTH_EVERY_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(20..=600_000))]
    pub health_every_ms: u64,
    /// Seconds the database may stay unreachable before the process exits non-zero
    /// (its supervisor then restarts it).
    #[arg(long, env = "J1MSKY_DB_GRACE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub db_grace_secs: u64,
}

impl Default for SupervisionArgs {
    fn default() -> Self {
        SupervisionArgs { health_every_ms: 5_000, db_grace_secs: 30 }
    }
}

/// Why a process gave up.
#[derive(Debug)]
pub struct Unhealthy(pub String);

/// Tells the supervisor the process is serving (migrated, listening, loops started).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the supervisor the process is shutting down (so a slow shutdown is not
/// taken for a hang).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Checks the process every period and pings the watchdog after each healthy check;
/// returns only when the process should stop: a background loop ended by itself, or
/// the database stayed unreachable for the grace period. A hung process stops
/// pinging because the checks run on the same executor as the work.
pub async fn watch(rt: &Runtime, args: &SupervisionArgs) -> Unhealthy {
    let watchdog = sd_notify::watchdog_enabled();
    let mut every = Duration::from_millis(args.health_every_ms);
    if let Some(w) = watchdog {
        // Half the watchdog's period leaves room for one slow check.
        every = every.min(w / 2).max(Duration::from_millis(10));
    }
    let grace = Duration::from_secs(args.db_grace_secs);
    // A round trip slower than this counts as a failure (a hung database or pool).
    let ping_timeout = every.max(Duration::from_secs(2));
    let mut failing_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Some(name) = rt.ended_early() {
            return Unhealthy(format!("the background loop `{name}` stopped by itself"));
        }
        let failure = match tokio::time::timeout(ping_timeout, rt.db().ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} ms", ping_timeout.as_millis())),
        };
        match failure {
            None => {
                if failing_since.take().is_some() {
                    tracing::info!("the database answers again");
                    send(&[NotifyState::Status("healthy")]);
                }
                if watchdog.is_some() {
                    send(&[NotifyState::Watchdog]);
                }
            }
            Some(why) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                tracing::warn!(error = %why, "database unreachable; the watchdog is not pinged");
                send(&[NotifyState::Status(&format!("database unreachable: {why}"))]);
                if since.elapsed() >= grace {
                    return Unhealthy(format!("the database has been unreachable for {} s: {why}", grace.as_secs()));
                }
            }
        }
    }
}
