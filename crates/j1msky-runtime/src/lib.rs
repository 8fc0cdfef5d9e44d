//! One runtime for everything j1msky runs in the background: the process's roles decide
//! what starts, every loop is tracked by name, and one `shutdown` stops them all, waits
//! for them, writes the gateway's last ledger rows and closes the database.

mod role;
mod runtime;

pub use role::{parse_roles, Role, RoleError};
pub use runtime::{Mail, Runtime, Settings};
