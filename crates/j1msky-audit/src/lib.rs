//! Who did what, shared by every domain: the `Actor`, the audit log, operator alerts and
//! the audited settings. It sits below the domains so the gateway, billing or tasks can
//! record an action without depending on accounts.

pub mod alerts;
pub mod audit;
pub mod settings;

/// Who did something, as written in the audit log: `user:usr_…`, `cli`, `system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// A signed-in user.
    pub fn user(id: &str) -> Actor {
        Actor(format!("user:{id}"))
    }
    /// The operator's command line.
    pub fn cli() -> Actor {
        Actor("cli".into())
    }
    /// The system itself (automations).
    pub fn system() -> Actor {
        Actor("system".into())
    }
    /// The audit-log form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
