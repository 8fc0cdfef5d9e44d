//! `alerts` in `business.json`: who hears about operator alerts and when, the cost-spike
//! rule, and the times of the daily review mails. Every field has a default, so a
//! catalogue without the section behaves sensibly.

use serde::{Deserialize, Serialize};

use super::lifecycle::parse_hh_mm;
use super::{Catalogue, ConfigIssue};

/// Operator alerts and reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// Addresses alert and report mail goes to; empty: every active operator user.
    pub recipients: Vec<String>,
    /// The environment variable holding the Slack-compatible webhook URL (unset or
    /// empty: no webhook).
    pub webhook_url_env: String,
    /// Deliveries per alert kind and channel in one hour; the rest go in a digest.
    pub max_per_kind_per_hour: u32,
    pub cost_spike: CostSpike,
    /// Local times (HH:MM, business time zone) of the morning and evening review mails.
    pub morning_report_at: String,
    pub evening_report_at: String,
    /// Hours without a finished backup after which the hourly check raises
    /// `backup_overdue` (once a day); 0: never (backups taken by other means).
    pub backup_overdue_hours: u32,
}

/// An hour's spend above `factor_percent` % of the trailing hourly average is a spike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostSpike {
    /// k × 100: 300 means "more than three times the average".
    pub factor_percent: u32,
    /// Hours before the checked one that make the average.
    pub window_hours: u32,
    /// Hours spending less than this (micro-USD) are never a spike (noise at night).
    pub min_spend_micros: i64,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            recipients: Vec::new(),
            webhook_url_env: "J1MSKY_ALERT_WEBHOOK_URL".into(),
            max_per_kind_per_hour: 5,
            cost_spike: CostSpike::default(),
            morning_report_at: "08:00".into(),
            evening_report_at: "18:00".into(),
            backup_overdue_hours: 3,
        }
    }
}

impl Default for CostSpike {
    fn default() -> Self {
        CostSpike { factor_percent: 300, window_hours: 24, min_spend_micros: 1_000_000 }
    }
}

pub(crate) fn validate(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    let a = &c.alerts;
    for (i, r) in a.recipients.iter().enumerate() {
        let ok = r.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
            && !r.chars().any(|ch| ch.is_whitespace() || matches!(ch, '<' | '>' | ',' | '"'));
        if !ok {
            out.push(ConfigIssue::new(format!("alerts.recipients[{i}]"), format!("`{r}` is not an email address")));
        }
    }
    if a.max_per_kind_per_hour == 0 {
        out.push(ConfigIssue::new("alerts.max_per_kind_per_hour", "must be at least 1"));
    }
    if a.cost_spike.factor_percent <= 100 {
        out.push(ConfigIssue::new("alerts.cost_spike.factor_percent", "must be above 100 (k > 1)"));
    }
    if a.cost_spike.window_hours == 0 || a.cost_spike.window_hours > 24 * 31 {
        out.push(ConfigIssue::new("alerts.cost_spike.window_hours", "must be between 1 and 744"));
    }
    for (field, v) in [("morning_report_at", &a.morning_report_at), ("evening_report_at", &a.evening_report_at)] {
        if parse_hh_mm(v).is_none() {
            out.push(ConfigIssue::new(format!("alerts.{field}"), format!("`{v}` is not a time HH:MM (00:00-23:59)")));
        }
    }
}
