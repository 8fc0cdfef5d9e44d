//! The evening review (spend by model, team and customer; margin per customer with the
//! loss-makers first) and the what-if: the month's ledger repriced under another routing
//! or price list. (Being built: stub.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kpis::{Filter, MarginRow};
use crate::{Ctx, InsightsError, Month};

/// The evening review of the day `[start, end)` (unix micros).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Evening {
    pub start: i64,
    pub end: i64,
    pub spend_micros: i64,
    pub by_model: Vec<MarginRow>,
    pub by_team: Vec<MarginRow>,
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

/// The evening review of the business day containing `at`.
pub async fn review(_ctx: &Ctx, at: i64) -> Result<Evening, InsightsError> {
    Ok(Evening { start: at, end: at, ..Evening::default() })
}

/// `month` repriced under `scenario`.
pub async fn what_if(_ctx: &Ctx, _month: Month, _filter: &Filter, _scenario: &Scenario) -> Result<WhatIf, InsightsError> {
    Ok(WhatIf::default())
}
