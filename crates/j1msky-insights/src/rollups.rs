//! The rollups' consumers and `kpi rebuild`: every module that keeps a rollup lists its
//! consumers and its rebuild here.

use j1msky_db::consumers::Consumer;

use crate::{Ctx, InsightsError};

/// Every insights consumer; the `reactions` role runs them.
pub fn consumers(ctx: &Ctx) -> Vec<Consumer> {
    let mut all = crate::mrr::consumers(ctx);
    all.extend(crate::usage::consumers(ctx));
    all.extend(crate::people::consumers(ctx));
    all
}

/// Recomputes every rollup from the source tables (`j1msky kpi rebuild`).
pub async fn rebuild(ctx: &Ctx) -> Result<(), InsightsError> {
    crate::mrr::rebuild(ctx).await?;
    crate::usage::rebuild(ctx).await?;
    crate::people::rebuild(ctx).await?;
    Ok(())
}
