//! Customer numbers: churn rates, ARPA, LTV, activation cohorts, the funnel, NPS and CAC
//! (operator-entered acquisition spend). Definitions: `docs/KPIS.md`, "Customers".
//!
//! Churn, ARPA and the new paying customers come from the month's MRR section; margin
//! from its usage section; activation, the funnel and NPS from this module's rollups
//! (`rollup`); spend from `insights_spend` (`spend`). Plan filters narrow the rollups to
//! the customers now on the plan; the team filter does not apply to customers.

mod behind;
pub(crate) mod direct;
mod rates;
mod read;
mod rollup;
mod spend;

pub use behind::{behind, Tile, BEHIND_MAX};
pub use rates::Trailing;
pub use read::COHORTS;
pub(crate) use rollup::nps as rebuild_nps;
pub use rollup::{ACTIVATION_WINDOW, CONSUMER};
pub use spend::{parse_amount, MAX_CENTS};

use crate::figures::{Customers, Filter, Mrr, Usage};
use crate::{Ctx, InsightsError, Month};

/// Months LTV looks back over, this one included.
pub const LTV_MONTHS: u32 = 6;

/// The customer numbers of `month` (rates that need MRR or margin take them from the
/// other sections already computed for the month; the earlier months of LTV are read as
/// totals).
pub async fn month(
    ctx: &Ctx,
    month: Month,
    filter: &Filter,
    mrr: &Mrr,
    usage: &Usage,
) -> Result<Customers, InsightsError> {
    let mut trailing = Trailing::default();
    trailing.add(mrr, usage);
    let mut m = month;
    for _ in 1..LTV_MONTHS {
        m = m.prev();
        let earlier_mrr = crate::mrr::month(ctx, m, filter).await?;
        let earlier_usage = crate::usage::totals(ctx, m, filter).await?;
        trailing.add(&earlier_mrr, &earlier_usage);
    }
    with_trailing(ctx, month, filter, mrr, trailing, true).await
}

/// [`month`] with the [`LTV_MONTHS`] months ending with this one already summed
/// (`kpis::series` computes each month once and slides the window). Without `cohorts`,
/// the activation cohorts, the funnel and NPS are left empty (a month only charted).
pub async fn with_trailing(
    ctx: &Ctx,
    month: Month,
    filter: &Filter,
    mrr: &Mrr,
    trailing: Trailing,
    cohorts: bool,
) -> Result<Customers, InsightsError> {
    let plan = filter.plan.as_deref();
    let ltv_cents = trailing.ltv_cents();
    let acquisition_spend_cents = spend::of(ctx, month).await?;
    // Spend is the whole business's: divided by one plan's new customers it would
    // overstate that plan's cost, so a filtered board shows no CAC.
    let unfiltered = filter.plan.is_none() && filter.team.is_none();
    let cac_cents = if unfiltered { rates::cac_cents(acquisition_spend_cents, mrr.new_customers) } else { None };
    let (activation, funnel, nps) = if cohorts {
        (
            read::cohorts(ctx, month, plan).await?,
            read::funnel(ctx, month, plan).await?,
            read::nps(ctx, month, plan).await?,
        )
    } else {
        (Vec::new(), crate::figures::Funnel::default(), None)
    };
    Ok(Customers {
        churn_rate_bp: rates::customer_churn_bp(mrr),
        gross_revenue_churn_bp: rates::gross_revenue_churn_bp(mrr),
        net_revenue_churn_bp: rates::net_revenue_churn_bp(mrr),
        arpa_cents: rates::arpa_cents(mrr),
        ltv_cents,
        activation,
        funnel,
        nps,
        acquisition_spend_cents,
        cac_cents,
        ltv_to_cac_x100: rates::ltv_to_cac_x100(ltv_cents, cac_cents),
    })
}

/// This module's event consumers (rollups kept up to date).
pub fn consumers(ctx: &Ctx) -> Vec<j1msky_db::consumers::Consumer> {
    rollup::consumers(ctx)
}

/// Recomputes this module's rollups from the source tables.
pub async fn rebuild(ctx: &Ctx) -> Result<(), InsightsError> {
    let Some(file) = ctx.db.sqlite_file() else {
        return rollup::rebuild(ctx).await;
    };
    // On a SQLite file `insights_people` is written on the rebuild's own connection, and
    // NPS after it through lifecycle's function.
    crate::direct::in_transaction(file, |tx| direct::write(tx, &direct::compute(tx)?)).await?;
    let mut tx = ctx.db.begin().await?;
    rollup::nps(&mut tx).await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(())
}

/// Records the acquisition spend of `month` (replacing an earlier figure; audited, with
/// the old value kept in the audit log). Negative amounts, amounts above [`MAX_CENTS`]
/// and months not begun yet are refused with an error naming the field.
pub async fn set_spend(ctx: &Ctx, month: Month, cents: i64, actor: &j1msky_audit::Actor) -> Result<(), InsightsError> {
    spend::set(ctx, month, cents, actor).await
}

/// The acquisition spend entered for each month, newest first.
pub async fn spend(ctx: &Ctx) -> Result<Vec<(Month, i64)>, InsightsError> {
    spend::all(ctx).await
}
