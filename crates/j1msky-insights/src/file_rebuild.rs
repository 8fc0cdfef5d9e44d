//! `kpi rebuild` on a SQLite file, on both cores: one transaction on a connection the
//! rebuild drives itself (`direct`) writes every rollup, while a second connection reads
//! the same snapshot on another thread. The reader sums the tasks, the ledger and the API
//! days (`usage::gather`) while the writer empties the rollups and writes revenue; it
//! hands the sums over and computes MRR (`mrr::direct`) and the people rows
//! (`people::direct`) while the writer writes the usage rollups; the writer then stores
//! those too.
//!
//! The writer takes the write lock before the reader's snapshot begins, so both see the
//! same committed state and nothing else commits until the rebuild does: a consumer that
//! runs meanwhile waits, then finds every contribution already counted (none twice, none
//! lost), as with the SQL rebuild's single transaction. What runs outside it, as before:
//! billing's history backfill (committed first, MRR is computed from it), the API days
//! (read through the tasks crate) and NPS (lifecycle's answers, its own transaction
//! after).

use std::path::Path;
use std::sync::mpsc;

use crate::{direct, mrr, people, usage, Ctx, InsightsError};

/// Recomputes every rollup of the SQLite database in `file`.
pub async fn rebuild(ctx: &Ctx, file: &Path) -> Result<(), InsightsError> {
    mrr::backfill(ctx).await?;
    let api_days = j1msky_tasks::charges::api_days(&ctx.db).await?;
    let (rules, this_month, tz) = (mrr::rules(ctx), ctx.this_month(), ctx.tz());
    direct::in_transaction_with_reader(file, move |tx, reader| {
        // A scoped thread, joined before the transaction commits: the reader's share of
        // this one rebuild, not a background loop (those start through the runtime).
        std::thread::scope(|s| {
            let (hand_over, sums) = mpsc::sync_channel(1);
            let read = s.spawn(move || {
                let gathered = usage::gather(&reader, tz, api_days)?;
                // The writer gone means it failed: its error is the one reported.
                if hand_over.send(gathered).is_err() {
                    return Ok(None);
                }
                let m = mrr::direct::compute(&reader, &rules, this_month)?;
                let p = people::direct::compute(&reader)?;
                Ok::<_, InsightsError>(Some((m, p)))
            });
            let written = usage::clear_direct(tx, tz).and_then(|cleared| match sums.recv() {
                Ok(g) => usage::write_direct(tx, cleared, g),
                // The reader stopped before handing over: its error is the one reported.
                Err(_) => Ok(()),
            });
            // Dropping the receiver lets a reader still waiting to hand over give up.
            drop(sums);
            let read = read.join().map_err(|_| thread_failed())?;
            written?;
            let (mrr_rows, people_rows) = read?.ok_or_else(thread_failed)?;
            mrr::direct::write(tx, &mrr_rows)?;
            people::direct::write(tx, &people_rows)?;
            Ok(())
        })
    })
    .await?;
    let mut tx = ctx.db.begin().await?;
    people::rebuild_nps(&mut tx).await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(())
}

fn thread_failed() -> InsightsError {
    InsightsError::Db(j1msky_db::DbError::Corrupt("kpi rebuild: the reading thread stopped".into()))
}
