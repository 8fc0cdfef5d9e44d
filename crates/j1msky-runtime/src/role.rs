//! What a process does: `--roles web,tasks,billing,reactions`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A share of the work one process may take on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The HTTP server (started by the binary; the runtime gives it the shared state).
    Web,
    /// Task workers.
    Tasks,
    /// The Stripe applier, billing jobs and the API usage meter.
    Billing,
    /// Consumers of the event outbox.
    Reactions,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Web, Role::Tasks, Role::Billing, Role::Reactions];
    /// Every role but the HTTP server: what `j1msky worker` runs by default.
    pub const BACKGROUND: [Role; 3] = [Role::Tasks, Role::Billing, Role::Reactions];

    pub fn name(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::Tasks => "tasks",
            Role::Billing => "billing",
            Role::Reactions => "reactions",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--roles` value that names no role, or one this command cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("unknown role `{0}`; the roles are web, tasks, billing, reactions")]
    Unknown(String),
    #[error("no role given; the roles are web, tasks, billing, reactions")]
    Empty,
    #[error("role `{role}` is not for this command: {why}")]
    NotHere { role: Role, why: &'static str },
}

impl FromStr for Role {
    type Err = RoleError;

    fn from_str(s: &str) -> Result<Role, RoleError> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| RoleError::Unknown(s.to_string()))
    }
}

/// Parses a comma-separated list of roles (spaces around names allowed).
pub fn parse_roles(list: &str) -> Result<BTreeSet<Role>, RoleError> {
    let roles = list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Role::from_str);
    let roles = roles.collect::<Result<BTreeSet<_>, _>>()?;
    if roles.is_empty() {
        return Err(RoleError::Empty);
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_a_bad_one_is_named() {
        assert_eq!(parse_roles("tasks, billing").ok(), Some(BTreeSet::from([Role::Tasks, Role::Billing])));
        assert_eq!(parse_roles("web,tasks,billing,reactions").ok(), Some(BTreeSet::from(Role::ALL)));
        let e = parse_roles("tasks,bilin").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("`bilin`"), "{e}");
        assert_eq!(parse_roles(" , "), Err(RoleError::Empty));
    }
}
