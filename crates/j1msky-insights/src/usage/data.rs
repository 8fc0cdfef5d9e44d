//! One month's rollups in memory, and the margin rows computed from them. The what-if
//! reprices this same data and runs the same computation, so actual and would-have
//! numbers cannot follow different rules.
//!
//! The split rule (`docs/KPIS.md`): a customer's subscription revenue and refunds of the
//! month are shared among its teams in proportion to their model cost, and each team's
//! revenue (its share plus its pay-per-task charges) among the team's models in
//! proportion to their cost. Without cost, the share goes to `unattributed`. Shares are
//! exact: the cumulative-floor split hands out every micro-dollar.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::kpis::{Filter, MarginRow};
use crate::{Ctx, InsightsError, Month};

/// Where revenue without model cost goes.
pub const UNATTRIBUTED: &str = "unattributed";
/// The plan key of customers without a plan (they pay per task).
pub const PAY_PER_TASK: &str = "pay-per-task";
/// Micro-USD per cent.
pub const CENT: i64 = 10_000;

/// One model's ledger within a customer's team.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelUse {
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

/// One customer's team in the month.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamUse {
    pub completed: i64,
    pub failed: i64,
    pub cost_micros: i64,
    pub charge_micros: i64,
    pub models: BTreeMap<String, ModelUse>,
}

/// One customer in the month.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerMonth {
    pub name: String,
    /// The customer's plan today (`pay-per-task` without one).
    pub plan: String,
    pub teams: BTreeMap<String, TeamUse>,
    /// Paid subscription invoices per invoice plan, cents.
    pub subscription_cents: BTreeMap<String, i64>,
    /// Positive.
    pub refunds_cents: i64,
}

impl CustomerMonth {
    pub fn subscription_total_cents(&self) -> i64 {
        self.subscription_cents.values().sum()
    }

    pub fn cost_micros(&self) -> i64 {
        self.teams.values().map(|t| t.cost_micros).sum()
    }
}

/// The month's rollups, narrowed to the filter's plan (the team is applied when computing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthData {
    pub customers: BTreeMap<String, CustomerMonth>,
}

fn plan_key(plan: Option<String>, known: bool) -> String {
    match (plan, known) {
        (Some(p), _) => p,
        (None, true) => PAY_PER_TASK.into(),
        (None, false) => UNATTRIBUTED.into(),
    }
}

/// Reads `month`'s rollups, keeping the customers on `filter.plan` when it is set.
pub async fn load(ctx: &Ctx, month: Month, filter: &Filter) -> Result<MonthData, InsightsError> {
    let m = month.to_string();
    let pool = ctx.db.pool();
    let mut data = MonthData::default();
    let usage = sqlx::query(
        "SELECT u.customer_id, u.team, u.tasks_completed, u.tasks_failed, u.cost_micros, u.charge_micros,
                c.name, c.plan, c.id
         FROM insights_usage u LEFT JOIN customers c ON c.id = u.customer_id WHERE u.month = $1",
    )
    .bind(&m)
    .fetch_all(pool)
    .await?;
    for r in usage {
        let known = r.try_get::<Option<String>, _>(8)?.is_some();
        let c = data.customers.entry(r.try_get(0)?).or_default();
        c.name = r.try_get::<Option<String>, _>(6)?.unwrap_or_default();
        c.plan = plan_key(r.try_get(7)?, known);
        let t = c.teams.entry(r.try_get(1)?).or_default();
        t.completed += r.try_get::<i64, _>(2)?;
        t.failed += r.try_get::<i64, _>(3)?;
        t.cost_micros += r.try_get::<i64, _>(4)?;
        t.charge_micros += r.try_get::<i64, _>(5)?;
    }
    let models = sqlx::query(
        "SELECT customer_id, team, model, calls, input_tokens, output_tokens, cost_micros
         FROM insights_model_cost WHERE month = $1",
    )
    .bind(&m)
    .fetch_all(pool)
    .await?;
    for r in models {
        let c = data.customers.entry(r.try_get(0)?).or_default();
        let t = c.teams.entry(r.try_get(1)?).or_default();
        let u = t.models.entry(r.try_get(2)?).or_default();
        u.calls += r.try_get::<i64, _>(3)?;
        u.input_tokens += r.try_get::<i64, _>(4)?;
        u.output_tokens += r.try_get::<i64, _>(5)?;
        u.cost_micros += r.try_get::<i64, _>(6)?;
    }
    let revenue = sqlx::query(
        "SELECT r.customer_id, r.plan, r.subscription_cents, r.refunds_cents, c.name, c.plan, c.id
         FROM insights_revenue r LEFT JOIN customers c ON c.id = r.customer_id WHERE r.month = $1",
    )
    .bind(&m)
    .fetch_all(pool)
    .await?;
    for r in revenue {
        let known = r.try_get::<Option<String>, _>(6)?.is_some();
        let c = data.customers.entry(r.try_get(0)?).or_default();
        c.name = r.try_get::<Option<String>, _>(4)?.unwrap_or_default();
        c.plan = plan_key(r.try_get(5)?, known);
        let plan: String = r.try_get(1)?;
        *c.subscription_cents.entry(plan).or_default() += r.try_get::<i64, _>(2)?;
        c.refunds_cents += r.try_get::<i64, _>(3)?;
    }
    // Rows that cancel out (a task counted and taken back) are no customer's month.
    data.customers.retain(|_, c| {
        c.teams.retain(|_, t| {
            t.models.retain(|_, u| *u != ModelUse::default());
            t.completed != 0 || t.failed != 0 || t.cost_micros != 0 || t.charge_micros != 0 || !t.models.is_empty()
        });
        c.subscription_cents.retain(|_, v| *v != 0);
        !c.teams.is_empty() || !c.subscription_cents.is_empty() || c.refunds_cents != 0
    });
    if let Some(plan) = &filter.plan {
        data.customers.retain(|_, c| &c.plan == plan);
    }
    Ok(data)
}

/// Splits `amount` in proportion to `weights` (all ≥ 0, sum > 0) so the parts add up to
/// `amount` exactly: part k is ⌊amount·W≤k / W⌋ − ⌊amount·W<k / W⌋.
pub fn split(amount: i64, weights: &[i64]) -> Vec<i64> {
    let total: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    if total == 0 {
        return weights.iter().map(|_| 0).collect();
    }
    let mut out = Vec::with_capacity(weights.len());
    let mut cumulative: i128 = 0;
    let mut given: i128 = 0;
    for w in weights {
        cumulative += i128::from(*w);
        let upto = (i128::from(amount) * cumulative).div_euclid(total);
        out.push(i64::try_from(upto - given).unwrap_or(0));
        given = upto;
    }
    out
}

/// One piece of the month: a customer's team's model, with its revenue share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Piece {
    pub customer: String,
    pub team: String,
    pub model: String,
    /// Subscription revenue share, micro-USD.
    pub subscription_micros: i64,
    /// Refund share, micro-USD, positive.
    pub refunds_micros: i64,
    pub charge_micros: i64,
    pub cost_micros: i64,
    /// Completed tasks (on the team's first piece only, so sums count each task once).
    pub completed: i64,
    pub failed: i64,
    /// Ledger calls on the piece's model.
    pub calls: i64,
}

impl Piece {
    pub fn revenue(&self) -> i64 {
        self.subscription_micros + self.charge_micros - self.refunds_micros
    }
}

/// Every piece of the month after the split rule, narrowed to `team` when given.
pub fn pieces(data: &MonthData, team: Option<&str>) -> Vec<Piece> {
    let mut out = Vec::new();
    for (id, c) in &data.customers {
        let mut teams: Vec<(&str, &TeamUse)> = c.teams.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let empty = TeamUse::default();
        let no_cost = teams.iter().all(|(_, t)| t.cost_micros <= 0);
        if no_cost {
            teams.push((UNATTRIBUTED, &empty));
        }
        let weights: Vec<i64> = teams
            .iter()
            .map(|(name, t)| if no_cost { i64::from(*name == UNATTRIBUTED) } else { t.cost_micros.max(0) })
            .collect();
        let subs = split(c.subscription_total_cents() * CENT, &weights);
        let refunds = split(c.refunds_cents * CENT, &weights);
        for (k, (name, t)) in teams.iter().enumerate() {
            if team.is_some_and(|want| want != *name) {
                continue;
            }
            let models: Vec<(&str, &ModelUse)> = t.models.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let mweights: Vec<i64> = models.iter().map(|(_, u)| u.cost_micros.max(0)).collect();
            let mut piece = Piece {
                customer: id.clone(),
                team: (*name).to_string(),
                completed: t.completed,
                failed: t.failed,
                ..Piece::default()
            };
            if mweights.iter().all(|w| *w == 0) {
                // No cost to split by: the team's revenue is one model-less piece.
                piece.model = UNATTRIBUTED.into();
                piece.subscription_micros = subs[k];
                piece.refunds_micros = refunds[k];
                piece.charge_micros = t.charge_micros;
                piece.cost_micros = t.cost_micros;
                out.push(piece);
                continue;
            }
            let s = split(subs[k], &mweights);
            let r = split(refunds[k], &mweights);
            let ch = split(t.charge_micros, &mweights);
            for (j, (model, u)) in models.iter().enumerate() {
                let mut p = piece.clone();
                if j > 0 {
                    p.completed = 0;
                    p.failed = 0;
                }
                p.model = (*model).to_string();
                p.subscription_micros = s[j];
                p.refunds_micros = r[j];
                p.charge_micros = ch[j];
                p.cost_micros = u.cost_micros;
                p.calls = u.calls;
                out.push(p);
            }
        }
    }
    out
}

/// Margin rows grouped by `key` of each piece, lowest margin first (ties by key); `tasks`
/// counts completed tasks, or with `calls` the ledger calls (per model, where a task's
/// steps may use several).
pub fn rows(
    pieces: &[Piece],
    key: impl Fn(&Piece) -> String,
    label: impl Fn(&str) -> String,
    calls: bool,
) -> Vec<MarginRow> {
    let mut by: BTreeMap<String, MarginRow> = BTreeMap::new();
    for p in pieces {
        let k = key(p);
        let row = by.entry(k.clone()).or_insert_with(|| MarginRow { label: label(&k), key: k, ..MarginRow::default() });
        row.revenue_micros += p.revenue();
        row.cost_micros += p.cost_micros;
        row.tasks += if calls { p.calls } else { p.completed };
    }
    let mut out: Vec<MarginRow> = by
        .into_values()
        .map(|mut r| {
            r.margin_micros = r.revenue_micros - r.cost_micros;
            r.margin_bp = bp(r.margin_micros, r.revenue_micros);
            r
        })
        .collect();
    out.sort_by(|a, b| a.margin_micros.cmp(&b.margin_micros).then_with(|| a.key.cmp(&b.key)));
    out
}

/// `part ÷ whole` in basis points (rounded toward zero); `None` unless `whole` > 0.
pub fn bp(part: i64, whole: i64) -> Option<i64> {
    (whole > 0).then(|| i64::try_from(i128::from(part) * 10_000 / i128::from(whole)).unwrap_or(0))
}
