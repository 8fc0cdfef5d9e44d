//! The insights error.

use j1msky_db::DbError;

/// What can go wrong computing or storing the numbers.
#[derive(Debug, thiserror::Error)]
pub enum InsightsError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Billing(#[from] j1msky_billing::BillingError),
}

impl From<sqlx::Error> for InsightsError {
    fn from(e: sqlx::Error) -> Self {
        InsightsError::Db(DbError::from(e))
    }
}

impl InsightsError {
    /// An invalid-input error naming the field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> InsightsError {
        InsightsError::Invalid { field: field.into(), message: message.into() }
    }
}
