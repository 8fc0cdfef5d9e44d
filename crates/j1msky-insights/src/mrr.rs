//! MRR over time from billing's subscription history, and its monthly movements.
//! (Being built: stub.)

use crate::kpis::{Behind, Filter, Mrr};
use crate::{Ctx, InsightsError, Month};

/// The kinds of MRR movement (and the paying-customer tiles) a drill-down can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Movement {
    New,
    Expansion,
    Contraction,
    Churn,
    Reactivation,
    /// Paying at the month's end.
    Paying,
}

/// MRR and its movements in `month`.
pub async fn month(_ctx: &Ctx, _month: Month, _filter: &Filter) -> Result<Mrr, InsightsError> {
    Ok(Mrr::default())
}

/// The customers behind one movement of `month`, largest first.
pub async fn behind(_ctx: &Ctx, _month: Month, _movement: Movement, _filter: &Filter) -> Result<Vec<Behind>, InsightsError> {
    Ok(Vec::new())
}

/// This module's event consumers (rollups kept up to date).
pub fn consumers(_ctx: &Ctx) -> Vec<j1msky_db::consumers::Consumer> {
    Vec::new()
}

/// Recomputes this module's rollups from the source tables.
pub async fn rebuild(_ctx: &Ctx) -> Result<(), InsightsError> {
    Ok(())
}
