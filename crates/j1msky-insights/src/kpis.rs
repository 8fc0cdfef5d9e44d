//! The numbers of one month or of a run of months, computed from the modules' rollups
//! (the types are in [`crate::figures`], re-exported here).

pub use crate::figures::*;
use crate::{Ctx, InsightsError, Month};

/// The numbers of `month`.
pub async fn for_month(ctx: &Ctx, month: Month, filter: &Filter) -> Result<Kpis, InsightsError> {
    let mut one = series(ctx, month, month, filter).await?;
    one.pop().ok_or_else(|| InsightsError::invalid("month", format!("{month}: no numbers")))
}

/// The numbers of every month from `first` to `last`. Each month's MRR and usage are
/// read once: the months before `first` that LTV looks back over as totals only, and the
/// trailing sums slide along the series.
pub async fn series(ctx: &Ctx, first: Month, last: Month, filter: &Filter) -> Result<Vec<Kpis>, InsightsError> {
    series_detailed(ctx, first, last, filter, first).await
}

/// [`series`] with every number only from `detail_from` on (the months the board shows
/// as tiles and tables); the months before are charted: MRR, the usage totals (no
/// customers, no completion times) and the customer rates MRR and margin give (no
/// activation cohorts, funnel or NPS). What one render of the board reads.
pub async fn series_detailed(
    ctx: &Ctx,
    first: Month,
    last: Month,
    filter: &Filter,
    detail_from: Month,
) -> Result<Vec<Kpis>, InsightsError> {
    let months = first.through(last);
    let window = crate::people::LTV_MONTHS as usize;
    // (MRR, usage) of the months before `first` LTV reads, oldest first.
    let mut earlier = Vec::new();
    let mut m = first;
    for _ in 1..window {
        m = m.prev();
        earlier.push((crate::mrr::month(ctx, m, filter).await?, crate::usage::totals(ctx, m, filter).await?));
    }
    earlier.reverse();
    let mut sections: Vec<(Mrr, Usage)> = earlier;
    let lead = sections.len();
    for &m in &months {
        let mrr = crate::mrr::month(ctx, m, filter).await?;
        let usage = if m >= detail_from {
            crate::usage::month(ctx, m, filter).await?
        } else {
            crate::usage::totals(ctx, m, filter).await?
        };
        sections.push((mrr, usage));
    }
    let mut out = Vec::with_capacity(months.len());
    for (i, &m) in months.iter().enumerate() {
        let end = lead + i;
        let mut trailing = crate::people::Trailing::default();
        for (mrr, usage) in &sections[end + 1 - window..=end] {
            trailing.add(mrr, usage);
        }
        let (mrr, usage) = &sections[end];
        let customers = crate::people::with_trailing(ctx, m, filter, mrr, trailing, m >= detail_from).await?;
        out.push(Kpis { month: m, filter: filter.clone(), mrr: mrr.clone(), customers, usage: usage.clone() });
    }
    Ok(out)
}
