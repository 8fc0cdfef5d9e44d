//! The template context of one customer: who they are, links, and their own tasks and
//! spend (all time, the last 7 days, the last 30), with recommendations drawn from them.

use j1msky_core::Money;
use j1msky_tasks::summary::Summary;
use serde_json::{json, Value};
use sqlx::AnyConnection;

use crate::{Ctx, LifecycleError};

const DAY: i64 = 86_400_000_000;

/// The context templates render with for `customer_id` at `now` (same keys as
/// `templates::sample_context`).
pub async fn of_customer(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    customer_id: &str,
    now: i64,
) -> Result<Value, LifecycleError> {
    let c = j1msky_accounts::customers::get_in(conn, customer_id).await?;
    let read = |e: j1msky_tasks::TaskError| LifecycleError::Conflict(format!("reading the customer's tasks: {e}"));
    let all = j1msky_tasks::summary::of_customer(conn, customer_id, 0, now + 1).await.map_err(read)?;
    let week = j1msky_tasks::summary::of_customer(conn, customer_id, now - 7 * DAY, now + 1).await.map_err(read)?;
    let month = j1msky_tasks::summary::of_customer(conn, customer_id, now - 30 * DAY, now + 1).await.map_err(read)?;
    Ok(json!({
        "business": {"name": ctx.catalogue.business.name, "support_email": ctx.catalogue.business.support_email},
        "customer": {"id": c.id, "name": c.name, "plan": c.plan.clone().unwrap_or_else(|| "pay per task".into()), "time_zone": c.time_zone},
        "links": crate::templates::links(&ctx.catalogue, &ctx.base_url),
        "all_time": stats(&all),
        "week": stats(&week),
        "month": stats(&month),
        "recommendations": recommendations(&month, c.chosen_teams.len()),
    }))
}

fn stats(s: &Summary) -> Value {
    json!({
        "total": s.total,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "success_percent": s.success_percent().unwrap_or(0),
        "charged": Money::from_micros(s.charged_micros).to_string(),
        "top_teams": s.top_teams().into_iter().take(3).map(|(team, tasks)| json!({"team": team, "tasks": tasks})).collect::<Vec<_>>(),
    })
}

/// Suggestions from the task mix and spend of the last 30 days.
pub fn recommendations(month: &Summary, teams_chosen: usize) -> Vec<String> {
    let mut out = Vec::new();
    if month.total == 0 {
        out.push("Hand your first task to a team: a short, concrete brief works best.".to_string());
        return out;
    }
    if month.success_percent().is_some_and(|p| p < 80) {
        out.push(format!(
            "{} of {} finished tasks failed this month: clearer briefs with an example of the result you want usually fix that.",
            month.failed,
            month.succeeded + month.failed
        ));
    }
    let top = month.top_teams();
    if let Some((team, n)) = top.first() {
        if top.len() == 1 && teams_chosen > 1 {
            out.push(format!("All {n} tasks went to the {team} team: your other teams are included in your plan too."));
        }
    }
    if month.succeeded > 0 {
        let per_task = month.charged_micros / month.succeeded;
        if per_task >= 1_000_000 {
            out.push(format!(
                "Your tasks cost {} each on average: batching related requests into one task lowers that.",
                Money::from_micros(per_task)
            ));
        }
    }
    if out.is_empty() {
        out.push("Things run smoothly: templates for your recurring tasks will save you time.".to_string());
    }
    out
}
