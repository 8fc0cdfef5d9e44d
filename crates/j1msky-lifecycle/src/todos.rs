//! Staff to-dos: due date, customer, reason, assignee, done.

use j1msky_db::Backend;
use sqlx::AnyConnection;

use crate::LifecycleError;

/// A to-do to open.
#[derive(Debug, Clone)]
pub struct NewTodo<'a> {
    pub customer_id: Option<&'a str>,
    pub reason: &'a str,
    /// Opening the same key twice opens one to-do (`<enrollment>:<step>`, `trigger:<id>:<customer>:<day>`).
    pub dedupe_key: &'a str,
    pub due_at: i64,
}

/// Opens a to-do inside the caller's transaction; `Ok(None)` when one with this key exists.
pub async fn create(
    _conn: &mut AnyConnection,
    _backend: Backend,
    _todo: &NewTodo<'_>,
    _now: i64,
) -> Result<Option<String>, LifecycleError> {
    Err(LifecycleError::Conflict("todos::create is not built yet".into()))
}
