//! The hourly checks that raise alerts of their own: a cost spike (the hour's model
//! spend above k × the trailing hourly average, both from the ledger) escalates the cost
//! mode one step through the gateway's escalation, like the budget levels do; a stuck
//! queue (the oldest queued task waiting longer than the morning review's critical wait);
//! no backup finished for `alerts.backup_overdue_hours` (once a day).
//! Every minute: tasks of a plan with an SLA waiting longer than the SLA's queue wait.

use j1msky_core::windows;
use j1msky_db::timers::{Handlers, Occurrence, Recurrence};
use j1msky_gateway::escalation;
use j1msky_gateway::policy::Mode;

use super::{Notifier, NotifyError};

/// The hourly check timer.
pub const CHECK_TIMER: &str = "ops.hourly_check";
/// The SLA check's timer, every minute.
pub const SLA_TIMER: &str = "ops.sla_check";
const HOUR: i64 = 3_600_000_000;
const MINUTE: i64 = 60_000_000;

fn this_minute(t: i64) -> Occurrence {
    let start = t.div_euclid(MINUTE) * MINUTE;
    Occurrence { key: start.to_string(), run_at: start }
}

fn next_minute(_due: i64, now: i64) -> Occurrence {
    this_minute(now.div_euclid(MINUTE) * MINUTE + MINUTE)
}

fn this_hour(t: i64) -> Occurrence {
    let start = t.div_euclid(HOUR) * HOUR;
    Occurrence { key: start.to_string(), run_at: start }
}

fn next_hour(_due: i64, now: i64) -> Occurrence {
    this_hour(now.div_euclid(HOUR) * HOUR + HOUR)
}

/// What the cost-spike check found for one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpikeCheck {
    pub hour_start: i64,
    pub spend_micros: i64,
    /// The trailing hourly average the spend was compared with.
    pub average_micros: i64,
    /// The alert's id when it was a spike (new or raised before).
    pub alert: Option<String>,
    /// The mode the spike asked for; `None` when it was no spike.
    pub escalated_to: Option<Mode>,
}

/// Checks the hour `[hour_start, hour_start + 1h)` against the `window_hours` before it.
/// A spike records the alert (its detail names the mode it escalates to, so a retry
/// escalates to the same mode, never a step further) and then escalates.
pub async fn check_cost_spike(ops: &crate::Ctx, hour_start: i64, now: i64) -> Result<SpikeCheck, NotifyError> {
    let rule = &ops.catalogue.alerts.cost_spike;
    let db = &ops.db;
    let window = i64::from(rule.window_hours.max(1));
    let spend = j1msky_gateway::ledger::spend_between(db, hour_start, hour_start + HOUR).await?.micros();
    let before = j1msky_gateway::ledger::spend_between(db, hour_start - window * HOUR, hour_start).await?.micros();
    let average = before / window;
    let mut out =
        SpikeCheck { hour_start, spend_micros: spend, average_micros: average, alert: None, escalated_to: None };
    // spend > k × average with k = factor_percent / 100, in integers.
    let spike = spend >= rule.min_spend_micros
        && i128::from(spend) * 100 > i128::from(average) * i128::from(rule.factor_percent);
    if !spike {
        return Ok(out);
    }
    let id = format!("alr_cost_spike_{hour_start}");
    let target = match j1msky_audit::alerts::get(db, &id).await? {
        Some(_) => stored_target(db, &id).await?.unwrap_or(Mode::OpusPaused),
        None => {
            let current = j1msky_gateway::controls::load(db).await?.mode;
            let target = escalation::stricter(current);
            let message = format!(
                "model spend in the hour from {} was {} against a trailing hourly average of {} (more than {}% of it)",
                hour_label(ops, hour_start),
                j1msky_core::Money::from_micros(spend),
                j1msky_core::Money::from_micros(average),
                rule.factor_percent
            );
            let detail =
                serde_json::json!({"spend_micros": spend, "average_micros": average, "escalate_to": target.as_str()});
            j1msky_audit::alerts::raise(db, &id, "cost_spike", &message, &detail, now).await?;
            target
        }
    };
    let reason = format!("cost spike: the hour's spend is more than {}% of the trailing average", rule.factor_percent);
    escalation::escalate(db, target, &reason, now).await?;
    out.alert = Some(id);
    out.escalated_to = Some(target);
    Ok(out)
}

async fn stored_target(db: &j1msky_db::Db, id: &str) -> Result<Option<Mode>, NotifyError> {
    let detail: Option<String> =
        sqlx::query_scalar("SELECT detail FROM alerts WHERE id = $1").bind(id).fetch_optional(db.pool()).await?;
    let v: serde_json::Value = detail.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default();
    Ok(v["escalate_to"].as_str().and_then(|m| m.parse().ok()))
}

fn hour_label(ops: &crate::Ctx, t: i64) -> String {
    let tz: chrono_tz::Tz = ops.catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC);
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_default()
}

/// Raises `queue_stuck` (once an hour) when the oldest queued task waited longer than
/// the morning review's critical wait; true when an alert is new.
pub async fn check_queue(ops: &crate::Ctx, now: i64) -> Result<bool, NotifyError> {
    let q = j1msky_tasks::queue_view(&ops.db, now).await?;
    let Some(worst) = q.depth.iter().max_by_key(|d| d.oldest_wait_micros) else { return Ok(false) };
    if worst.oldest_wait_micros < j1msky_insights::morning::QUEUE_CRITICAL_MICROS {
        return Ok(false);
    }
    let (hour, _) = windows::hour(now);
    let message = format!(
        "the queue looks stuck: a task of team {} has waited {} min ({} queued in that lane)",
        worst.team,
        worst.oldest_wait_micros / 60_000_000,
        worst.queued
    );
    let detail = serde_json::json!({"team": worst.team, "wait_micros": worst.oldest_wait_micros});
    Ok(j1msky_audit::alerts::raise(&ops.db, &format!("alr_queue_stuck_{hour}"), "queue_stuck", &message, &detail, now)
        .await?)
}

/// Raises `backup_overdue` (once a UTC day) when no backup has finished well for
/// `alerts.backup_overdue_hours` (0: never checked), or none did since these checks
/// started that long ago: hourly backups off
/// (no `--backup-dir` on the process running the billing role), that process down, or
/// every attempt failing (each failure also raised `backup_failed`). True when new.
pub async fn check_backups(ops: &crate::Ctx, now: i64) -> Result<bool, NotifyError> {
    let hours = i64::from(ops.catalogue.alerts.backup_overdue_hours);
    if hours == 0 {
        return Ok(false);
    }
    let newest = crate::backup::newest_done(&ops.db).await?;
    // Measured from the newest backup, or else from when these checks first ran (a new
    // installation's first backup is not overdue before it had the time to take one).
    let since = match newest {
        Some(t) => Some(t),
        None => j1msky_db::timers::earliest(&ops.db, CHECK_TIMER).await?,
    };
    if since.is_none_or(|t| t > now - hours * HOUR) {
        return Ok(false);
    }
    let message = match newest {
        Some(t) => format!(
            "no backup has finished since {} (more than {hours} h): check that a process with the billing role \
             runs with --backup-dir, and the failed backups on /admin/backups",
            hour_label(ops, t)
        ),
        None => "no backup has ever been taken: start the process with the billing role with --backup-dir \
                 (J1MSKY_BACKUP_DIR) for hourly backups, or set alerts.backup_overdue_hours to 0 if the \
                 database is backed up by other means"
            .to_string(),
    };
    let detail = serde_json::json!({"newest_backup_at": newest, "overdue_hours": hours});
    let day = now.div_euclid(24 * HOUR);
    Ok(j1msky_audit::alerts::raise(
        &ops.db,
        &format!("alr_backup_overdue_{day}"),
        "backup_overdue",
        &message,
        &detail,
        now,
    )
    .await?)
}

/// Raises `sla_breach` (once an hour per SLA) when tasks of a plan with an SLA have waited
/// in the queue longer than its `sla.max_queue_wait_secs`; the ids of the alerts that are new.
pub async fn check_sla(ops: &crate::Ctx, now: i64) -> Result<Vec<String>, NotifyError> {
    let catalogue = ops.catalogue.current();
    let (hour, _) = windows::hour(now);
    let mut raised = Vec::new();
    for lane in j1msky_tasks::sla_lanes(&ops.db, &catalogue, now).await? {
        if lane.past_max == 0 {
            continue;
        }
        let message = format!(
            "{} task(s) of {} have waited in the queue longer than the SLA's {} min (the oldest {} min; {} queued)",
            lane.past_max,
            lane.plans.join(", "),
            lane.max_wait_micros / MINUTE,
            lane.oldest_wait_micros / MINUTE,
            lane.queued
        );
        let detail = serde_json::json!({
            "plans": lane.plans, "past_max": lane.past_max, "queued": lane.queued,
            "oldest_wait_micros": lane.oldest_wait_micros, "max_wait_micros": lane.max_wait_micros,
        });
        let id = format!("alr_sla_breach_{}_{hour}", lane.level);
        if j1msky_audit::alerts::raise(&ops.db, &id, "sla_breach", &message, &detail, now).await? {
            raised.push(id);
        }
    }
    Ok(raised)
}

/// The hourly check: the hour that just ended for a cost spike, and the queue; and the
/// SLA check every minute.
pub fn timer_handlers(n: &Notifier, h: Handlers) -> Handlers {
    let every_hour = Recurrence { current: this_hour, next: next_hour, max_attempts: 3 };
    let every_minute = Recurrence { current: this_minute, next: next_minute, max_attempts: 3 };
    let sla_ops = n.ops.clone();
    let h = h.recurring(SLA_TIMER, every_minute, move |fired| {
        let ops = sla_ops.clone();
        async move {
            for id in check_sla(&ops, fired.now).await.map_err(|e| e.to_string())? {
                tracing::warn!(alert = %id, "tasks past their SLA's queue wait");
            }
            Ok(())
        }
    });
    let ops = n.ops.clone();
    h.recurring(CHECK_TIMER, every_hour, move |fired| {
        let ops = ops.clone();
        async move {
            let hour = fired.run_at.div_euclid(HOUR) * HOUR - HOUR;
            let spike = check_cost_spike(&ops, hour, fired.now).await.map_err(|e| e.to_string())?;
            if let Some(mode) = spike.escalated_to {
                tracing::warn!(%mode, spend = spike.spend_micros, average = spike.average_micros, "cost spike");
            }
            check_queue(&ops, fired.now).await.map_err(|e| e.to_string())?;
            check_backups(&ops, fired.now).await.map_err(|e| e.to_string())?;
            Ok(())
        }
    })
}
