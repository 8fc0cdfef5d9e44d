//! Configuration history: every catalogue that was in force (`ops_catalogue_versions`,
//! append-only, the newest one serves) and, through the audit crate's `settings_history`,
//! every change of the cost mode, caps, the daily budget and customers' monthly budgets
//! — each with who, when, the old and new value and why.
//! `config apply` validates a file and stores it as the new version in one transaction;
//! each process follows the newest version ([`follow`]) and swaps its
//! [`LiveCatalogue`] without a restart. A rollback appends a copy of an older version
//! (or puts a setting back through its owner), so nothing is ever rewritten.

mod diff;
mod follow;
mod history;
mod versions;

use j1msky_core::catalogue::ConfigIssue;
use j1msky_db::DbError;

pub use diff::{diff_json, diff_versions, PathChange};
pub use follow::{follow, refresh};
pub use history::{history, rollback, Entry, RolledBack, Target};
pub use versions::{active, apply, get, startup, validate, versions, Applied, Stored, Version};

/// What the operator is told when a configuration change is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The catalogue is not valid: every problem, located by its JSON path.
    #[error("{}", render(.0))]
    Invalid(Vec<ConfigIssue>),
    /// A field of the request broke a rule (a missing reason, a bad version number).
    #[error("{field}: {message}")]
    Rule { field: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    /// Another change was stored at the same moment; nothing of this one was.
    #[error("{0}")]
    Conflict(String),
    /// A setting could not be put back (its owner's rule).
    #[error(transparent)]
    Control(#[from] j1msky_gateway::controls::ControlError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ConfigError {
    fn from(e: sqlx::Error) -> Self {
        ConfigError::Db(e.into())
    }
}

fn render(issues: &[ConfigIssue]) -> String {
    let lines: Vec<String> = issues.iter().map(ToString::to_string).collect();
    format!("invalid catalogue ({} problem(s)): {}", issues.len(), lines.join("; "))
}

/// The reason kept with a change: the settings history's one rule.
fn check_reason(reason: &str) -> Result<&str, ConfigError> {
    j1msky_audit::settings::check_reason(reason)
        .map_err(|m| ConfigError::Rule { field: "reason", message: m.to_string() })
}
