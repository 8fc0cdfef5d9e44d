//! `kpi rebuild` for the usage rollups: the same contributions the consumer counts, read
//! in bulk from tasks, llm_calls, revenue_entries and the API-day charges, in one
//! transaction (so a consumer running meanwhile waits, then finds nothing to change).
//! On a SQLite file the tasks, the ledger and the API days are summed in memory
//! (`gather`) and written with the split in key order (`write`), on a connection of the
//! rebuild's own (`direct`); PostgreSQL (and SQLite in memory) run the INSERT … SELECTs
//! below.

use chrono_tz::Tz;
use sqlx::AnyConnection;

use super::{gather, parts, write};
use crate::direct::{self, err};
use crate::rewrite::{self, Mode, Sources};
use crate::{bulk, Ctx, InsightsError, Month, TableChanges};

const TABLES: &[&str] =
    &["insights_tasks", "insights_usage", "insights_model_cost", "insights_revenue", "insights_revenue_seen"];

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
    if let Some(file) = ctx.db.sqlite_file() {
        return direct::in_transaction(file, move |tx| rebuild_direct(tx, tz, api_days)).await;
    }
    let mut tx = ctx.db.begin().await?;
    let tuned = bulk::tune(&mut tx, ctx.db.backend()).await?;
    for table in TABLES {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
    }
    let mut indexes = Vec::new();
    for table in ["insights_tasks", "insights_pieces", "insights_margins"] {
        indexes.extend(bulk::drop_indexes(&mut tx, ctx.db.backend(), table).await?);
    }
    tasks(&mut tx, tz).await?;
    for (customer, day, amount) in api_days {
        let part = parts::api_day_now(&mut tx, tz, &customer, &day, amount).await?;
        parts::settle_task(&mut tx, &parts::api_day_key(&customer, &day), Some(part)).await?;
    }
    revenue(&mut tx, tz).await?;
    super::split::rebuild(&mut tx).await?;
    bulk::create_indexes(&mut tx, &indexes).await?;
    bulk::untune(&mut tx, tuned).await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(())
}

/// The SQLite rebuild on one connection: revenue by SQL, the rest summed in memory and
/// written in key order ([`clear_direct`], [`gather::gather`], [`write_direct`]). With no
/// second connection to read the old rows from, every table is emptied and filled.
fn rebuild_direct(
    tx: &rusqlite::Transaction<'_>,
    tz: Tz,
    api_days: Vec<(String, String, i64)>,
) -> Result<(), InsightsError> {
    let cleared = clear_direct(tx, tz, false)?;
    let (g, _) = gather::gather(tx, None, tz, api_days)?;
    write_direct(tx, cleared, g, None).map(drop)
}

/// The usage rollups the SQLite rebuild writes from what `gather` summed: filled when
/// empty, else merged (`rewrite`).
const WRITTEN: &[&str] = &[
    "insights_tasks",
    "insights_usage",
    "insights_model_cost",
    "insights_pieces",
    "insights_split",
    "insights_margins",
];

/// What [`clear_direct`] left for [`write_direct`]: the secondary indexes it dropped (of
/// the tables to fill), to build again, and the tables to merge.
pub(crate) struct Cleared {
    indexes: Vec<String>,
    merged: Vec<&'static str>,
}

/// Prepares the usage rollups for [`write_direct`] and writes the revenue rollups by SQL,
/// on the writing connection. With `merge`, a table that holds rows is left as it is, to
/// be merged; every other one is emptied and its secondary indexes dropped (one sorted
/// build after the rows instead of millions of random inserts into each).
pub(crate) fn clear_direct(tx: &rusqlite::Connection, tz: Tz, merge: bool) -> Result<Cleared, InsightsError> {
    for table in ["insights_revenue", "insights_revenue_seen"] {
        tx.execute_batch(&format!("DELETE FROM {table}")).map_err(err)?;
    }
    let (mut indexes, mut merged) = (Vec::new(), Vec::new());
    for &table in WRITTEN {
        if merge && rewrite::mode_of(tx, table)? == Mode::Merge {
            merged.push(table);
            continue;
        }
        tx.execute_batch(&format!("DELETE FROM {table}")).map_err(err)?;
        indexes.extend(direct::drop_indexes(tx, table)?);
    }
    let range = tx.query_row(&revenue_range_sql(), [], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?;
    for sql in revenue_sql(tz, range) {
        tx.execute_batch(&sql).map_err(err)?;
    }
    Ok(Cleared { indexes, merged })
}

/// Writes what `g` summed (with the revenue [`clear_direct`] wrote), the merged tables
/// compared with their rows as the `readers` see them (the rebuild's start), and builds
/// the dropped indexes again, on both cores (the rebuild's last step: no reader runs by
/// then). What changed in each table, and the sums, handed back to be freed while the
/// transaction commits.
///
/// When `insights_tasks` is merged, the second reader compares it on another thread while
/// this one merges the per-customer-month rollups, and its changes are written here after
/// them: at 20,000,000 tasks the two comparisons took 22 and 27 s one after the other.
pub(crate) fn write_direct(
    tx: &rusqlite::Connection,
    cleared: Cleared,
    mut g: gather::Gathered,
    readers: Option<(&rusqlite::Connection, rusqlite::Connection)>,
) -> Result<(TableChanges, gather::Gathered), InsightsError> {
    let tasks_merged = cleared.merged.contains(&"insights_tasks");
    let (reader, second) = readers.map_or((None, None), |(r, s)| (Some(r), Some(s)));
    let sources = Sources::new(reader, cleared.merged);
    let mut clock = std::time::Instant::now();
    gather::add_revenue(tx, &mut g)?;
    // The API days were added after the gather's sort.
    g.sort_tasks();
    direct::step(&mut clock, "revenue added, tasks sorted");
    let changes = match second {
        Some(second) if tasks_merged => std::thread::scope(|s| {
            // Bounded: a comparison that finds much to change waits for this thread.
            let (to, from) = std::sync::mpsc::sync_channel(4_096);
            let g = &g;
            let compared = s.spawn(move || write::compare_tasks(&second, g, to));
            // `from` is dropped when this returns, early or not, so the comparing thread
            // never waits on a channel nobody reads.
            let here = move || -> Result<_, InsightsError> {
                let months = write::customer_months(tx, &sources, g)?;
                write::apply_tasks(tx, from)?;
                Ok(months)
            };
            let months = here();
            let tasks = compared.join().map_err(|_| direct::broken("the comparing thread stopped"))?;
            // This thread's error first: the comparing thread's is then only that nobody read.
            let months = months?;
            let mut changes = vec![("insights_tasks", tasks?)];
            changes.extend(months);
            Ok::<_, InsightsError>(changes)
        })?,
        _ => {
            let mut changes = vec![("insights_tasks", write::tasks(tx, &sources, &g)?)];
            direct::step(&mut clock, "insights_tasks written");
            changes.extend(write::customer_months(tx, &sources, &g)?);
            changes
        }
    };
    direct::step(&mut clock, "usage rollups written");
    direct::create_indexes_on_both_cores(tx, &cleared.indexes)?;
    Ok((changes, g))
}

async fn tasks(conn: &mut AnyConnection, tz: Tz) -> Result<(), InsightsError> {
    const FINISHED: &str = "state IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL";
    let range: (Option<i64>, Option<i64>) =
        sqlx::query_as(&format!("SELECT MIN(finished_at), MAX(finished_at) FROM tasks t WHERE t.{FINISHED}"))
            .fetch_one(&mut *conn)
            .await?;
    let Some(month) = month_of(tz, "t.finished_at", range) else { return Ok(()) };
    // Each task's ledger, summed once in one pass over the ledger's task index. The tasks
    // are read in their table's order, not through the index on `state` (the COALESCE
    // keeps SQLite from using it): nearly every task is finished, and the rows then come
    // in the order they were written, which for time-ordered ids is their key's order, so
    // insights_tasks is appended to instead of written at random places.
    sqlx::query(&format!(
        "INSERT INTO insights_tasks (task_id, month, customer_id, team, outcome, duration_ms, cost_micros,
             charge_micros, ledger_until, plan)
         SELECT t.id, {month}, t.customer_id, t.team, t.state,
                CASE WHEN t.finished_at > t.queued_at THEN (t.finished_at - t.queued_at) / 1000 ELSE 0 END,
                COALESCE(l.cost, 0), CASE WHEN t.state = 'succeeded' THEN COALESCE(t.charge_micros, 0) ELSE 0 END,
                COALESCE(l.until, 0), {plan}
         FROM tasks t LEFT JOIN (SELECT task_id, SUM(cost_micros) AS cost, MAX(created_at) AS until FROM llm_calls
                                 WHERE task_id IS NOT NULL GROUP BY task_id) l ON l.task_id = t.id
         WHERE COALESCE(t.state, '') IN ('succeeded', 'failed', 'cancelled') AND t.finished_at IS NOT NULL",
        plan = parts::PLAN_KEY.replace("{id}", "t.customer_id")
    ))
    .execute(&mut *conn)
    .await?;
    // The two GROUP BYs below are sorts of every task and every ledger row. The customer
    // leads their keys: SQLite's sorter compares the first key column alone while it
    // differs, and a month (two dozen values) ties far more often than a customer does.
    sqlx::query(
        "INSERT INTO insights_usage (month, customer_id, team, tasks_completed, tasks_failed, cost_micros, charge_micros)
         SELECT month, customer_id, team, SUM(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END),
                SUM(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END), SUM(cost_micros), SUM(charge_micros)
         FROM insights_tasks GROUP BY customer_id, month, team",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO insights_model_cost (month, customer_id, team, model, calls, input_tokens, output_tokens,
             cost_micros)
         SELECT it.month, it.customer_id, it.team, l.model_used, COUNT(*), SUM(l.input_tokens), SUM(l.output_tokens),
                SUM(l.cost_micros)
         FROM insights_tasks it JOIN llm_calls l ON l.task_id = it.task_id
         GROUP BY it.customer_id, it.month, it.team, l.model_used",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const KINDS: &str = "kind IN ('invoice_paid', 'refund', 'dispute', 'stripe_fee')";

/// The range of instants of the revenue entries the rollups count.
fn revenue_range_sql() -> String {
    format!("SELECT MIN(occurred_at), MAX(occurred_at) FROM revenue_entries WHERE {KINDS}")
}

/// The revenue statements (seen entries, then their sums) for entries in `range`.
fn revenue_sql(tz: Tz, range: (Option<i64>, Option<i64>)) -> Vec<String> {
    let Some(month) = month_of(tz, "occurred_at", range) else { return Vec::new() };
    vec![
        format!(
            "INSERT INTO insights_revenue_seen (source_id, kind, month, customer_id, plan, amount_cents)
             SELECT source_id, kind, {month}, COALESCE(customer_id, ''),
                    CASE WHEN kind IN ('refund', 'dispute', 'stripe_fee') THEN '' ELSE COALESCE(plan, '') END, amount_cents
             FROM revenue_entries WHERE {KINDS}"
        ),
        "INSERT INTO insights_revenue (month, customer_id, plan, subscription_cents, refunds_cents, fees_cents)
         SELECT month, customer_id, plan, SUM(CASE WHEN kind = 'invoice_paid' THEN amount_cents ELSE 0 END),
                SUM(CASE WHEN kind IN ('refund', 'dispute') THEN -amount_cents ELSE 0 END),
                SUM(CASE WHEN kind = 'stripe_fee' THEN -amount_cents ELSE 0 END)
         FROM insights_revenue_seen GROUP BY month, customer_id, plan"
            .to_string(),
    ]
}

async fn revenue(conn: &mut AnyConnection, tz: Tz) -> Result<(), InsightsError> {
    let range: (Option<i64>, Option<i64>) = sqlx::query_as(&revenue_range_sql()).fetch_one(&mut *conn).await?;
    for sql in revenue_sql(tz, range) {
        sqlx::query(&sql).execute(&mut *conn).await?;
    }
    Ok(())
}
