//! The customers behind a customer tile of the board (the drill-down): a month's
//! signups with their activation, the customers who reached a funnel stage, the NPS
//! answers. At most [`BEHIND_MAX`] rows, in a stable order.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::rates;
use super::rollup::STAGES;
use crate::figures::{Behind, Filter};
use crate::{Ctx, InsightsError, Month};

/// Rows a drill-down lists at most.
pub const BEHIND_MAX: i64 = 500;

/// A customer tile a drill-down can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tile {
    /// The month's signup cohort; value: hours to the first success within the window, or −1.
    Signups,
    /// The customers who reached a funnel stage in the month; value: hours from the
    /// previous stage (0 when skipped or for leads).
    Lead,
    Qualified,
    Trial,
    Paid,
    /// The month's NPS answers; value: the score.
    Nps,
}

impl Tile {
    fn stage(self) -> Option<usize> {
        match self {
            Tile::Lead => Some(0),
            Tile::Qualified => Some(1),
            Tile::Trial => Some(2),
            Tile::Paid => Some(3),
            Tile::Signups | Tile::Nps => None,
        }
    }
}

/// The customers behind `tile` in `month`, oldest first.
pub async fn behind(ctx: &Ctx, month: Month, tile: Tile, filter: &Filter) -> Result<Vec<Behind>, InsightsError> {
    let (start, end) = month.bounds(ctx.tz());
    let plan = filter.plan.as_deref();
    let plan_sql = super::read::plan_clause(plan, "p.", 4);
    let sql = match (tile, tile.stage()) {
        (Tile::Nps, _) => format!(
            "SELECT p.customer_id, c.name, p.plan, n.score, n.answered_at FROM insights_nps n
             JOIN insights_people p ON p.customer_id = n.customer_id JOIN customers c ON c.id = p.customer_id
             WHERE n.answered_at >= $1 AND n.answered_at < $2{plan_sql} ORDER BY n.answered_at, n.survey_id LIMIT $3"
        ),
        (_, Some(i)) => {
            let col = STAGES[i].1;
            let from = if i == 0 { col } else { STAGES[i - 1].1 };
            format!(
                "SELECT p.customer_id, c.name, p.plan, p.{col} - COALESCE(p.{from}, p.{col}), p.{col}
                 FROM insights_people p JOIN customers c ON c.id = p.customer_id
                 WHERE p.{col} >= $1 AND p.{col} < $2{plan_sql} ORDER BY p.{col}, p.customer_id LIMIT $3"
            )
        }
        _ => format!(
            "SELECT p.customer_id, c.name, p.plan, COALESCE(p.activated_at - p.created_at, -1), p.created_at
             FROM insights_people p JOIN customers c ON c.id = p.customer_id
             WHERE p.created_at >= $1 AND p.created_at < $2{plan_sql} ORDER BY p.created_at, p.customer_id LIMIT $3"
        ),
    };
    let mut q = sqlx::query(&sql).bind(start).bind(end).bind(BEHIND_MAX);
    if let Some(p) = super::read::bound_plan(plan) {
        q = q.bind(p);
    }
    let rows = q.fetch_all(ctx.db.pool()).await?;
    rows.iter()
        .map(|r| {
            let raw: i64 = r.try_get(3)?;
            let (value, detail) = match tile {
                Tile::Nps => (raw, group(raw).to_string()),
                Tile::Signups if raw < 0 => (-1, "not activated".to_string()),
                Tile::Signups => (rates::hours(raw), format!("first task succeeded after {} h", rates::hours(raw))),
                Tile::Lead => (0, "became a lead".to_string()),
                _ if raw == 0 => (0, "skipped the previous stage".to_string()),
                _ => (rates::hours(raw), format!("{} h after the previous stage", rates::hours(raw))),
            };
            Ok(Behind { customer_id: r.try_get(0)?, name: r.try_get(1)?, plan: r.try_get(2)?, value, detail })
        })
        .collect()
}

fn group(score: i64) -> &'static str {
    match score {
        9.. => "promoter",
        7..=8 => "passive",
        _ => "detractor",
    }
}
