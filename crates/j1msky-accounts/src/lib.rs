//! Accounts and access: customers and their stage, users, sessions, API keys,
//! login throttling. The audit log lives in j1msky-audit. Every customer-scoped read takes the
//! caller's customer id, so another customer's object looks exactly like a missing one.

pub mod access;
pub mod activity;
pub mod api_keys;
pub mod customer_links;
pub mod customers;
pub mod devices;
mod email;
mod error;
pub mod passwords;
pub mod reactions;
pub mod secrets;
pub mod sessions;
pub mod throttle;
pub mod tokens;
pub mod trials;
pub mod users;

pub use email::Email;
pub use error::AccountsError;
