//! Customer numbers: churn rates, ARPA, LTV, activation cohorts, the funnel, NPS and CAC
//! (operator-entered acquisition spend). (Being built: stub.)

use crate::kpis::{Customers, Filter, Mrr, Usage};
use crate::{Ctx, InsightsError, Month};

/// The customer numbers of `month` (rates that need MRR or margin take them from the
/// other sections already computed for the month).
pub async fn month(_ctx: &Ctx, _month: Month, _filter: &Filter, _mrr: &Mrr, _usage: &Usage) -> Result<Customers, InsightsError> {
    Ok(Customers::default())
}

/// This module's event consumers (rollups kept up to date).
pub fn consumers(_ctx: &Ctx) -> Vec<j1msky_db::consumers::Consumer> {
    Vec::new()
}

/// Recomputes this module's rollups from the source tables.
pub async fn rebuild(_ctx: &Ctx) -> Result<(), InsightsError> {
    Ok(())
}

/// Records the acquisition spend of `month` (replacing an earlier figure; audited, with
/// the old value kept in the audit log). Negative amounts are refused.
pub async fn set_spend(
    _ctx: &Ctx,
    month: Month,
    _cents: i64,
    _actor: &j1msky_audit::Actor,
) -> Result<(), InsightsError> {
    Err(InsightsError::invalid("month", format!("{month}: acquisition spend is not built yet")))
}

/// The acquisition spend entered for each month, newest first.
pub async fn spend(_ctx: &Ctx) -> Result<Vec<(Month, i64)>, InsightsError> {
    Ok(Vec::new())
}
