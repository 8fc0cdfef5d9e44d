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
    conn: &mut AnyConnection,
    _backend: Backend,
    todo: &NewTodo<'_>,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    if todo.reason.trim().is_empty() {
        return Err(LifecycleError::invalid("reason", "a to-do needs a reason"));
    }
    let id = j1msky_core::ids::new_id("todo");
    let inserted = sqlx::query(
        "INSERT INTO lifecycle_todos (id, customer_id, reason, dedupe_key, due_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(&id)
    .bind(todo.customer_id)
    .bind(todo.reason)
    .bind(todo.dedupe_key)
    .bind(todo.due_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok((inserted.rows_affected() == 1).then_some(id))
}
