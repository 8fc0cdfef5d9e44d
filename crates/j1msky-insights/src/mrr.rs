//! MRR over time from billing's subscription history, and its monthly movements
//! (definitions: `docs/KPIS.md`, "MRR and its movements"). The rules are in [`compute`];
//! the rollups they fill (one row per customer per month, sums per month and plan) in
//! [`store`]. The consumer `insights.mrr` keeps them current on
//! `subscription.history_changed`; [`month`] and [`behind`] read only the rollups.

pub mod compute;
pub(crate) mod direct;
pub mod store;

use j1msky_core::events::{Kind, Typed};
use j1msky_db::consumers::{Consumer, Handled, Handler, OnFailure};
use j1msky_db::outbox::Event;
use j1msky_db::{AnyConnection, Backend};
use sqlx::Row;

use crate::figures::{Behind, Filter, Mrr, PlanMrr};
use crate::{Ctx, InsightsError, Month};
use store::Rules;

/// The consumer's name (its cursor row).
pub const CONSUMER: &str = "insights.mrr";

/// How many customers a drill-down lists at most (largest first).
pub const BEHIND_LIMIT: i64 = 5_000;

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

impl Movement {
    /// The name stored in `insights_mrr_customer_months.movement`.
    pub fn as_str(self) -> &'static str {
        match self {
            Movement::New => "new",
            Movement::Expansion => "expansion",
            Movement::Contraction => "contraction",
            Movement::Churn => "churn",
            Movement::Reactivation => "reactivation",
            Movement::Paying => "paying",
        }
    }

    /// Parses a movement name, naming the field when it is none.
    pub fn parse(text: &str) -> Result<Movement, InsightsError> {
        match text {
            "new" => Ok(Movement::New),
            "expansion" => Ok(Movement::Expansion),
            "contraction" => Ok(Movement::Contraction),
            "churn" => Ok(Movement::Churn),
            "reactivation" => Ok(Movement::Reactivation),
            "paying" => Ok(Movement::Paying),
            other => Err(InsightsError::invalid(
                "movement",
                format!("`{other}` is not one of new, expansion, contraction, churn, reactivation, paying"),
            )),
        }
    }
}

pub(crate) fn rules(ctx: &Ctx) -> Rules {
    Rules { tz: ctx.tz(), currency: ctx.catalogue.stripe.currency.to_ascii_lowercase() }
}

/// Makes sure the rollups cover `month` (a month the clock has entered since they were
/// written); a month after the current one is refused.
async fn cover(ctx: &Ctx, month: Month) -> Result<(), InsightsError> {
    let this_month = ctx.this_month();
    if month > this_month {
        return Err(InsightsError::invalid("month", format!("{month} has not begun (this month is {this_month})")));
    }
    let covered: Option<(String,)> = sqlx::query_as("SELECT through_month FROM insights_mrr_state WHERE id = 1")
        .fetch_optional(ctx.db.pool())
        .await?;
    if covered.map(|(m,)| Month::parse(&m)).transpose()?.is_some_and(|c| c >= month) {
        return Ok(());
    }
    let mut tx = ctx.db.begin().await?;
    let through = store::lock(&mut tx, this_month).await?;
    if through < month {
        store::extend(&mut tx, &rules(ctx), through, month).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn plan_filter(filter: &Filter) -> &str {
    filter.plan.as_deref().unwrap_or("")
}

/// MRR and its movements in `month`. The plan filter narrows to the customers on that
/// plan (at the month's end; at its start for those who ended at zero); the team filter
/// does not narrow MRR (a subscription is not bought per team).
pub async fn month(ctx: &Ctx, month: Month, filter: &Filter) -> Result<Mrr, InsightsError> {
    let mut out = Mrr { currency: ctx.catalogue.stripe.currency.to_ascii_lowercase(), ..Mrr::default() };
    cover(ctx, month).await?;
    let cols = compute::TOTAL_COLUMNS.join(", ");
    let rows = sqlx::query(&format!("SELECT plan, {cols} FROM insights_mrr_months WHERE month = $1"))
        .bind(month.to_string())
        .fetch_all(ctx.db.pool())
        .await?;
    let wanted = plan_filter(filter);
    for r in &rows {
        let plan: String = r.try_get(0)?;
        let mut t = [0i64; 12];
        for (i, v) in t.iter_mut().enumerate() {
            *v = r.try_get(i + 1)?;
        }
        if plan == wanted {
            [
                out.starting_cents,
                out.new_cents,
                out.expansion_cents,
                out.contraction_cents,
                out.churn_cents,
                out.reactivation_cents,
                out.ending_cents,
                out.paying_start,
                out.paying_end,
                out.new_customers,
                out.churned_customers,
                out.reactivated_customers,
            ] = t;
        }
        let in_filter = wanted.is_empty() || plan == wanted;
        if !plan.is_empty() && in_filter && t[8] > 0 {
            out.by_plan.push(PlanMrr { plan, customers: t[8], cents: t[6] });
        }
    }
    out.by_plan.sort_by(|a, b| b.cents.cmp(&a.cents).then_with(|| a.plan.cmp(&b.plan)));
    Ok(out)
}

/// The customers behind one movement of `month`, largest first (at most
/// [`BEHIND_LIMIT`]). The value is the movement's amount in cents (positive for churn and
/// contraction too); for `Paying` the ending MRR.
pub async fn behind(
    ctx: &Ctx,
    month: Month,
    movement: Movement,
    filter: &Filter,
) -> Result<Vec<Behind>, InsightsError> {
    cover(ctx, month).await?;
    // Paying: the row that holds at the month (months without a row repeat the previous
    // row's end, until the customer's next row).
    let (condition, value) = match movement {
        Movement::Paying => (
            "m.month <= $1 AND (m.next_month IS NULL OR m.next_month > $1) AND m.ending_cents > 0 AND $2 = 'paying'",
            "m.ending_cents",
        ),
        Movement::New | Movement::Reactivation => ("m.month = $1 AND m.movement = $2", "m.ending_cents"),
        Movement::Expansion => ("m.month = $1 AND m.movement = $2", "m.ending_cents - m.starting_cents"),
        Movement::Contraction => ("m.month = $1 AND m.movement = $2", "m.starting_cents - m.ending_cents"),
        Movement::Churn => ("m.month = $1 AND m.movement = $2", "m.starting_cents"),
    };
    let sql = format!(
        "SELECT m.customer_key, c.name, m.plan, {value} AS v, m.starting_cents, m.ending_cents
         FROM insights_mrr_customer_months m LEFT JOIN customers c ON c.id = m.customer_id
         WHERE {condition} AND ($3 = '' OR m.plan = $3)
         ORDER BY v DESC, m.customer_key LIMIT {BEHIND_LIMIT}"
    );
    let rows = sqlx::query(&sql)
        .bind(month.to_string())
        .bind(movement.as_str())
        .bind(plan_filter(filter))
        .fetch_all(ctx.db.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let key: String = r.try_get(0)?;
        let name: Option<String> = r.try_get(1)?;
        let plan: String = r.try_get(2)?;
        let (start, end): (i64, i64) = (r.try_get(4)?, r.try_get(5)?);
        out.push(Behind {
            name: name.unwrap_or_else(|| key.clone()),
            customer_id: key,
            plan: (!plan.is_empty()).then_some(plan),
            value: r.try_get(3)?,
            detail: match movement {
                Movement::Paying => format!("MRR {}", cents(end)),
                _ => format!("MRR {} → {}", cents(start), cents(end)),
            },
        });
    }
    Ok(out)
}

fn cents(v: i64) -> String {
    format!("{}.{:02}", v / 100, (v % 100).abs())
}

/// This module's event consumers (rollups kept up to date).
pub fn consumers(ctx: &Ctx) -> Vec<Consumer> {
    // Each event recomputes its customers from the history: order does not matter, so a
    // failing one waits aside (parked after its retries; `kpi rebuild` mends) and others flow.
    vec![Consumer::new(CONSUMER, &[Kind::SubscriptionHistoryChanged], OnFailure::SkipAndPark, OnHistory(ctx.clone()))]
}

struct OnHistory(Ctx);

impl Handler for OnHistory {
    fn handle<'a>(&'a self, conn: &'a mut AnyConnection, _backend: Backend, event: &'a Event, now: i64) -> Handled<'a> {
        Box::pin(async move { Ok(on_history(&self.0, conn, event, now).await?) })
    }
}

/// Recomputes the customers a history change touches: the Stripe customer's (linked or
/// not) and ours.
async fn on_history(ctx: &Ctx, conn: &mut AnyConnection, event: &Event, now: i64) -> Result<(), InsightsError> {
    let Some(Typed::SubscriptionHistoryChanged(change)) = event.typed() else { return Ok(()) };
    let rules = rules(ctx);
    let this_month = Month::of(rules.tz, now);
    let mut through = store::lock(conn, this_month).await?;
    if through < this_month {
        store::extend(conn, &rules, through, this_month).await?;
        through = this_month;
    }
    let linked: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT DISTINCT customer_id FROM subscription_history WHERE stripe_customer_id = $1")
            .bind(&change.stripe_customer)
            .fetch_all(&mut *conn)
            .await?;
    let mut keys = std::collections::BTreeSet::new();
    keys.insert(store::key_of(None, &change.stripe_customer));
    keys.extend(change.customer.clone());
    keys.extend(linked.into_iter().filter_map(|(c,)| c));
    for key in keys {
        store::recompute(conn, &rules, &key, through).await?;
    }
    Ok(())
}

/// Records in billing's history the stored Stripe events it is missing, in the caller's
/// transaction (what the rollups are then computed from).
async fn backfill_in(conn: &mut AnyConnection, ctx: &Ctx, now: i64) -> Result<(), InsightsError> {
    let filled = j1msky_billing::history::backfill(&mut *conn, ctx.db.backend(), now).await?;
    if filled.recorded > 0 {
        tracing::info!(recorded = filled.recorded, missing = filled.missing, "subscription history backfilled");
    }
    Ok(())
}

/// [`backfill_in`] in a transaction of its own (the SQLite file rebuild, `crate::file_rebuild`,
/// computes MRR on a connection sqlx does not drive, after this has committed).
pub(crate) async fn backfill(ctx: &Ctx) -> Result<(), InsightsError> {
    let mut tx = ctx.db.begin().await?;
    backfill_in(&mut tx, ctx, ctx.clock.now_micros()).await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(())
}

/// Backfills billing's history from the stored Stripe events, then recomputes the
/// rollups from it, in one transaction (readers see the old numbers until it commits).
/// On a SQLite file the history is read and the rollups written on a connection of the
/// rebuild's own (`direct`), after the backfill has committed.
pub async fn rebuild(ctx: &Ctx) -> Result<(), InsightsError> {
    if let Some(file) = ctx.db.sqlite_file() {
        backfill(ctx).await?;
        let (rules, this_month) = (rules(ctx), ctx.this_month());
        return crate::direct::in_transaction(file, move |tx| {
            direct::write(tx, &direct::compute(tx, &rules, this_month)?)
        })
        .await;
    }
    let now = ctx.clock.now_micros();
    let mut tx = ctx.db.begin().await?;
    let through = store::lock(&mut tx, ctx.this_month()).await?.max(ctx.this_month());
    backfill_in(&mut tx, ctx, now).await?;
    let tuned = crate::bulk::tune(&mut tx, ctx.db.backend()).await?;
    let indexes = crate::bulk::drop_indexes(&mut tx, ctx.db.backend(), "insights_mrr_customer_months").await?;
    store::rebuild(&mut tx, &rules(ctx), through).await?;
    crate::bulk::create_indexes(&mut tx, &indexes).await?;
    crate::bulk::untune(&mut tx, tuned).await?;
    tx.commit().await?;
    Ok(())
}
