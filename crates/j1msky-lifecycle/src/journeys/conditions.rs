//! The named conditions of `branch` and `wait_until` steps, evaluated in one place.

use j1msky_core::catalogue::lifecycle::Condition;
use sqlx::AnyConnection;

use crate::LifecycleError;

/// Event kinds that count as activity (a login, an API call, a task).
pub const ACTIVITY_KINDS: [&str; 3] = ["user.logged_in", "customer.active", "task.submitted"];

/// Is `kind` activity?
pub fn is_activity(kind: &str) -> bool {
    ACTIVITY_KINDS.contains(&kind)
}

/// Whether `condition` holds for `customer_id`, whose enrollment started at `since`.
pub async fn holds(
    conn: &mut AnyConnection,
    condition: &str,
    customer_id: &str,
    since: i64,
) -> Result<bool, LifecycleError> {
    let cond = Condition::parse(condition).map_err(|e| LifecycleError::invalid("condition", e))?;
    Ok(match cond {
        Condition::TasksSucceededAtLeast(n) => tasks(conn, customer_id).await?.succeeded >= i64::from(n),
        Condition::NoTasks => tasks(conn, customer_id).await?.total == 0,
        Condition::LimitHit => event_since(conn, customer_id, &["plan.limit_hit"], since).await?,
        Condition::ActivitySinceEnrollment => event_since(conn, customer_id, &ACTIVITY_KINDS, since).await?,
        // The latest answered NPS survey is the one source of the score.
        Condition::NpsAtLeast(n) => crate::surveys::latest_nps(conn, customer_id).await?.is_some_and(|v| v >= n),
        Condition::PlanIn(plans) => {
            let c = j1msky_accounts::customers::get_in(conn, customer_id).await?;
            c.plan.is_some_and(|p| plans.contains(&p))
        }
        Condition::Attribute { name, value } => {
            super::attributes::get(conn, customer_id, &name).await?.is_some_and(|v| v == value)
        }
    })
}

async fn tasks(conn: &mut AnyConnection, customer_id: &str) -> Result<j1msky_tasks::summary::Summary, LifecycleError> {
    j1msky_tasks::summary::of_customer(conn, customer_id, 0, i64::MAX)
        .await
        .map_err(|e| LifecycleError::Conflict(format!("reading the customer's tasks: {e}")))
}

/// Did the customer have an event of one of `kinds` at or after `since`?
async fn event_since(
    conn: &mut AnyConnection,
    customer_id: &str,
    kinds: &[&str],
    since: i64,
) -> Result<bool, LifecycleError> {
    for kind in kinds {
        let row = sqlx::query("SELECT 1 FROM events WHERE customer_id = $1 AND kind = $2 AND created_at >= $3 LIMIT 1")
            .bind(customer_id)
            .bind(*kind)
            .bind(since)
            .fetch_optional(&mut *conn)
            .await?;
        if row.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}
