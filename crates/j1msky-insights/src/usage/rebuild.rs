//! `kpi rebuild` for the usage rollups: the same contributions the consumer counts, read
//! in bulk from tasks, llm_calls, revenue_entries and the API-day charges, in one
//! transaction (so a consumer running meanwhile waits, then finds nothing to change).
//! Revenue is two INSERT … SELECTs; tasks, the ledger and the API days are summed in
//! memory (`gather`) and written with the split in key order (`write`).

use chrono_tz::Tz;
use sqlx::AnyConnection;

use super::{gather, write};
use crate::{bulk, Ctx, InsightsError, Month};

const TABLES: &[&str] = &[
    "insights_tasks",
    "insights_usage",
    "insights_model_cost",
    "insights_revenue",
    "insights_revenue_seen",
    "insights_pieces",
    "insights_split",
    "insights_margins",
];

/// A SQL expression naming the business month (`YYYY-MM`) of the instant in `column`, for
/// instants from `min` to `max`: one pass over a table instead of one per month. Only our
/// own integers and month names go into it.
fn month_of(tz: Tz, column: &str, range: (Option<i64>, Option<i64>)) -> Option<String> {
    let (Some(min), Some(max)) = range else { return None };
    let months = Month::of(tz, min).through(Month::of(tz, max));
    let (last, earlier) = months.split_last()?;
    if earlier.is_empty() {
        return Some(format!("'{last}'"));
    }
    let mut sql = String::from("CASE");
    for m in earlier {
        sql.push_str(&format!(" WHEN {column} < {} THEN '{m}'", m.bounds(tz).1));
    }
    sql.push_str(&format!(" ELSE '{last}' END"));
    Some(sql)
}

pub async fn rebuild(ctx: &Ctx) -> Result<(), InsightsError> {
    let tz = ctx.tz();
    let api_days = j1msky_tasks::charges::api_days(&ctx.db).await?;
    let mut tx = ctx.db.begin().await?;
    let tuned = bulk::tune(&mut tx, ctx.db.backend()).await?;
    for table in TABLES {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
    }
    let mut indexes = Vec::new();
    for table in ["insights_tasks", "insights_pieces", "insights_margins"] {
        indexes.extend(bulk::drop_indexes(&mut tx, ctx.db.backend(), table).await?);
    }
    revenue(&mut tx, tz).await?;
    let mut g = gather::gather(&mut tx, ctx.db.backend(), tz, api_days).await?;
    write::tasks(&mut tx, ctx.db.backend(), &mut g).await?;
    write::customer_months(&mut tx, ctx.db.backend(), &g).await?;
    drop(g);
    bulk::create_indexes(&mut tx, &indexes).await?;
    bulk::untune(&mut tx, tuned).await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(())
}

async fn revenue(conn: &mut AnyConnection, tz: Tz) -> Result<(), InsightsError> {
    const KINDS: &str = "kind IN ('invoice_paid', 'refund')";
    let range: (Option<i64>, Option<i64>) =
        sqlx::query_as(&format!("SELECT MIN(occurred_at), MAX(occurred_at) FROM revenue_entries WHERE {KINDS}"))
            .fetch_one(&mut *conn)
            .await?;
    let Some(month) = month_of(tz, "occurred_at", range) else { return Ok(()) };
    sqlx::query(&format!(
        "INSERT INTO insights_revenue_seen (source_id, kind, month, customer_id, plan, amount_cents)
         SELECT source_id, kind, {month}, COALESCE(customer_id, ''),
                CASE WHEN kind = 'refund' THEN '' ELSE COALESCE(plan, '') END, amount_cents
         FROM revenue_entries WHERE {KINDS}"
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO insights_revenue (month, customer_id, plan, subscription_cents, refunds_cents)
         SELECT month, customer_id, plan, SUM(CASE WHEN kind = 'invoice_paid' THEN amount_cents ELSE 0 END),
                SUM(CASE WHEN kind = 'refund' THEN -amount_cents ELSE 0 END)
         FROM insights_revenue_seen GROUP BY month, customer_id, plan",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
