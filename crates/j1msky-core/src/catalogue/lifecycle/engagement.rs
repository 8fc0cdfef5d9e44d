//! `lifecycle.engagement`: surveys, staff to-dos, the newsletter and office hours.

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, ConfigIssue};

/// Surveys, to-dos, newsletter and office hours.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engagement {}

pub(crate) fn validate(_c: &Catalogue, _out: &mut Vec<ConfigIssue>) {}
