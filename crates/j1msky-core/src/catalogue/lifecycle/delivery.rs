//! `lifecycle.delivery`: who mail comes from and the rules applied at send time.

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, ConfigIssue};

/// How lifecycle mail is sent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {}

pub(crate) fn validate(_c: &Catalogue, _out: &mut Vec<ConfigIssue>) {}
