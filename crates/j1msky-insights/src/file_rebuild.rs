//! `kpi rebuild` on a SQLite file, on both cores: one transaction on a connection the
//! rebuild drives itself (`direct`) writes every rollup, while a second connection reads
//! the same snapshot on another thread. The reader sums the tasks, the ledger and the API
//! days (`usage::gather`, the longest read); meanwhile the writer prepares the usage
//! rollups (drops the indexes of the empty ones), writes revenue, and computes and writes
//! MRR (`mrr::direct`) and the people rows (`people::direct`) itself, then takes the sums
//! and writes the usage rollups: an empty one filled, one that holds rows merged with
//! them as the reader sees them
//! (`rewrite`: only the rows that differ are written; `insights_tasks` compared on a
//! third connection, the second reader, beside the other tables).
//!
//! The writer takes the write lock before the reader's snapshot begins, so both see the
//! same committed state and nothing else commits until the rebuild does: a consumer that
//! runs meanwhile waits, then finds every contribution already counted (none twice, none
//! lost), as with the SQL rebuild's single transaction. What runs outside it, as before:
//! billing's history backfill (committed first, MRR is computed from it), the API days
//! (read through the tasks crate) and NPS (lifecycle's answers, its own transaction
//! after).

use std::path::Path;

use crate::{direct, mrr, people, usage, Ctx, InsightsError, TableChanges};

/// Recomputes every rollup of the SQLite database in `file`; what changed in the usage
/// rollups.
pub async fn rebuild(ctx: &Ctx, file: &Path) -> Result<TableChanges, InsightsError> {
    mrr::backfill(ctx).await?;
    let api_days = j1msky_tasks::charges::api_days(&ctx.db).await?;
    let (rules, this_month, tz) = (mrr::rules(ctx), ctx.this_month(), ctx.tz());
    let changes = direct::in_transaction_with_readers(file, move |tx, [reader, second]| {
        // A scoped thread, joined before the transaction commits: the reader's share of
        // this one rebuild, not a background loop (those start through the runtime).
        std::thread::scope(|s| {
            // The reader comes back with the sums: the merge reads the old rows through it.
            // The second reader reads the ledger's later half meanwhile, then compares
            // `insights_tasks`.
            let read = s.spawn(move || {
                let mut clock = std::time::Instant::now();
                let gathered = usage::gather(&reader, Some(second), tz, api_days);
                direct::step(&mut clock, "tasks, ledger and API days summed (reader)");
                gathered.map(|(g, second)| (g, reader, second))
            });
            // Meanwhile the writer prepares the usage rollups, writes revenue, and computes
            // and writes MRR and the people rows on its own connection (they read none of
            // the usage rollups), then waits for the sums.
            let mut clock = std::time::Instant::now();
            let written = usage::clear_direct(tx, tz, true).and_then(|cleared| {
                direct::step(&mut clock, "usage rollups prepared, revenue written");
                mrr::direct::write(tx, &mrr::direct::compute(tx, &rules, this_month)?)?;
                direct::step(&mut clock, "MRR written");
                people::direct::write(tx, &people::direct::compute(tx)?)?;
                direct::step(&mut clock, "people written");
                Ok(cleared)
            });
            let gathered = read.join().map_err(|_| thread_failed())?;
            direct::step(&mut clock, "waited for the reader");
            let (cleared, (gathered, reader, second)) = (written?, gathered?);
            let second = second.ok_or_else(|| direct::broken("the second reader was not handed back"))?;
            usage::write_direct(tx, cleared, gathered, Some((&reader, second)))
        })
    })
    .await?;
    let mut tx = ctx.db.begin().await?;
    people::rebuild_nps(&mut tx).await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(changes)
}

fn thread_failed() -> InsightsError {
    direct::broken("the reading thread stopped")
}
