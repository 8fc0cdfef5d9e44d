//! The month's numbers read from the split's rollups (`split`): the sums per (team,
//! model, plan) and the lowest customer margins, a few hundred rows however many
//! customers were active.

use sqlx::Row;

use super::data::{Piece, UNATTRIBUTED};
use crate::figures::{Filter, MarginRow};
use crate::{Ctx, InsightsError, Month};

/// The month's pieces summed per (team, model, plan), the plan in `customer`: one pass
/// gives the totals, the teams, the models and the plans.
pub async fn by_team_model_plan(ctx: &Ctx, month: Month, filter: &Filter) -> Result<Vec<Piece>, InsightsError> {
    let rows = sqlx::query(
        "SELECT team, model, plan, subscription_micros, refunds_micros, charge_micros, cost_micros, calls,
                completed, failed, fees_micros
         FROM insights_split WHERE month = $1 AND pieces > 0 AND ($2 = '' OR team = $2) AND ($3 = '' OR plan = $3)",
    )
    .bind(month.to_string())
    .bind(filter.team.clone().unwrap_or_default())
    .bind(filter.plan.clone().unwrap_or_default())
    .fetch_all(ctx.db.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(Piece {
            team: r.try_get(0)?,
            model: r.try_get(1)?,
            customer: r.try_get(2)?,
            subscription_micros: r.try_get(3)?,
            refunds_micros: r.try_get(4)?,
            charge_micros: r.try_get(5)?,
            cost_micros: r.try_get(6)?,
            calls: r.try_get(7)?,
            completed: r.try_get(8)?,
            failed: r.try_get(9)?,
            fees_micros: r.try_get(10)?,
        });
    }
    Ok(out)
}

/// The `limit` customers with the lowest margin in the month (ties by id), with their
/// plan key: the first rows of an index range of `insights_margins`.
pub async fn worst_customers(
    ctx: &Ctx,
    month: Month,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<(MarginRow, String)>, InsightsError> {
    // Two statements, so each range has its index (an `OR` on the plan would not).
    let plan = if filter.plan.is_some() { "AND m.plan = $3" } else { "AND $3 = ''" };
    let sql = format!(
        "SELECT m.customer_id, c.name, m.plan, m.revenue_micros, m.cost_micros, m.margin_micros, m.completed
         FROM insights_margins m LEFT JOIN customers c ON c.id = m.customer_id
         WHERE m.month = $1 AND m.team = $2 {plan}
         ORDER BY m.margin_micros, m.customer_id LIMIT {}",
        i64::try_from(limit).unwrap_or(i64::MAX)
    );
    let rows = sqlx::query(&sql)
        .bind(month.to_string())
        .bind(filter.team.clone().unwrap_or_default())
        .bind(filter.plan.clone().unwrap_or_default())
        .fetch_all(ctx.db.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name: Option<String> = r.try_get(1)?;
        let revenue: i64 = r.try_get(3)?;
        let margin: i64 = r.try_get(5)?;
        let row = MarginRow {
            key: r.try_get(0)?,
            label: name.filter(|n| !n.is_empty()).unwrap_or_else(|| UNATTRIBUTED.to_string()),
            revenue_micros: revenue,
            cost_micros: r.try_get(4)?,
            margin_micros: margin,
            margin_bp: super::data::bp(margin, revenue),
            tasks: r.try_get(6)?,
        };
        out.push((row, r.try_get(2)?));
    }
    Ok(out)
}
