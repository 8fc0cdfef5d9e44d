use thiserror::Error;

/// What can go wrong with accounts; the web layer maps each to an HTTP status.
#[derive(Debug, Error)]
pub enum AccountsError {
    /// Missing, or belonging to another customer: the two are indistinguishable on purpose.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("wrong email or password")]
    BadCredentials,
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: i64 },
    #[error(transparent)]
    Db(#[from] j1msky_db::DbError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for AccountsError {
    fn from(e: sqlx::Error) -> Self {
        AccountsError::Db(j1msky_db::DbError::Sqlx(e))
    }
}

impl AccountsError {
    /// Shorthand for a field error.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AccountsError::Invalid { field, message: message.into() }
    }
}
