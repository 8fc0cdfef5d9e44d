//! What can go wrong on the road from a lead to a trial.

use thiserror::Error;

/// A lead, trial, pilot or account-mail error; the web layer maps each to a status.
#[derive(Debug, Error)]
pub enum LeadError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("too many requests from this address; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: i64 },
    #[error(transparent)]
    Accounts(#[from] j1msky_accounts::AccountsError),
    #[error(transparent)]
    Lifecycle(#[from] j1msky_lifecycle::LifecycleError),
    #[error(transparent)]
    Db(#[from] j1msky_db::DbError),
}

impl From<sqlx::Error> for LeadError {
    fn from(e: sqlx::Error) -> Self {
        LeadError::Db(j1msky_db::DbError::Sqlx(e))
    }
}

impl LeadError {
    /// Shorthand for a field error.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        LeadError::Invalid { field, message: message.into() }
    }
}
