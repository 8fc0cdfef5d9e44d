//! `lifecycle.triggers`: the thresholds of the retention triggers.

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, ConfigIssue};

/// Thresholds of the retention triggers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {}

pub(crate) fn validate(_c: &Catalogue, _out: &mut Vec<ConfigIssue>) {}
