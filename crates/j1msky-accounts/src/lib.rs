//! Accounts and access: customers and their stage, users, sessions, API keys,
//! login throttling and the audit log. Every customer-scoped read takes the
//! caller's customer id, so another customer's object looks exactly like a missing one.

pub mod access;
pub mod api_keys;
pub mod audit;
pub mod customers;
mod email;
mod error;
pub mod passwords;
pub mod reactions;
pub mod secrets;
pub mod sessions;
pub mod throttle;
pub mod users;

pub use email::Email;
pub use error::AccountsError;

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
