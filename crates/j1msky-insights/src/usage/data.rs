//! One month's rollups in memory, and the margin rows computed from them. The what-if
//! reprices this same data and runs the same computation, so actual and would-have
//! numbers cannot follow different rules.
//!
//! The split rule (`docs/KPIS.md`, and [`pieces`]): a customer's subscription revenue and
//! refunds of the month are shared among its (team, model) pairs by model cost; a team's
//! pay-per-task charges among its models by cost. Without cost, a share goes to
//! `unattributed`. Shares are exact: the cumulative split hands out every cent.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::figures::{Filter, MarginRow};
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
    /// What Stripe kept (billing's `stripe_fee` entries), cents, positive.
    pub fees_cents: i64,
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
        "SELECT r.customer_id, r.plan, r.subscription_cents, r.refunds_cents, c.name, c.plan, c.id, r.fees_cents
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
        c.fees_cents += r.try_get::<i64, _>(7)?;
    }
    // Rows that cancel out (a task counted and taken back) are no customer's month.
    data.customers.retain(|_, c| {
        c.teams.retain(|_, t| {
            t.models.retain(|_, u| *u != ModelUse::default());
            t.completed != 0 || t.failed != 0 || t.cost_micros != 0 || t.charge_micros != 0 || !t.models.is_empty()
        });
        c.subscription_cents.retain(|_, v| *v != 0);
        !c.teams.is_empty() || !c.subscription_cents.is_empty() || c.refunds_cents != 0 || c.fees_cents != 0
    });
    if let Some(plan) = &filter.plan {
        data.customers.retain(|_, c| &c.plan == plan);
    }
    Ok(data)
}

/// Share k of `amount` split by `weights` in key order (`before` = the weights before k,
/// `total` = all of them): ⌊A·(before + w)/W⌋ − ⌊A·before/W⌋, division truncating as SQL's
/// does, so the shares add up to `amount` exactly and SQL computes the same.
pub fn share(amount: i64, before: i64, weight: i64, total: i64) -> i64 {
    if total == 0 {
        return 0;
    }
    let (a, b, w, t) = (i128::from(amount), i128::from(before), i128::from(weight), i128::from(total));
    i64::try_from(a * (b + w) / t - a * b / t).unwrap_or(0)
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
    /// Completed tasks (only on a team's task-count piece, model `""`).
    pub completed: i64,
    pub failed: i64,
    /// Ledger calls on the piece's model.
    pub calls: i64,
    /// Share of Stripe's fees, micro-USD, positive.
    pub fees_micros: i64,
}

impl Piece {
    pub fn revenue(&self) -> i64 {
        self.subscription_micros + self.charge_micros - self.refunds_micros
    }

    /// Revenue less model cost and Stripe's fees.
    pub fn margin(&self) -> i64 {
        self.revenue() - self.cost_micros - self.fees_micros
    }
}

/// Every piece of the month after the split rule, narrowed to `team` when given. The
/// customer's subscription revenue and refunds (cents) are split over its (team, model)
/// pairs with cost, in (team, model) order, by cost; each team's pay-per-task charges over
/// the team's models by cost, in cents, the sub-cent rest on its last model. Task counts
/// ride on pieces of model `""` (no revenue, no cost). `sql::PIECES` is the same in SQL.
pub fn pieces(data: &MonthData, team: Option<&str>) -> Vec<Piece> {
    let mut out = Vec::new();
    for (id, c) in &data.customers {
        customer_pieces(id, c, &mut out);
    }
    if let Some(want) = team {
        out.retain(|p| p.team == want);
    }
    out
}

/// One customer's pieces of the month (see [`pieces`]), appended to `out`; `kpi rebuild`
/// runs it per customer month (`usage::gather`).
pub fn customer_pieces(id: &str, c: &CustomerMonth, out: &mut Vec<Piece>) {
    let piece = |team: &str, model: &str| Piece {
        customer: id.to_string(),
        team: team.to_string(),
        model: model.to_string(),
        ..Piece::default()
    };
    let pairs: Vec<(&str, &str, &ModelUse)> = c
        .teams
        .iter()
        .flat_map(|(t, u)| u.models.iter().map(move |(m, mu)| (t.as_str(), m.as_str(), mu)))
        .filter(|(_, _, u)| u.cost_micros > 0)
        .collect();
    let (sub, refunds, fees) = (c.subscription_total_cents(), c.refunds_cents, c.fees_cents);
    let total: i64 = pairs.iter().map(|p| p.2.cost_micros).sum();
    if pairs.is_empty() && (sub != 0 || refunds != 0 || fees != 0) {
        let mut p = piece(UNATTRIBUTED, UNATTRIBUTED);
        p.subscription_micros = sub * CENT;
        p.refunds_micros = refunds * CENT;
        p.fees_micros = fees * CENT;
        out.push(p);
    }
    let pair_start = out.len();
    let mut before = 0;
    for (t, m, u) in &pairs {
        let mut p = piece(t, m);
        p.subscription_micros = share(sub, before, u.cost_micros, total) * CENT;
        p.refunds_micros = share(refunds, before, u.cost_micros, total) * CENT;
        p.fees_micros = share(fees, before, u.cost_micros, total) * CENT;
        p.cost_micros = u.cost_micros;
        p.calls = u.calls;
        before += u.cost_micros;
        out.push(p);
    }
    for (t, use_) in &c.teams {
        let charge = use_.charge_micros;
        let pair_end = pair_start + pairs.len();
        let team_pieces: Vec<usize> = (pair_start..pair_end).filter(|&i| out[i].team == *t).collect();
        if team_pieces.is_empty() {
            if charge != 0 {
                let mut p = piece(t, UNATTRIBUTED);
                p.charge_micros = charge;
                out.push(p);
            }
        } else {
            let (cents, rest) = (charge / CENT, charge % CENT);
            let team_total: i64 = team_pieces.iter().map(|&i| out[i].cost_micros).sum();
            let mut before = 0;
            for (n, &i) in team_pieces.iter().enumerate() {
                let w = out[i].cost_micros;
                out[i].charge_micros = share(cents, before, w, team_total) * CENT;
                if n + 1 == team_pieces.len() {
                    out[i].charge_micros += rest;
                }
                before += w;
            }
        }
        if use_.completed != 0 || use_.failed != 0 {
            let mut p = piece(t, "");
            p.completed = use_.completed;
            p.failed = use_.failed;
            out.push(p);
        }
    }
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
        if k.is_empty() && calls {
            continue; // per model, the task-count pieces are no model
        }
        let row = by.entry(k.clone()).or_insert_with(|| MarginRow { label: label(&k), key: k, ..MarginRow::default() });
        row.revenue_micros += p.revenue();
        row.cost_micros += p.cost_micros;
        row.margin_micros += p.margin();
        row.tasks += if calls { p.calls } else { p.completed };
    }
    let mut out: Vec<MarginRow> = by
        .into_values()
        .map(|mut r| {
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
