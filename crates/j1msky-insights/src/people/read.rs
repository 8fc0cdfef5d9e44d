//! The month's activation cohorts, funnel and NPS, read from the rollups (index range
//! counts on `insights_people` and `insights_nps`, so a board over a million customers
//! reads a few thousand index entries, not the customers).

use sqlx::Row;

use super::rates::{self, bp};
use super::rollup::STAGES;
use crate::figures::{Cohort, Funnel, FunnelStage, Nps};
use crate::usage::data::{PAY_PER_TASK, UNATTRIBUTED};
use crate::{Ctx, InsightsError, Month};

/// Signup cohorts shown with a month: it and the five before.
pub const COHORTS: u32 = 6;

/// ` AND <alias>plan = $n` when the filter names a plan of the catalogue; a customer
/// without one for `pay-per-task` (nothing bound); nobody for `unattributed` (revenue
/// billing has not linked to a customer has no customer to count).
pub(super) fn plan_clause(plan: Option<&str>, alias: &str, n: usize) -> String {
    match plan {
        None => String::new(),
        Some(PAY_PER_TASK) => format!(" AND {alias}plan IS NULL"),
        Some(UNATTRIBUTED) => " AND 1 = 0".to_string(),
        Some(_) => format!(" AND {alias}plan = ${n}"),
    }
}

/// The plan to bind for [`plan_clause`] (none for the two that bind nothing).
pub(super) fn bound_plan(plan: Option<&str>) -> Option<&str> {
    plan.filter(|p| *p != PAY_PER_TASK && *p != UNATTRIBUTED)
}

type Query<'a> = sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments<'a>>;

/// `sql` with the month's bounds as `$1`, `$2` and the plan (when filtered) as `$3`.
fn ranged<'a>(sql: &'a str, (start, end): (i64, i64), plan: Option<&'a str>) -> Query<'a> {
    let q = sqlx::query(sql).bind(start).bind(end);
    match bound_plan(plan) {
        Some(p) => q.bind(p),
        None => q,
    }
}

/// Activation of the signup cohorts of `month` and the months before it, oldest first.
pub async fn cohorts(ctx: &Ctx, month: Month, plan: Option<&str>) -> Result<Vec<Cohort>, InsightsError> {
    let mut first = month;
    for _ in 1..COHORTS {
        first = first.prev();
    }
    let sql = format!(
        "SELECT COUNT(*), COUNT(activated_at) FROM insights_people WHERE created_at >= $1 AND created_at < $2{}",
        plan_clause(plan, "", 3)
    );
    let mut out = Vec::new();
    for m in first.through(month) {
        let row = ranged(&sql, m.bounds(ctx.tz()), plan).fetch_one(ctx.db.pool()).await?;
        let customers: i64 = row.try_get(0)?;
        let activated: i64 = row.try_get(1)?;
        out.push(Cohort { month: m, customers, activated, rate_bp: bp(activated, customers) });
    }
    Ok(out)
}

/// Lead → qualified → trial → paid in `month`: who reached each stage in the month,
/// what share of those who reached the previous stage in the month have reached this
/// one (by now), and the median time from the previous stage among those who reached
/// this one in the month and stood in the previous one for a while (skipped: left out).
pub async fn funnel(ctx: &Ctx, month: Month, plan: Option<&str>) -> Result<Funnel, InsightsError> {
    let bounds = month.bounds(ctx.tz());
    let pool = ctx.db.pool();
    let mut stages = Vec::new();
    let mut prev: Option<&str> = None;
    for (name, col, _) in STAGES {
        let sql = format!(
            "SELECT COUNT(*) FROM insights_people WHERE {col} >= $1 AND {col} < $2{}",
            plan_clause(plan, "", 3)
        );
        let entered: i64 = ranged(&sql, bounds, plan).fetch_one(pool).await?.try_get(0)?;
        let (conversion_bp, median_hours_from_previous) = match prev {
            None => (None, None),
            Some(p) => {
                let sql = format!(
                    "SELECT COUNT(*), COUNT({col}) FROM insights_people WHERE {p} >= $1 AND {p} < $2{}",
                    plan_clause(plan, "", 3)
                );
                let row = ranged(&sql, bounds, plan).fetch_one(pool).await?;
                let (cohort, reached): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                let sql = format!(
                    "SELECT {col} - {p} FROM insights_people WHERE {col} >= $1 AND {col} < $2 AND {p} < {col}{}",
                    plan_clause(plan, "", 3)
                );
                let rows = ranged(&sql, bounds, plan).fetch_all(pool).await?;
                let mut waits = rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<Vec<_>, _>>()?;
                (bp(reached, cohort), rates::median(&mut waits).map(rates::hours))
            }
        };
        stages.push(FunnelStage { stage: name.to_string(), entered, conversion_bp, median_hours_from_previous });
        prev = Some(col);
    }
    Ok(Funnel { stages })
}

/// NPS of the answers given in `month`; `None` without answers.
pub async fn nps(ctx: &Ctx, month: Month, plan: Option<&str>) -> Result<Option<Nps>, InsightsError> {
    let join = if plan.is_some() { " JOIN insights_people p ON p.customer_id = n.customer_id" } else { "" };
    let sql = format!(
        "SELECT COALESCE(SUM(CASE WHEN n.score >= 9 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN n.score IN (7, 8) THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN n.score <= 6 THEN 1 ELSE 0 END), 0)
         FROM insights_nps n{join} WHERE n.answered_at >= $1 AND n.answered_at < $2{}",
        plan_clause(plan, "p.", 3)
    );
    let row = ranged(&sql, month.bounds(ctx.tz()), plan).fetch_one(ctx.db.pool()).await?;
    Ok(rates::nps(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}
