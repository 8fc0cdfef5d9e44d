//! The merged history (catalogue versions and settings changes, newest first) and the
//! one rollback both the CLI and the admin page call.

use serde::Serialize;

use j1msky_accounts::customer_links;
use j1msky_audit::settings::{self, Change};
use j1msky_audit::Actor;
use j1msky_core::catalogue::LiveCatalogue;
use j1msky_core::Money;
use j1msky_db::Db;
use j1msky_gateway::controls;

use super::versions::{self, Applied, Version};
use super::{check_reason, refresh, ConfigError};

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A catalogue version was stored (applied, first start or rollback).
    Catalogue(Version),
    /// An operator setting changed (cost mode, a cap, the daily budget, a customer's
    /// monthly budget).
    Setting(Change),
}

impl Entry {
    /// When it happened (unix microseconds).
    pub fn at(&self) -> i64 {
        match self {
            Entry::Catalogue(v) => v.created_at,
            Entry::Setting(c) => c.changed_at,
        }
    }
}

/// The newest `limit` entries. `key`: `catalogue` for versions only, a settings key or
/// prefix (`gateway.cap.`) for those changes only, none for both merged.
pub async fn history(db: &Db, key: Option<&str>, limit: i64) -> Result<Vec<Entry>, ConfigError> {
    let limit = limit.clamp(1, 1000);
    let key = key.map(str::trim).filter(|k| !k.is_empty());
    let mut out: Vec<Entry> = Vec::new();
    if key.is_none() || key == Some("catalogue") {
        out.extend(versions::versions(db, None, limit).await?.into_iter().map(Entry::Catalogue));
    }
    if key != Some("catalogue") {
        let prefix = key.unwrap_or("");
        out.extend(settings::changes(db, prefix, None, limit).await?.into_iter().map(Entry::Setting));
    }
    // Both lists are newest first and at most `limit` long, so the merged first `limit`
    // are among them.
    out.sort_by_key(|e| std::cmp::Reverse(e.at()));
    out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(out)
}

/// What a rollback names: a catalogue version (`3`, `v3`) or a settings change (`seth_…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Version(i64),
    SettingChange(String),
}

impl std::str::FromStr for Target {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Target, ConfigError> {
        let s = s.trim();
        if s.starts_with("seth_") {
            return Ok(Target::SettingChange(s.to_string()));
        }
        match s.trim_start_matches('v').parse::<i64>() {
            Ok(n) if n > 0 => Ok(Target::Version(n)),
            _ => Err(ConfigError::Rule {
                field: "target",
                message: format!("`{s}` is neither a catalogue version (3 or v3) nor a settings change (seth_…)"),
            }),
        }
    }
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RolledBack {
    /// A copy of the old version is the new version in force.
    Catalogue(Applied),
    /// The setting has its value from before the change again (`None`: unset).
    Setting { key: String, value: Option<String> },
}

/// Rolls back: a version's text becomes the new version in force (and `live`, this
/// process's handle, serves it at once; the others follow within a second), or a
/// settings change is undone by putting its previous value back through the control's
/// own function. Either way a new history entry, with `reason`, records it.
pub async fn rollback(
    db: &Db,
    live: &LiveCatalogue,
    actor: &Actor,
    target: &Target,
    reason: &str,
    now: i64,
) -> Result<RolledBack, ConfigError> {
    let reason = check_reason(reason)?;
    match target {
        Target::Version(v) => {
            let applied = versions::restore(db, actor, *v, reason, now).await?;
            refresh(db, live).await?;
            Ok(RolledBack::Catalogue(applied))
        }
        Target::SettingChange(id) => {
            let change = settings::change_by_id(db, id)
                .await?
                .ok_or_else(|| ConfigError::NotFound(format!("there is no settings change `{id}`")))?;
            let why = format!("rollback of {id}: {reason}");
            if let Some(customer) = change.key.strip_prefix(customer_links::BUDGET_HISTORY_PREFIX) {
                let previous = change.previous.as_deref().map(str::parse::<Money>).transpose().map_err(|e| {
                    ConfigError::Rule { field: "target", message: format!("`{id}` kept an unreadable amount: {e}") }
                })?;
                controls::set_customer_budget(db, actor, customer, previous, &why, now).await?;
                return Ok(RolledBack::Setting { key: change.key, value: change.previous });
            }
            if !controls::owns_key(&change.key) {
                return Err(ConfigError::Rule {
                    field: "target",
                    message: format!("`{}` cannot be rolled back from here", change.key),
                });
            }
            controls::restore(db, live, actor, &change.key, change.previous.as_deref(), &why, now).await?;
            Ok(RolledBack::Setting { key: change.key, value: change.previous })
        }
    }
}
