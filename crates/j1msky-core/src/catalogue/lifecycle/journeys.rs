//! `lifecycle.journeys`: a journey is an entry rule, exits, and a list of steps.
//! Step ids are stable names: a scheduled step is found again by its id in the
//! journey version its enrollment pinned.

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, ConfigIssue};

/// One journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journey {
    /// Bumped by the operator when the steps change; enrollments keep the version they
    /// started on.
    pub version: u32,
    #[serde(default)]
    pub description: String,
    /// Consent category of the journey's messages (`transactional`, `onboarding`,
    /// `retention`, `marketing`).
    pub category: String,
    /// What enrolls a customer.
    pub entry: Entry,
    /// Event kinds or named conditions that end an enrollment early (`activity`,
    /// `customer.paused`, `customer.cancelled`, …).
    #[serde(default)]
    pub exit_on: Vec<String>,
    pub steps: Vec<Step>,
}

/// What enrolls a customer in a journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// An event kind (`customer.created`, …) or a trigger id (`trigger:inactive_3d`).
    pub on: String,
    /// Whether a customer may be enrolled again after finishing or leaving.
    #[serde(default)]
    pub re_entry: ReEntry,
}

/// Re-entry rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum ReEntry {
    /// Once per customer, ever.
    #[default]
    Never,
    /// Again once the previous enrollment ended at least `days` ago.
    AfterDays { days: u32 },
}

/// One step. Every step has an `id`; `next` (when a step has one) defaults to the
/// following step in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum Step {
    /// Waits a duration, then (optionally) until the next local time of day.
    Wait {
        id: String,
        #[serde(default)]
        days: u32,
        #[serde(default)]
        hours: u32,
        /// `HH:MM` in the customer's time zone, after the duration.
        #[serde(default)]
        until_local_time: Option<String>,
        /// Instead of `days`/`hours`: until this share (1-100 %) of the payment grace
        /// period (`stripe.past_due_grace_days`) has passed since the enrollment began, so
        /// dunning mail spreads over whatever grace the operator gives. A local time that
        /// would land past the grace period's end is not waited for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_percent: Option<u32>,
    },
    /// Waits for an event kind or a named condition, at most `timeout_hours`.
    WaitUntil {
        id: String,
        #[serde(default)]
        event: Option<String>,
        #[serde(default)]
        condition: Option<String>,
        timeout_hours: u32,
        /// Step id taken when it happened.
        then: String,
        /// Step id taken on timeout.
        on_timeout: String,
    },
    /// Goes to `then` when the named condition holds, else to `otherwise`.
    Branch { id: String, condition: String, then: String, otherwise: String },
    /// Sends a template (`config/templates/<template>.{subject,txt,html}.j2`).
    Send {
        id: String,
        template: String,
        /// Not sent at all when due more than this many hours ago (catch-up cut-off).
        #[serde(default)]
        stale_after_hours: Option<u32>,
        /// Skipped (logged `skipped_no_link`) while `lifecycle.delivery.links.<name>` is
        /// unset: a community invite needs a community.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        needs_link: Option<String>,
    },
    /// Opens a staff to-do.
    Todo {
        id: String,
        reason: String,
        #[serde(default)]
        due_days: u32,
    },
    /// Grants a catalogue offer through billing, then goes on. When billing refuses it
    /// (already granted within its cool-down, …) the steps after it, such as the mail
    /// announcing it, are not run: the journey goes to `on_refused`, or ends (`exited`,
    /// reason `offer refused`) without one. The step log says which (`offer_granted`,
    /// `offer_refused` with billing's reason).
    Offer {
        id: String,
        offer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_refused: Option<String>,
    },
    /// Records an attribute on the enrollment's customer.
    SetAttribute { id: String, name: String, value: String },
    /// Ends the enrollment.
    Exit { id: String },
}

impl Step {
    /// The step's id.
    pub fn id(&self) -> &str {
        match self {
            Step::Wait { id, .. }
            | Step::WaitUntil { id, .. }
            | Step::Branch { id, .. }
            | Step::Send { id, .. }
            | Step::Todo { id, .. }
            | Step::Offer { id, .. }
            | Step::SetAttribute { id, .. }
            | Step::Exit { id } => id,
        }
    }
}

/// A named condition a `branch` or `wait_until` step tests, parsed from its catalogue
/// spelling (`tasks_succeeded_at_least:3`, `plan_in:pro|enterprise`, `attribute:k=v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// At least N of the customer's tasks succeeded (ever).
    TasksSucceededAtLeast(u32),
    /// The customer has submitted no task yet.
    NoTasks,
    /// A plan limit was hit since the enrollment started.
    LimitHit,
    /// The customer's latest NPS answer (attribute `nps`) is at least N.
    NpsAtLeast(u8),
    /// The customer is on one of these plans.
    PlanIn(Vec<String>),
    /// A login, API call or task since the enrollment started.
    ActivitySinceEnrollment,
    /// The customer attribute `name` equals `value`.
    Attribute { name: String, value: String },
}

impl Condition {
    /// Reads a condition's catalogue spelling; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Condition, String> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let number = |a: Option<&str>| -> Result<u32, String> {
            a.and_then(|a| a.parse::<u32>().ok()).ok_or_else(|| format!("`{s}` needs a whole number after `:`"))
        };
        let none = |c: Condition| match arg {
            None => Ok(c),
            Some(_) => Err(format!("`{name}` takes no argument")),
        };
        match name {
            "tasks_succeeded_at_least" => Ok(Condition::TasksSucceededAtLeast(number(arg)?)),
            "no_tasks" => none(Condition::NoTasks),
            "limit_hit" => none(Condition::LimitHit),
            "activity_since_enrollment" => none(Condition::ActivitySinceEnrollment),
            "nps_at_least" => {
                let n = number(arg)?;
                u8::try_from(n)
                    .ok()
                    .filter(|n| *n <= 10)
                    .map(Condition::NpsAtLeast)
                    .ok_or_else(|| format!("`{s}`: NPS runs from 0 to 10"))
            }
            "plan_in" => {
                let plans: Vec<String> = arg
                    .unwrap_or_default()
                    .split('|')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect();
                if plans.is_empty() {
                    return Err(format!("`{s}` needs plans, e.g. plan_in:pro|enterprise"));
                }
                Ok(Condition::PlanIn(plans))
            }
            "attribute" => match arg.and_then(|a| a.split_once('=')) {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok(Condition::Attribute { name: k.trim().into(), value: v.trim().into() })
                }
                _ => Err(format!("`{s}` needs `attribute:name=value`")),
            },
            _ => Err(format!(
                "unknown condition `{name}` (known: tasks_succeeded_at_least:N, no_tasks, limit_hit, nps_at_least:N, \
                 plan_in:a|b, activity_since_enrollment, attribute:k=v)"
            )),
        }
    }
}

/// What ends an enrollment besides its own `exit` steps: any login, API call or task.
pub const ACTIVITY: &str = "activity";

/// Parses `HH:MM` (24-hour clock).
pub fn parse_local_time(s: &str) -> Option<(u32, u32)> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

/// A template name is a file-name stem: letters, digits and `_` only (no paths).
pub fn is_template_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Journey {
    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id() == id)
    }

    /// The id of the step after `id` in the list (where a step without branches goes).
    pub fn following(&self, id: &str) -> Option<&str> {
        let at = self.steps.iter().position(|s| s.id() == id)?;
        self.steps.get(at + 1).map(Step::id)
    }

    /// Every template the journey's `send` steps name.
    pub fn templates(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Send { template, .. } => Some(template.as_str()),
                _ => None,
            })
            .collect()
    }
}

pub(crate) fn validate(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    for (name, j) in &c.lifecycle.journeys {
        let at = format!("lifecycle.journeys.{name}");
        if !["transactional", "onboarding", "retention", "marketing"].contains(&j.category.as_str()) {
            out.push(ConfigIssue::new(
                format!("{at}.category"),
                format!("`{}` is not one of transactional, onboarding, retention, marketing", j.category),
            ));
        }
        let on = &j.entry.on;
        let trigger_ok = on.strip_prefix("trigger:").is_some_and(|t| !t.trim().is_empty());
        if !trigger_ok && crate::events::Kind::parse(on).is_none() {
            out.push(ConfigIssue::new(
                format!("{at}.entry.on"),
                format!("`{on}` is neither an event kind nor `trigger:<id>`"),
            ));
        }
        for (i, e) in j.exit_on.iter().enumerate() {
            if e != ACTIVITY && crate::events::Kind::parse(e).is_none() {
                out.push(ConfigIssue::new(
                    format!("{at}.exit_on[{i}]"),
                    format!("`{e}` is neither an event kind nor `activity`"),
                ));
            }
        }
        if j.steps.is_empty() {
            out.push(ConfigIssue::new(format!("{at}.steps"), "a journey needs at least one step"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in j.steps.iter().enumerate() {
            let sp = format!("{at}.steps[{i}]");
            if !is_template_name(s.id()) {
                out.push(ConfigIssue::new(format!("{sp}.id"), format!("`{}` must be letters, digits and `_`", s.id())));
            }
            if !seen.insert(s.id()) {
                out.push(ConfigIssue::new(format!("{sp}.id"), format!("step id `{}` is used twice", s.id())));
            }
        }
        let target = |out: &mut Vec<ConfigIssue>, path: String, id: &str| {
            if j.step(id).is_none() {
                out.push(ConfigIssue::new(path, format!("no step `{id}` in this journey")));
            }
        };
        let condition = |out: &mut Vec<ConfigIssue>, path: String, cond: &str| {
            if let Err(e) = Condition::parse(cond) {
                out.push(ConfigIssue::new(path, e));
            }
        };
        for (i, s) in j.steps.iter().enumerate() {
            let sp = format!("{at}.steps[{i}]");
            match s {
                Step::Wait { until_local_time, grace_percent, days, hours, .. } => {
                    if let Some(t) = until_local_time {
                        if parse_local_time(t).is_none() {
                            out.push(ConfigIssue::new(format!("{sp}.until_local_time"), format!("`{t}` is not HH:MM")));
                        }
                    }
                    if let Some(p) = grace_percent {
                        if !(1..=100).contains(p) {
                            out.push(ConfigIssue::new(
                                format!("{sp}.grace_percent"),
                                format!("{p} is not a share of the grace period between 1 and 100"),
                            ));
                        }
                        if *days > 0 || *hours > 0 {
                            out.push(ConfigIssue::new(
                                format!("{sp}.grace_percent"),
                                "give either `grace_percent` or `days`/`hours`, not both",
                            ));
                        }
                    }
                }
                Step::WaitUntil { event, condition: cond, timeout_hours, then, on_timeout, .. } => {
                    match (event, cond) {
                        (Some(e), None) => {
                            if crate::events::Kind::parse(e).is_none() {
                                out.push(ConfigIssue::new(
                                    format!("{sp}.event"),
                                    format!("`{e}` is not an event kind"),
                                ));
                            }
                        }
                        (None, Some(cnd)) => condition(out, format!("{sp}.condition"), cnd),
                        _ => out.push(ConfigIssue::new(sp.clone(), "give exactly one of `event` and `condition`")),
                    }
                    if *timeout_hours == 0 {
                        out.push(ConfigIssue::new(format!("{sp}.timeout_hours"), "must be at least 1"));
                    }
                    target(out, format!("{sp}.then"), then);
                    target(out, format!("{sp}.on_timeout"), on_timeout);
                }
                Step::Branch { condition: cnd, then, otherwise, .. } => {
                    condition(out, format!("{sp}.condition"), cnd);
                    target(out, format!("{sp}.then"), then);
                    target(out, format!("{sp}.otherwise"), otherwise);
                }
                Step::Send { template, needs_link, .. } => {
                    if !is_template_name(template) {
                        out.push(ConfigIssue::new(
                            format!("{sp}.template"),
                            format!("`{template}` must be letters, digits and `_`"),
                        ));
                    }
                    if let Some(l) = needs_link {
                        if !super::LINK_NAMES.contains(&l.as_str()) {
                            out.push(ConfigIssue::new(
                                format!("{sp}.needs_link"),
                                format!("`{l}` is not one of {}", super::LINK_NAMES.join(", ")),
                            ));
                        }
                    }
                }
                Step::Todo { reason, .. } => {
                    if reason.trim().is_empty() {
                        out.push(ConfigIssue::new(format!("{sp}.reason"), "a to-do needs a reason"));
                    }
                }
                Step::Offer { offer, on_refused, .. } => {
                    if !c.stripe.offers.contains_key(offer) {
                        out.push(ConfigIssue::new(
                            format!("{sp}.offer"),
                            format!("no offer `{offer}` in stripe.offers"),
                        ));
                    }
                    if let Some(to) = on_refused {
                        target(out, format!("{sp}.on_refused"), to);
                    }
                }
                Step::SetAttribute { name: n, .. } => {
                    if !is_template_name(n) {
                        out.push(ConfigIssue::new(
                            format!("{sp}.name"),
                            format!("`{n}` must be letters, digits and `_`"),
                        ));
                    }
                }
                Step::Exit { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_unknown_ones_are_named() {
        assert_eq!(Condition::parse("tasks_succeeded_at_least:3"), Ok(Condition::TasksSucceededAtLeast(3)));
        assert_eq!(
            Condition::parse("plan_in:pro|enterprise"),
            Ok(Condition::PlanIn(vec!["pro".into(), "enterprise".into()]))
        );
        assert_eq!(
            Condition::parse("attribute:tier=gold"),
            Ok(Condition::Attribute { name: "tier".into(), value: "gold".into() })
        );
        assert!(Condition::parse("nps_at_least:11").is_err());
        assert!(Condition::parse("no_tasks:1").is_err());
        assert!(Condition::parse("tasks_succeeded_at_least").is_err());
        assert!(Condition::parse("bogus").unwrap_err().contains("unknown condition `bogus`"));
        assert_eq!(parse_local_time("09:30"), Some((9, 30)));
        assert_eq!(parse_local_time("24:00"), None);
        assert!(!is_template_name("../etc/passwd"));
    }

    fn issues_with(edit: impl Fn(&mut serde_json::Value)) -> Vec<String> {
        let mut v: serde_json::Value = serde_json::from_str(crate::catalogue::SHIPPED).unwrap();
        edit(&mut v["lifecycle"]["journeys"]["activation"]);
        match Catalogue::from_json_str(&v.to_string()) {
            Ok(_) => Vec::new(),
            Err(crate::catalogue::CatalogueError::Invalid(issues)) => {
                issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn config_check_names_the_path_of_a_bad_step() {
        assert_eq!(issues_with(|_| {}), Vec::<String>::new());
        let unknown_condition = issues_with(|j| j["steps"][1]["condition"] = "moon_is_full".into());
        assert!(
            unknown_condition
                .iter()
                .any(|i| i
                    .starts_with("lifecycle.journeys.activation.steps[1].condition: unknown condition `moon_is_full`")),
            "{unknown_condition:?}"
        );
        let unknown_step = issues_with(|j| j["steps"][1]["then"] = "nowhere".into());
        assert!(
            unknown_step
                .iter()
                .any(|i| i == "lifecycle.journeys.activation.steps[1].then: no step `nowhere` in this journey"),
            "{unknown_step:?}"
        );
        let grace = issues_with(|j| j["steps"][0]["grace_percent"] = 150.into());
        assert!(
            grace.iter().any(|i| i == "lifecycle.journeys.activation.steps[0].grace_percent: 150 is not a share of the grace period between 1 and 100"),
            "{grace:?}"
        );
        assert!(
            grace.iter().any(|i| i.ends_with("grace_percent: give either `grace_percent` or `days`/`hours`, not both")),
            "{grace:?}"
        );
        let bad_time = issues_with(|j| j["steps"][0]["until_local_time"] = "25:00".into());
        assert!(
            bad_time.iter().any(|i| i.starts_with("lifecycle.journeys.activation.steps[0].until_local_time")),
            "{bad_time:?}"
        );
        let bad_exit = issues_with(|j| j["exit_on"][0] = "customer.vanished".into());
        assert!(bad_exit.iter().any(|i| i.starts_with("lifecycle.journeys.activation.exit_on[0]")), "{bad_exit:?}");
        let traversal = issues_with(|j| j["steps"][2]["template"] = "../../etc/passwd".into());
        assert!(
            traversal.iter().any(|i| i.starts_with("lifecycle.journeys.activation.steps[2].template")),
            "{traversal:?}"
        );
        let twice = issues_with(|j| j["steps"][3]["id"] = "tips".into());
        assert!(twice.iter().any(|i| i.contains("step id `tips` is used twice")), "{twice:?}");
    }
}
