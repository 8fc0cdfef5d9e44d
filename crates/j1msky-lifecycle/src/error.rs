//! The lifecycle engine's error.

use j1msky_db::DbError;

/// What can go wrong in the lifecycle engine.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("template {template}: {message}")]
    Template { template: String, message: String },
    #[error("mail transport: {0}")]
    Transport(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Accounts(#[from] j1msky_accounts::AccountsError),
    #[error(transparent)]
    Billing(#[from] j1msky_billing::BillingError),
}

impl From<sqlx::Error> for LifecycleError {
    fn from(e: sqlx::Error) -> Self {
        LifecycleError::Db(DbError::from(e))
    }
}

impl LifecycleError {
    /// An invalid-input error naming the field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> LifecycleError {
        LifecycleError::Invalid { field: field.into(), message: message.into() }
    }
}
