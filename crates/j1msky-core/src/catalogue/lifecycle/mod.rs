//! The `lifecycle` section of the catalogue: how customers are onboarded and kept
//! (journeys and their steps), what starts them (triggers), how mail is delivered,
//! and the surveys, to-dos and newsletter around them. Each part lives in its own
//! file with its own checks; `j1msky-lifecycle` runs them.

mod delivery;
mod engagement;
mod journeys;
mod triggers;

use serde::{Deserialize, Serialize};

pub use delivery::*;
pub use engagement::*;
pub use journeys::*;
pub use triggers::*;

use super::{Catalogue, ConfigIssue};

/// Everything the lifecycle engine reads from the catalogue.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Sender, footer, caps and quiet hours for lifecycle mail.
    #[serde(default)]
    pub delivery: Delivery,
    /// Journeys by id (`welcome`, `activation`, `reengagement`, …).
    #[serde(default)]
    pub journeys: std::collections::BTreeMap<String, Journey>,
    /// Thresholds of the retention triggers.
    #[serde(default)]
    pub triggers: Triggers,
    /// Surveys, staff to-dos, newsletter, office hours.
    #[serde(default)]
    pub engagement: Engagement,
}

/// Checks of the whole section (called from the catalogue's semantic checks).
pub(crate) fn validate(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    delivery::validate(c, out);
    journeys::validate(c, out);
    triggers::validate(c, out);
    engagement::validate(c, out);
}
