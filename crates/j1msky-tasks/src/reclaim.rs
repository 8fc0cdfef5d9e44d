//! Taking back the tasks of a process that died, without waiting for their leases.

use j1msky_db::Db;

use crate::TaskError;

/// Makes every running task claimable now. Only for a process that knows it is the sole
/// user of the database (it holds a SQLite database's limits, so no other process may
/// run beside it): any task still marked running was claimed by a process that died
/// without finishing it, and waiting out its lease would only delay the customer.
/// Returns how many tasks were taken back.
pub async fn reclaim_abandoned(db: &Db, now: i64) -> Result<u64, TaskError> {
    let done = sqlx::query("UPDATE tasks SET lease_until = $1 WHERE state = 'running' AND lease_until >= $1")
        .bind(now - 1)
        .execute(db.pool())
        .await?;
    if done.rows_affected() > 0 {
        tracing::warn!(tasks = done.rows_affected(), "taking back the running tasks of a process that died");
    }
    Ok(done.rows_affected())
}
