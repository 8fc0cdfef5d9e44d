//! The month's numbers computed in the database: the split rule of `data::pieces` in SQL
//! (window functions over each customer's (team, model) pairs), so only grouped rows
//! leave it, however many customers there are. `tests/usage.rs` checks it against the
//! in-memory computation the what-if uses.

use sqlx::Row;

use super::data::{Piece, UNATTRIBUTED};
use crate::kpis::{Filter, MarginRow};
use crate::{Ctx, InsightsError, Month};

/// The pieces of month `$1` with their customer's plan key and name; `$2` narrows to a
/// team and `$3` to a plan ('' for all). PostgreSQL's SUM of BIGINT is NUMERIC, hence the
/// casts (integer division must stay integer).
const PIECES: &str = "
WITH mc AS (SELECT customer_id, team, model, cost_micros AS cost, calls FROM insights_model_cost
            WHERE month = $1 AND cost_micros > 0),
rv AS (SELECT customer_id, CAST(SUM(subscription_cents) AS BIGINT) AS s, CAST(SUM(refunds_cents) AS BIGINT) AS f
       FROM insights_revenue WHERE month = $1 GROUP BY customer_id),
us AS (SELECT customer_id, team, charge_micros AS ch, tasks_completed AS done, tasks_failed AS failed
       FROM insights_usage WHERE month = $1),
w AS (SELECT mc.customer_id, mc.team, mc.model, mc.cost, mc.calls, COALESCE(rv.s, 0) AS s, COALESCE(rv.f, 0) AS f,
             COALESCE(iu.charge_micros, 0) / 10000 AS chc,
             COALESCE(iu.charge_micros, 0) - COALESCE(iu.charge_micros, 0) / 10000 * 10000 AS rem,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.customer_id ORDER BY mc.team, mc.model
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS cc,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.customer_id) AS BIGINT) AS tc,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.customer_id, mc.team ORDER BY mc.model
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS ct,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.customer_id, mc.team) AS BIGINT) AS tt
      FROM mc LEFT JOIN rv ON rv.customer_id = mc.customer_id
              LEFT JOIN insights_usage iu ON iu.month = $1 AND iu.customer_id = mc.customer_id
                                          AND iu.team = mc.team),
p AS (SELECT customer_id, team, model, cost, calls,
             (s * cc / tc - s * (cc - cost) / tc) * 10000 AS sub,
             (f * cc / tc - f * (cc - cost) / tc) * 10000 AS ref,
             (chc * ct / tt - chc * (ct - cost) / tt) * 10000 + CASE WHEN ct = tt THEN rem ELSE 0 END AS chg,
             CAST(0 AS BIGINT) AS done, CAST(0 AS BIGINT) AS failed
      FROM w
      UNION ALL
      SELECT customer_id, 'unattributed', 'unattributed', 0, 0, s * 10000, f * 10000, 0, 0, 0 FROM rv
      WHERE (s <> 0 OR f <> 0) AND NOT EXISTS (SELECT 1 FROM insights_model_cost x WHERE x.month = $1
                                                 AND x.customer_id = rv.customer_id AND x.cost_micros > 0)
      UNION ALL
      SELECT customer_id, team, 'unattributed', 0, 0, 0, 0, ch, 0, 0 FROM us
      WHERE ch <> 0 AND NOT EXISTS (SELECT 1 FROM insights_model_cost x WHERE x.month = $1
                                    AND x.customer_id = us.customer_id AND x.team = us.team AND x.cost_micros > 0)
      UNION ALL
      SELECT customer_id, team, '', 0, 0, 0, 0, 0, done, failed FROM us WHERE done <> 0 OR failed <> 0),
pc AS (SELECT p.*, c.name AS name,
              CASE WHEN c.id IS NULL THEN 'unattributed' WHEN c.plan IS NULL THEN 'pay-per-task' ELSE c.plan END AS plan
       FROM p LEFT JOIN customers c ON c.id = p.customer_id)
SELECT {key}, CAST(SUM(sub) AS BIGINT), CAST(SUM(ref) AS BIGINT), CAST(SUM(chg) AS BIGINT),
       CAST(SUM(cost) AS BIGINT), CAST(SUM(calls) AS BIGINT), CAST(SUM(done) AS BIGINT),
       CAST(SUM(failed) AS BIGINT)
FROM pc WHERE ($2 = '' OR team = $2) AND ($3 = '' OR plan = $3)
GROUP BY {group} {order}";

async fn grouped(
    ctx: &Ctx,
    month: Month,
    filter: &Filter,
    key: &str,
    group: &str,
    order: &str,
    keys: usize,
) -> Result<Vec<(Vec<String>, Piece)>, InsightsError> {
    let sql = PIECES.replace("{key}", key).replace("{group}", group).replace("{order}", order);
    let rows = sqlx::query(&sql)
        .bind(month.to_string())
        .bind(filter.team.clone().unwrap_or_default())
        .bind(filter.plan.clone().unwrap_or_default())
        .fetch_all(ctx.db.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let names = (0..keys)
            .map(|i| Ok(r.try_get::<Option<String>, _>(i)?.unwrap_or_default()))
            .collect::<Result<Vec<String>, sqlx::Error>>()?;
        let piece = Piece {
            subscription_micros: r.try_get(keys)?,
            refunds_micros: r.try_get(keys + 1)?,
            charge_micros: r.try_get(keys + 2)?,
            cost_micros: r.try_get(keys + 3)?,
            calls: r.try_get(keys + 4)?,
            completed: r.try_get(keys + 5)?,
            failed: r.try_get(keys + 6)?,
            ..Piece::default()
        };
        out.push((names, piece));
    }
    Ok(out)
}

/// The month's pieces summed per (team, model, plan), the plan in `customer`: one pass
/// gives the totals, the teams, the models and the plans.
pub async fn by_team_model_plan(ctx: &Ctx, month: Month, filter: &Filter) -> Result<Vec<Piece>, InsightsError> {
    let rows = grouped(ctx, month, filter, "team, model, plan", "team, model, plan", "", 3).await?;
    Ok(rows
        .into_iter()
        .map(|(k, p)| Piece { team: k[0].clone(), model: k[1].clone(), customer: k[2].clone(), ..p })
        .collect())
}

/// The `limit` customers with the lowest margin in the month (ties by id).
pub async fn worst_customers(
    ctx: &Ctx,
    month: Month,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<(MarginRow, String)>, InsightsError> {
    let order = format!(
        "ORDER BY SUM(sub) - SUM(ref) + SUM(chg) - SUM(cost), customer_id LIMIT {}",
        i64::try_from(limit).unwrap_or(i64::MAX)
    );
    let rows = grouped(ctx, month, filter, "customer_id, MAX(name), MAX(plan)", "customer_id", &order, 3).await?;
    Ok(rows
        .into_iter()
        .map(|(k, p)| {
            let revenue = p.revenue();
            let margin = revenue - p.cost_micros;
            let label = if k[1].is_empty() { UNATTRIBUTED.to_string() } else { k[1].clone() };
            let row = MarginRow {
                key: k[0].clone(),
                label,
                revenue_micros: revenue,
                cost_micros: p.cost_micros,
                margin_micros: margin,
                margin_bp: super::data::bp(margin, revenue),
                tasks: p.completed,
            };
            (row, k[2].clone())
        })
        .collect())
}
