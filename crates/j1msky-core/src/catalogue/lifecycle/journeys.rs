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
    },
    /// Opens a staff to-do.
    Todo {
        id: String,
        reason: String,
        #[serde(default)]
        due_days: u32,
    },
    /// Grants a catalogue offer through billing.
    Offer { id: String, offer: String },
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

pub(crate) fn validate(_c: &Catalogue, _out: &mut Vec<ConfigIssue>) {}
