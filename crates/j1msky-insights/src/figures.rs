//! The figures of one month, as the board, `j1msky kpi` and the CSV exports show them
//! (the types only; [`crate::kpis`] computes them and re-exports them). Definitions:
//! `docs/KPIS.md`. Money is integers: MRR and revenue in the currency's minor units
//! (cents), model costs and margins in micro-USD; rates in basis points (1 % = 100 bp),
//! `None` when the denominator is zero.
//!
//! Each section is computed by its own module from its rollups: [`Mrr`] by `mrr`,
//! [`Customers`] by `people`, [`Usage`] by `usage`.

use serde::{Deserialize, Serialize};

use crate::Month;

/// Narrows the numbers to one plan and/or one team (`None`: all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub plan: Option<String>,
    pub team: Option<String>,
}

/// Everything the board shows for one month.
#[derive(Debug, Clone, Serialize)]
pub struct Kpis {
    pub month: Month,
    pub filter: Filter,
    pub mrr: Mrr,
    pub customers: Customers,
    pub usage: Usage,
}

/// MRR at the month's start and end and the movements between them, in cents.
/// Always: `starting + new + expansion + reactivation - contraction - churn = ending`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Mrr {
    pub currency: String,
    pub starting_cents: i64,
    pub new_cents: i64,
    pub expansion_cents: i64,
    /// Positive: the MRR lost by customers who pay less but still pay.
    pub contraction_cents: i64,
    /// Positive: the MRR lost by customers who stopped paying.
    pub churn_cents: i64,
    pub reactivation_cents: i64,
    pub ending_cents: i64,
    pub paying_start: i64,
    pub paying_end: i64,
    pub new_customers: i64,
    pub churned_customers: i64,
    pub reactivated_customers: i64,
    /// Ending MRR per plan.
    pub by_plan: Vec<PlanMrr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanMrr {
    pub plan: String,
    pub customers: i64,
    pub cents: i64,
}

/// Customers: churn, ARPA, LTV, activation, the funnel, NPS and CAC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Customers {
    /// Customers who stopped paying ÷ paying customers at the month's start.
    pub churn_rate_bp: Option<i64>,
    /// (churn + contraction) ÷ starting MRR.
    pub gross_revenue_churn_bp: Option<i64>,
    /// (churn + contraction − expansion − reactivation) ÷ starting MRR; negative is good.
    pub net_revenue_churn_bp: Option<i64>,
    /// Ending MRR ÷ paying customers at the month's end.
    pub arpa_cents: Option<i64>,
    /// ARPA × gross margin ÷ customer churn rate, both over the trailing 6 months.
    pub ltv_cents: Option<i64>,
    /// Signup cohorts, oldest first, ending with this month's.
    pub activation: Vec<Cohort>,
    pub funnel: Funnel,
    pub nps: Option<Nps>,
    /// Operator-entered acquisition spend for the month.
    pub acquisition_spend_cents: Option<i64>,
    /// Spend ÷ new paying customers of the month.
    pub cac_cents: Option<i64>,
    /// LTV ÷ CAC × 100 (250 = 2.5:1).
    pub ltv_to_cac_x100: Option<i64>,
}

/// Customers who signed up in `month` and how many succeeded at a first task within 7 days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cohort {
    pub month: Month,
    pub customers: i64,
    pub activated: i64,
    pub rate_bp: Option<i64>,
}

/// Lead → qualified → trial → paid: how many reached each stage in the month and the
/// median time from the previous stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Funnel {
    pub stages: Vec<FunnelStage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelStage {
    pub stage: String,
    pub entered: i64,
    /// Of those who entered the previous stage, how many reached this one.
    pub conversion_bp: Option<i64>,
    pub median_hours_from_previous: Option<i64>,
}

/// Net Promoter Score of the month's survey answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Nps {
    pub responses: i64,
    pub promoters: i64,
    pub passives: i64,
    pub detractors: i64,
    /// −100..=100: % promoters − % detractors, rounded toward zero.
    pub score: i64,
}

/// Revenue, model cost, margins and task outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Paid subscription invoices booked in the month, without their pay-per-task lines.
    pub subscription_revenue_cents: i64,
    /// Pay-per-task and metered API charges of the month.
    pub usage_revenue_cents: i64,
    /// Positive: refunded in the month.
    pub refunds_cents: i64,
    /// Subscription + usage − refunds, in micro-USD.
    pub revenue_micros: i64,
    pub model_cost_micros: i64,
    /// Stripe's fees when Stripe told us (`None`: unknown, not zero).
    pub stripe_fees_micros: Option<i64>,
    /// Revenue − model cost − known Stripe fees.
    pub gross_margin_micros: i64,
    pub gross_margin_bp: Option<i64>,
    pub tasks_completed: i64,
    pub tasks_failed: i64,
    pub success_rate_bp: Option<i64>,
    pub cost_per_completed_task_micros: Option<i64>,
    pub by_customer: Vec<MarginRow>,
    pub by_plan: Vec<MarginRow>,
    pub by_team: Vec<MarginRow>,
    pub by_model: Vec<MarginRow>,
    /// Completion time (queued → finished) per team.
    pub completion: Vec<TeamTimes>,
}

/// Margin of one customer, plan, team or model (subscription revenue split as `docs/KPIS.md` says).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MarginRow {
    pub key: String,
    pub label: String,
    pub revenue_micros: i64,
    pub cost_micros: i64,
    pub margin_micros: i64,
    pub margin_bp: Option<i64>,
    pub tasks: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TeamTimes {
    pub team: String,
    pub tasks: i64,
    pub median_ms: i64,
    pub p90_ms: i64,
}

/// One customer behind a tile (the drill-down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Behind {
    pub customer_id: String,
    pub name: String,
    pub plan: Option<String>,
    /// The customer's share of the tile, in the tile's unit (cents for MRR, micros for margin).
    pub value: i64,
    pub detail: String,
}
