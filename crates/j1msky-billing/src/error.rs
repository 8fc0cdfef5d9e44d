//! Billing errors.

use crate::signature::SignatureError;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// Missing or unacceptable configuration (keys, live mode).
    #[error("Stripe configuration: {0}")]
    Config(String),
    /// Stripe answered with an error.
    #[error("Stripe error {status} ({code}): {message}")]
    Stripe { status: u16, code: String, message: String },
    /// Stripe could not be reached or answered something unreadable.
    #[error("Stripe unreachable: {0}")]
    Unreachable(String),
    #[error("webhook signature: {0}")]
    Signature(#[from] SignatureError),
    /// A webhook body or Stripe object we cannot read.
    #[error("{0}")]
    Malformed(String),
    /// Input from a user that cannot be acted on.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Db(#[from] j1msky_db::DbError),
    #[error(transparent)]
    Accounts(#[from] j1msky_accounts::AccountsError),
}

impl From<sqlx::Error> for BillingError {
    fn from(e: sqlx::Error) -> Self {
        BillingError::Db(j1msky_db::DbError::Sqlx(e))
    }
}

impl BillingError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        BillingError::Invalid { field, message: message.into() }
    }
}
