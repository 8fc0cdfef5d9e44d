//! The rollups' consumers and `kpi rebuild`: every module that keeps a rollup lists its
//! consumers and its rebuild here.

use j1msky_db::consumers::Consumer;

use crate::{Ctx, InsightsError, TableChanges};

/// Every insights consumer; the `reactions` role runs them.
pub fn consumers(ctx: &Ctx) -> Vec<Consumer> {
    let mut all = crate::mrr::consumers(ctx);
    all.extend(crate::usage::consumers(ctx));
    all.extend(crate::people::consumers(ctx));
    all
}

/// Recomputes every rollup from the source tables (`j1msky kpi rebuild`): on a SQLite
/// file on two connections of its own (`file_rebuild`), else module by module. What it
/// changed in the usage rollups, where it merged them (a SQLite file; empty otherwise:
/// PostgreSQL and SQLite in memory rewrite every row).
pub async fn rebuild(ctx: &Ctx) -> Result<TableChanges, InsightsError> {
    if let Some(file) = ctx.db.sqlite_file() {
        return crate::file_rebuild::rebuild(ctx, file).await;
    }
    crate::mrr::rebuild(ctx).await?;
    crate::usage::rebuild(ctx).await?;
    crate::people::rebuild(ctx).await?;
    Ok(Vec::new())
}
