//! Revenue, model cost, margins and task outcomes per month, from rollups kept by the
//! consumer `insights.usage` (task outcomes, metered API days, paid invoices, refunds)
//! and rebuilt from the source tables by [`rebuild`]. Definitions and the split rule of
//! subscription revenue across teams and models: `docs/KPIS.md`.

use sqlx::Row;

use crate::figures::{Behind, Filter, MarginRow, TeamTimes, Usage};
use crate::{Ctx, InsightsError, Month};

mod consumer;
pub mod data;
mod gather;
pub mod parts;
mod rebuild;
mod split;
mod sql;
mod write;

pub use consumer::{on_event, CONSUMER, KINDS};
pub(crate) use gather::gather;
pub(crate) use rebuild::{clear_direct, write_direct};

/// How many customers `Usage::by_customer` and [`behind_margin`] list (lowest margin first).
pub const CUSTOMER_ROWS: usize = 200;

/// Refuses a filter naming a plan or team that does not exist, saying which: a typo
/// would otherwise show an empty month as if it were true.
pub fn check_filter(ctx: &Ctx, filter: &Filter) -> Result<(), InsightsError> {
    validate_filter(&ctx.catalogue, filter)
}

/// The plans and teams a filter may name: the catalogue's, `pay-per-task` (customers
/// without a plan), `api` (direct API calls, no team) and `unattributed` (revenue
/// billing has not linked to a customer yet), each a row of the margin tables.
pub fn filter_choices(catalogue: &j1msky_core::catalogue::Catalogue) -> (Vec<String>, Vec<String>) {
    let mut plans: Vec<String> = catalogue.plans.keys().cloned().collect();
    plans.extend([data::PAY_PER_TASK.to_string(), data::UNATTRIBUTED.to_string()]);
    let mut teams: Vec<String> = catalogue.teams.keys().cloned().collect();
    teams.extend([parts::API_TEAM.to_string(), data::UNATTRIBUTED.to_string()]);
    (plans, teams)
}

/// [`check_filter`] against a catalogue (the CLI and the board check what they are asked
/// for before reading anything).
pub fn validate_filter(catalogue: &j1msky_core::catalogue::Catalogue, filter: &Filter) -> Result<(), InsightsError> {
    let (plans, teams) = filter_choices(catalogue);
    if let Some(plan) = filter.plan.as_ref().filter(|p| !plans.contains(p)) {
        return Err(InsightsError::invalid("plan", format!("`{plan}` is not a plan: one of {}", plans.join(", "))));
    }
    if let Some(team) = filter.team.as_ref().filter(|t| !teams.contains(t)) {
        return Err(InsightsError::invalid("team", format!("`{team}` is not a team: one of {}", teams.join(", "))));
    }
    Ok(())
}

/// Revenue, cost, margins and task outcomes of `month`, grouped in the database.
pub async fn month(ctx: &Ctx, month: Month, filter: &Filter) -> Result<Usage, InsightsError> {
    check_filter(ctx, filter)?;
    let pieces = sql::by_team_model_plan(ctx, month, filter).await?;
    let worst = sql::worst_customers(ctx, month, filter, CUSTOMER_ROWS).await?;
    let by_plan = data::rows(&pieces, |p| p.customer.clone(), label, false);
    let mut usage = assemble(&pieces, by_plan, worst.into_iter().map(|(row, _)| row).collect());
    usage.completion = completion(ctx, month, filter).await?;
    Ok(usage)
}

/// The month's totals, plans, teams and models without the customers and completion
/// times: what the trailing months of LTV need, from a few hundred rows.
pub async fn totals(ctx: &Ctx, month: Month, filter: &Filter) -> Result<Usage, InsightsError> {
    check_filter(ctx, filter)?;
    let pieces = sql::by_team_model_plan(ctx, month, filter).await?;
    let by_plan = data::rows(&pieces, |p| p.customer.clone(), label, false);
    Ok(assemble(&pieces, by_plan, Vec::new()))
}

/// Each customer's margin in `month`, lowest first, at most [`CUSTOMER_ROWS`].
pub async fn by_customer(ctx: &Ctx, month: Month, filter: &Filter) -> Result<Vec<MarginRow>, InsightsError> {
    check_filter(ctx, filter)?;
    Ok(sql::worst_customers(ctx, month, filter, CUSTOMER_ROWS).await?.into_iter().map(|(row, _)| row).collect())
}

/// The month's numbers from data in memory (everything but the completion times), with
/// the first [`CUSTOMER_ROWS`] customers: what the what-if reprices.
pub fn compute(data: &data::MonthData, filter: &Filter) -> Usage {
    let mut usage = compute_all(data, filter);
    usage.by_customer.truncate(CUSTOMER_ROWS);
    usage
}

/// [`compute`] with every customer.
pub fn compute_all(data: &data::MonthData, filter: &Filter) -> Usage {
    let pieces = data::pieces(data, filter.team.as_deref());
    let label_of = |id: &str| data.customers.get(id).map(|c| c.name.clone()).filter(|n| !n.is_empty());
    let by_customer = data::rows(&pieces, |p| p.customer.clone(), |k| label_of(k).unwrap_or_else(|| label(k)), false);
    let plan_of = |p: &data::Piece| data.customers.get(&p.customer).map(|c| c.plan.clone()).unwrap_or_default();
    let by_plan = data::rows(&pieces, plan_of, label, false);
    assemble(&pieces, by_plan, by_customer)
}

/// Totals, teams and models from `pieces` (of any grouping finer than team and model).
fn assemble(pieces: &[data::Piece], by_plan: Vec<MarginRow>, by_customer: Vec<MarginRow>) -> Usage {
    let sum = |f: fn(&data::Piece) -> i64| pieces.iter().map(f).sum::<i64>();
    let subscription = sum(|p| p.subscription_micros);
    let refunds = sum(|p| p.refunds_micros);
    let charges = sum(|p| p.charge_micros);
    let cost = sum(|p| p.cost_micros);
    let completed = sum(|p| p.completed);
    let failed = sum(|p| p.failed);
    // Cost per completed task counts the tasks' cost, not direct API days'.
    let task_cost: i64 = pieces.iter().filter(|p| p.team != parts::API_TEAM).map(|p| p.cost_micros).sum();
    let fees = sum(|p| p.fees_micros);
    let revenue = subscription + charges - refunds;
    let margin = revenue - cost - fees;
    Usage {
        subscription_revenue_cents: subscription / data::CENT,
        usage_revenue_cents: charges / data::CENT,
        refunds_cents: refunds / data::CENT,
        revenue_micros: revenue,
        model_cost_micros: cost,
        // Known once billing has read them from Stripe's balance transactions; a month
        // without any booked is unknown, not free.
        stripe_fees_micros: (fees != 0).then_some(fees),
        gross_margin_micros: margin,
        gross_margin_bp: data::bp(margin, revenue),
        tasks_completed: completed,
        tasks_failed: failed,
        success_rate_bp: data::bp(completed, completed + failed),
        cost_per_completed_task_micros: (completed > 0).then(|| task_cost / completed),
        by_customer,
        by_plan,
        by_team: data::rows(pieces, |p| p.team.clone(), label, false),
        by_model: data::rows(pieces, |p| p.model.clone(), label, true),
        completion: Vec::new(),
    }
}

fn label(key: &str) -> String {
    if key.is_empty() {
        data::UNATTRIBUTED.to_string()
    } else {
        key.to_string()
    }
}

/// Completion time (queued → finished) of the month's succeeded tasks per team: exact
/// nearest-rank median and p90, read from the per-task rollup's index.
pub async fn completion(ctx: &Ctx, month: Month, filter: &Filter) -> Result<Vec<TeamTimes>, InsightsError> {
    let m = month.to_string();
    let pool = ctx.db.pool();
    // The plan is kept on each task's row (moved when the customer's plan changes) and at
    // the end of each entry of `insights_tasks_times` (migration 0044), so a plan's times
    // are read inside the all-plans range without a row lookup; two statements, since an
    // `OR` on the plan would lose the index.
    let plan_bind = filter.plan.clone().unwrap_or_default();
    let guard = if filter.plan.is_some() { "AND t.plan = $3" } else { "AND $3 = ''" };
    let teams: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT t.team, COUNT(*) FROM insights_tasks t
         WHERE t.month = $1 AND t.outcome = 'succeeded' AND ($2 = '' OR t.team = $2) {guard}
         GROUP BY t.team ORDER BY t.team"
    ))
    .bind(&m)
    .bind(filter.team.clone().unwrap_or_default())
    .bind(&plan_bind)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(teams.len());
    for (team, n) in teams {
        let at = |rank: i64| {
            let sql = format!(
                "SELECT t.duration_ms FROM insights_tasks t
                 WHERE t.month = $1 AND t.outcome = 'succeeded' AND t.team = $2 {guard}
                 ORDER BY t.duration_ms LIMIT 1 OFFSET $4"
            );
            let (m, team, plan_bind) = (m.clone(), team.clone(), plan_bind.clone());
            async move {
                let row =
                    sqlx::query(&sql).bind(m).bind(team).bind(plan_bind).bind(rank - 1).fetch_optional(pool).await?;
                Ok::<i64, InsightsError>(match row {
                    Some(r) => r.try_get(0)?,
                    None => 0,
                })
            }
        };
        // Nearest rank: the ⌈p·n⌉-th smallest.
        let median_ms = at((n + 1) / 2).await?;
        let p90_ms = at((9 * n + 9) / 10).await?;
        out.push(TeamTimes { team, tasks: n, median_ms, p90_ms });
    }
    Ok(out)
}

/// The customers with the lowest margin in `month` first (loss-makers), at most
/// [`CUSTOMER_ROWS`].
pub async fn behind_margin(ctx: &Ctx, month: Month, filter: &Filter) -> Result<Vec<Behind>, InsightsError> {
    check_filter(ctx, filter)?;
    let worst = sql::worst_customers(ctx, month, filter, CUSTOMER_ROWS).await?;
    Ok(worst
        .into_iter()
        .map(|(r, plan)| Behind {
            detail: {
                // What the margin leaves out besides model cost: Stripe's fees.
                let fees = r.revenue_micros - r.cost_micros - r.margin_micros;
                if fees == 0 {
                    format!("revenue {} µ$, model cost {} µ$", r.revenue_micros, r.cost_micros)
                } else {
                    format!("revenue {} µ$, model cost {} µ$, Stripe fees {fees} µ$", r.revenue_micros, r.cost_micros)
                }
            },
            customer_id: r.key,
            name: r.label,
            plan: Some(plan),
            value: r.margin_micros,
        })
        .collect())
}

/// This module's event consumers (rollups kept up to date).
pub fn consumers(ctx: &Ctx) -> Vec<j1msky_db::consumers::Consumer> {
    vec![consumer::consumer(ctx.tz())]
}

/// Recomputes this module's rollups from the source tables.
pub async fn rebuild(ctx: &Ctx) -> Result<(), InsightsError> {
    rebuild::rebuild(ctx).await
}
