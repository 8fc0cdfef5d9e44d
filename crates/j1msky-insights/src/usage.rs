//! Revenue, model cost, margins and task outcomes per month, from rollups kept by a
//! consumer of task and revenue events. (Being built: stub.)

use crate::kpis::{Behind, Filter, Usage};
use crate::{Ctx, InsightsError, Month};

/// Revenue, cost, margins and task outcomes of `month`.
pub async fn month(_ctx: &Ctx, _month: Month, _filter: &Filter) -> Result<Usage, InsightsError> {
    Ok(Usage::default())
}

/// The customers with the lowest margin in `month` first (loss-makers).
pub async fn behind_margin(_ctx: &Ctx, _month: Month, _filter: &Filter) -> Result<Vec<Behind>, InsightsError> {
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
