//! `lifecycle.triggers`: the thresholds of the retention triggers. A trigger with id `x`
//! enrolls every journey whose `entry.on` is `trigger:x`; the trigger ids are `TRIGGER_IDS`.

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, ConfigIssue};

/// Every trigger the engine fires (what `entry.on = "trigger:<id>"` may name).
pub const TRIGGER_IDS: &[&str] = &[
    "inactive",
    "inactive_outreach",
    "inactive_offer",
    "limit_hit",
    "low_success",
    "high_usage",
    "payment_failed",
    "trial_ending",
    "portal_cancel",
    "churn_spike_canceller",
    "churn_spike_at_risk",
];

/// Thresholds of the retention triggers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Triggers {
    /// Days without a login, API call or task before the re-engagement journey (`inactive`).
    pub inactive_days: u32,
    /// Days of inactivity before a staff to-do "personal outreach" (`inactive_outreach`).
    pub outreach_days: u32,
    /// Days of inactivity before the "we miss you" offer journey (`inactive_offer`).
    pub offer_days: u32,
    /// Days a staff to-do opened by a trigger is due in.
    pub todo_due_days: u32,
    pub low_success: LowSuccess,
    pub high_usage: HighUsage,
    pub upgrade: UpgradePrompt,
    pub churn_spike: ChurnSpike,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            inactive_days: 3,
            outreach_days: 7,
            offer_days: 14,
            todo_due_days: 2,
            low_success: LowSuccess::default(),
            high_usage: HighUsage::default(),
            upgrade: UpgradePrompt::default(),
            churn_spike: ChurnSpike::default(),
        }
    }
}

/// Low task success: fewer than `below_percent` % of the last `last_tasks` finished
/// tasks succeeded → staff to-do "proactive support".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowSuccess {
    pub last_tasks: u32,
    pub below_percent: u32,
}

impl Default for LowSuccess {
    fn default() -> Self {
        LowSuccess { last_tasks: 10, below_percent: 70 }
    }
}

/// High usage: at least `tasks` tasks succeeded within `days` days → loyalty journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HighUsage {
    pub tasks: u32,
    pub days: u32,
}

impl Default for HighUsage {
    fn default() -> Self {
        HighUsage { tasks: 200, days: 30 }
    }
}

/// The upgrade prompt's coupon: which offer (`stripe.offers`) a limit hit grants for
/// the upgrade, and how many days the customer has to accept it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradePrompt {
    pub offer: String,
    pub valid_days: u32,
}

impl Default for UpgradePrompt {
    fn default() -> Self {
        UpgradePrompt { offer: "upgrade".into(), valid_days: 14 }
    }
}

/// Churn spike: the customers churned in the last 7 days exceed `factor_percent` / 100
/// times the weekly average of the `trailing_weeks` weeks before (and at least
/// `min_churned`). At-risk customers are those inactive `at_risk_inactive_days` days or
/// more, or with an open low-success to-do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChurnSpike {
    pub factor_percent: u32,
    pub trailing_weeks: u32,
    pub min_churned: u32,
    pub at_risk_inactive_days: u32,
}

impl Default for ChurnSpike {
    fn default() -> Self {
        ChurnSpike { factor_percent: 200, trailing_weeks: 4, min_churned: 3, at_risk_inactive_days: 7 }
    }
}

pub(crate) fn validate(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    let t = &c.lifecycle.triggers;
    let p = "lifecycle.triggers";
    let mut positive = |path: &str, v: u32| {
        if v == 0 {
            out.push(ConfigIssue::new(format!("{p}.{path}"), "must be at least 1"));
        }
    };
    positive("inactive_days", t.inactive_days);
    positive("low_success.last_tasks", t.low_success.last_tasks);
    positive("high_usage.tasks", t.high_usage.tasks);
    positive("high_usage.days", t.high_usage.days);
    positive("upgrade.valid_days", t.upgrade.valid_days);
    positive("churn_spike.trailing_weeks", t.churn_spike.trailing_weeks);
    positive("churn_spike.factor_percent", t.churn_spike.factor_percent);
    if t.outreach_days <= t.inactive_days {
        out.push(ConfigIssue::new(
            format!("{p}.outreach_days"),
            format!("must be more than inactive_days ({})", t.inactive_days),
        ));
    }
    if t.offer_days <= t.outreach_days {
        out.push(ConfigIssue::new(
            format!("{p}.offer_days"),
            format!("must be more than outreach_days ({})", t.outreach_days),
        ));
    }
    if t.low_success.below_percent == 0 || t.low_success.below_percent > 100 {
        out.push(ConfigIssue::new(format!("{p}.low_success.below_percent"), "must be between 1 and 100"));
    }
    if !c.stripe.offers.contains_key(&t.upgrade.offer) {
        let known = c.stripe.offers.keys().cloned().collect::<Vec<_>>().join(", ");
        out.push(ConfigIssue::new(
            format!("{p}.upgrade.offer"),
            format!("unknown offer `{}`; stripe.offers has: {known}", t.upgrade.offer),
        ));
    }
    for (name, j) in &c.lifecycle.journeys {
        if let Some(id) = j.entry.on.strip_prefix("trigger:") {
            if !TRIGGER_IDS.contains(&id) {
                out.push(ConfigIssue::new(
                    format!("lifecycle.journeys.{name}.entry.on"),
                    format!("unknown trigger `{id}`; triggers are: {}", TRIGGER_IDS.join(", ")),
                ));
            }
        }
    }
}
