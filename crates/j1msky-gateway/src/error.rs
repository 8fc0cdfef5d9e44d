//! What a gateway call can end in.

use crate::limits::LimitError;
use crate::policy::RouteError;
use crate::providers::UpstreamError;

/// A gateway failure; the web layer maps each to an HTTP status and an error body.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Route(#[from] RouteError),
    #[error("{0}")]
    Limit(#[from] LimitError),
    /// Every allowed model failed; the last failure.
    #[error("all models failed; last error: {0}")]
    Upstream(UpstreamError),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] j1msky_db::DbError),
    #[error("{0}")]
    Accounts(#[from] j1msky_accounts::AccountsError),
    /// The customer may not use the service now (no plan in force, closed, or unpaid).
    #[error("{0}")]
    NoActivePlan(#[from] j1msky_accounts::access::NoActivePlan),
}

impl From<sqlx::Error> for GatewayError {
    fn from(e: sqlx::Error) -> Self {
        GatewayError::Db(j1msky_db::DbError::Sqlx(e))
    }
}
