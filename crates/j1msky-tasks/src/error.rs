//! What submitting, reading or running a task can end in.

/// A task failure; the web layer maps each to an HTTP status and an error body.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown team `{team}`; the teams are: {known}")]
    UnknownTeam { team: String, known: String },
    #[error("the {team} team is not in your plan ({plan}){hint}")]
    TeamNotInPlan { team: String, plan: String, hint: String },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{message}")]
    LimitReached { limit: &'static str, message: String },
    #[error(
        "{waiting} of your tasks are waiting or running, the most one customer may have at once; submit more as \
         they finish"
    )]
    TooManyWaiting { waiting: i64 },
    /// The customer may not use the service now (no plan in force, closed, or unpaid).
    #[error("{0}")]
    NoActivePlan(#[from] j1msky_accounts::access::NoActivePlan),
    #[error("no task `{0}`")]
    NotFound(String),
    #[error("no customer `{0}`")]
    NoCustomer(String),
    #[error("task {id} is already {state} and cannot be cancelled")]
    NotCancellable { id: String, state: String },
    #[error(transparent)]
    Db(#[from] j1msky_db::DbError),
    #[error(transparent)]
    Accounts(#[from] j1msky_accounts::AccountsError),
    #[error("stored task is inconsistent: {0}")]
    Corrupt(String),
}

impl TaskError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> TaskError {
        TaskError::Invalid { field, message: message.into() }
    }
}

impl From<sqlx::Error> for TaskError {
    fn from(e: sqlx::Error) -> Self {
        TaskError::Db(j1msky_db::DbError::Sqlx(e))
    }
}
