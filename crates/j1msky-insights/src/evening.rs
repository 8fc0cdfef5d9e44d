//! The evening review (the day's spend by model, team and customer; margin per customer with the
//! loss-makers first) and the what-if: the month's ledger repriced under another routing
//! or price list, and its subscriptions under other plan prices. Both read the same
//! rollups and margin rules as the board (`usage::data`); the day's spend is the
//! gateway's own cost review of the ledger.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use j1msky_gateway::ledger::{self, Group};

use crate::figures::{Filter, MarginRow};
use crate::usage::data::{self, MonthData, CENT};
use crate::{Ctx, InsightsError, Month};

/// The evening review of the day `[start, end)` (unix micros).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Evening {
    pub start: i64,
    pub end: i64,
    pub spend_micros: i64,
    pub by_model: Vec<MarginRow>,
    pub by_team: Vec<MarginRow>,
    /// The day's spend per customer, most first (`-`: calls of no customer).
    pub spend_by_customer: Vec<MarginRow>,
    /// Month to date, lowest margin first.
    pub by_customer: Vec<MarginRow>,
}

/// A different world to reprice a month's ledger in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    /// Model → (micro-USD per million input tokens, per million output tokens).
    #[serde(default)]
    pub model_prices: BTreeMap<String, (i64, i64)>,
    /// Model actually used → the model it would have been routed to.
    #[serde(default)]
    pub routing: BTreeMap<String, String>,
    /// Plan → monthly price in cents.
    #[serde(default)]
    pub plan_prices: BTreeMap<String, i64>,
}

/// The month as it was and as it would have been under the scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WhatIf {
    pub actual_revenue_micros: i64,
    pub actual_cost_micros: i64,
    pub actual_margin_micros: i64,
    pub revenue_micros: i64,
    pub cost_micros: i64,
    pub margin_micros: i64,
    /// Per customer: the margin it had and would have had, biggest change first.
    pub by_customer: Vec<(MarginRow, MarginRow)>,
}

/// The evening review of the business day containing `at`. Spend rows carry the day's
/// model cost and calls (`tasks` = calls); `by_customer` is the month to date's margin.
/// A customer's day row is labelled with its name from the month's rows.
pub async fn review(ctx: &Ctx, at: i64) -> Result<Evening, InsightsError> {
    let tz = ctx.tz();
    let (start, end) = j1msky_core::windows::day(tz, at);
    let spend = |group| ledger::review(&ctx.db, group, start, end);
    let as_rows = |lines: Vec<ledger::CostLine>| -> Vec<MarginRow> {
        lines
            .into_iter()
            .map(|l| MarginRow {
                label: l.key.clone(),
                key: l.key,
                cost_micros: l.cost.micros(),
                tasks: l.calls,
                ..MarginRow::default()
            })
            .collect()
    };
    let by_model = as_rows(spend(Group::Model).await?);
    let by_team = as_rows(spend(Group::Team).await?);
    let month = Month::of(tz, at);
    let filter = Filter::default();
    let by_customer = crate::usage::by_customer(ctx, month, &filter).await?;
    let mut spend_by_customer = as_rows(spend(Group::Customer).await?);
    for row in &mut spend_by_customer {
        row.label = match by_customer.iter().find(|c| c.key == row.key) {
            Some(c) => c.label.clone(),
            None if row.key == "-" => "no customer".to_string(),
            None => row.key.clone(),
        };
    }
    Ok(Evening {
        start,
        end,
        spend_micros: by_model.iter().map(|r| r.cost_micros).sum(),
        by_model,
        by_team,
        spend_by_customer,
        by_customer,
    })
}

/// `month` repriced under `scenario`: each (customer, team, model) row of the month's
/// ledger is priced on its tokens at the model it would have been routed to, with the
/// scenario's price for that model (else the catalogue's); a row neither rerouted nor
/// repriced keeps its actual cost. Each paid subscription invoice of a plan with a new
/// price scales by new price ÷ catalogue price. Pay-per-task charges and refunds stay.
pub async fn what_if(ctx: &Ctx, month: Month, filter: &Filter, scenario: &Scenario) -> Result<WhatIf, InsightsError> {
    crate::usage::check_filter(ctx, filter)?;
    check(ctx, scenario)?;
    let actual = data::load(ctx, month, filter).await?;
    let would = reprice(ctx, &actual, scenario)?;
    let a = crate::usage::compute_all(&actual, filter);
    let w = crate::usage::compute_all(&would, filter);
    let mut pairs: Vec<(MarginRow, MarginRow)> = a
        .by_customer
        .into_iter()
        .map(|row| {
            let other = w.by_customer.iter().find(|r| r.key == row.key).cloned().unwrap_or_default();
            (row, other)
        })
        .collect();
    let change = |p: &(MarginRow, MarginRow)| (p.1.margin_micros - p.0.margin_micros).abs();
    pairs.sort_by(|x, y| change(y).cmp(&change(x)).then_with(|| x.0.key.cmp(&y.0.key)));
    Ok(WhatIf {
        actual_revenue_micros: a.revenue_micros,
        actual_cost_micros: a.model_cost_micros,
        actual_margin_micros: a.gross_margin_micros,
        revenue_micros: w.revenue_micros,
        cost_micros: w.model_cost_micros,
        margin_micros: w.gross_margin_micros,
        by_customer: pairs,
    })
}

/// Refuses a scenario naming what does not exist or a negative price, saying which.
fn check(ctx: &Ctx, s: &Scenario) -> Result<(), InsightsError> {
    for (model, (input, output)) in &s.model_prices {
        if *input < 0 || *output < 0 {
            return Err(InsightsError::invalid(
                "model_prices",
                format!("{model}: prices per million tokens must not be negative"),
            ));
        }
    }
    for (from, to) in &s.routing {
        if !ctx.catalogue.models.contains_key(to) && !s.model_prices.contains_key(to) {
            return Err(InsightsError::invalid(
                "routing",
                format!("{from} → {to}: `{to}` is neither a catalogue model nor priced in model_prices"),
            ));
        }
    }
    for (plan, cents) in &s.plan_prices {
        if !ctx.catalogue.plans.contains_key(plan) {
            return Err(InsightsError::invalid("plan_prices", format!("`{plan}` is not a plan of the catalogue")));
        }
        if *cents < 0 {
            return Err(InsightsError::invalid("plan_prices", format!("{plan}: a price must not be negative")));
        }
    }
    Ok(())
}

/// Micro-USD per million tokens (input, output) of `model` in the scenario's world.
fn prices(ctx: &Ctx, s: &Scenario, model: &str) -> Option<(i64, i64)> {
    s.model_prices
        .get(model)
        .copied()
        .or_else(|| ctx.catalogue.models.get(model).map(|m| (m.input_per_mtok.micros(), m.output_per_mtok.micros())))
}

/// The month's data as the scenario would have made it.
fn reprice(ctx: &Ctx, actual: &MonthData, s: &Scenario) -> Result<MonthData, InsightsError> {
    let mut out = actual.clone();
    for c in out.customers.values_mut() {
        for t in c.teams.values_mut() {
            let mut models = std::collections::BTreeMap::new();
            for (model, u) in std::mem::take(&mut t.models) {
                let target = s.routing.get(&model).cloned().unwrap_or_else(|| model.clone());
                let mut u2 = u.clone();
                if target != model || s.model_prices.contains_key(&model) {
                    let (pin, pout) = prices(ctx, s, &target).ok_or_else(|| {
                        InsightsError::invalid(
                            "routing",
                            format!("`{target}` has no price in the catalogue or scenario"),
                        )
                    })?;
                    let micros = (i128::from(u.input_tokens) * i128::from(pin)
                        + i128::from(u.output_tokens) * i128::from(pout)
                        + 999_999)
                        / 1_000_000;
                    u2.cost_micros = i64::try_from(micros).unwrap_or(i64::MAX);
                }
                let slot: &mut data::ModelUse = models.entry(target).or_default();
                slot.calls += u2.calls;
                slot.input_tokens += u2.input_tokens;
                slot.output_tokens += u2.output_tokens;
                slot.cost_micros += u2.cost_micros;
            }
            t.models = models;
            t.cost_micros = t.models.values().map(|u| u.cost_micros).sum();
        }
        for (plan, cents) in c.subscription_cents.iter_mut() {
            let (Some(new), Some(p)) = (s.plan_prices.get(plan), ctx.catalogue.plans.get(plan)) else { continue };
            let list = p.monthly_price.micros() / CENT;
            if list > 0 {
                *cents = i64::try_from(i128::from(*cents) * i128::from(*new) / i128::from(list)).unwrap_or(i64::MAX);
            }
        }
    }
    Ok(out)
}
