//! The MRR rollups: `insights_mrr_customer_months` (a customer's months where something
//! happened: its first paying month, a movement, a change of plan; the months between
//! repeat the previous row's end) and `insights_mrr_months` (the sums of every month per
//! plan and for all), covering months through `insights_mrr_state.through_month`. Every
//! writer first updates the state row, which serialises writers (the consumer, a new
//! month being covered, a rebuild).

use std::collections::{BTreeMap, BTreeSet};

use chrono_tz::Tz;
use sqlx::{AnyConnection, Row};

use super::compute::{Calendar, Customer, MonthRow, Snap, Totals, TOTAL_COLUMNS};
use crate::{InsightsError, Month};

/// What the rules need besides the history.
#[derive(Debug, Clone)]
pub struct Rules {
    pub tz: Tz,
    pub currency: String,
}

const SNAP_COLUMNS: &str = "subscription_id, version, status, plan, currency, amount_cents, discount_percent_bp,
     discount_amount_cents, discount_end, effective_at";

fn snap(r: &sqlx::any::AnyRow) -> Result<Snap, sqlx::Error> {
    Ok(Snap {
        subscription: r.try_get(0)?,
        version: r.try_get(1)?,
        status: r.try_get(2)?,
        plan: r.try_get(3)?,
        currency: r.try_get(4)?,
        amount_cents: r.try_get(5)?,
        discount_percent_bp: r.try_get(6)?,
        discount_amount_cents: r.try_get(7)?,
        discount_end: r.try_get(8)?,
        effective_at: r.try_get(9)?,
    })
}

/// The key rollups use for a customer: ours, else the unlinked Stripe customer's.
pub fn key_of(customer_id: Option<&str>, stripe_customer: &str) -> String {
    match customer_id {
        Some(c) => c.to_string(),
        None => format!("stripe:{stripe_customer}"),
    }
}

/// Locks the state row (creating it covering `this_month`) and returns the month covered.
pub async fn lock(conn: &mut AnyConnection, this_month: Month) -> Result<Month, InsightsError> {
    sqlx::query("INSERT INTO insights_mrr_state (id, through_month) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
        .bind(this_month.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE insights_mrr_state SET through_month = through_month WHERE id = 1").execute(&mut *conn).await?;
    covered(conn).await?.ok_or_else(|| InsightsError::NotFound("insights_mrr_state".into()))
}

/// The last month the rollups cover (`None` before anything wrote them).
pub async fn covered(conn: &mut AnyConnection) -> Result<Option<Month>, InsightsError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT through_month FROM insights_mrr_state WHERE id = 1").fetch_optional(&mut *conn).await?;
    row.map(|(m,)| Month::parse(&m)).transpose()
}

/// One customer's snapshots.
async fn snaps_of(conn: &mut AnyConnection, key: &str) -> Result<Vec<Snap>, InsightsError> {
    let rows = match key.strip_prefix("stripe:") {
        Some(sc) => {
            sqlx::query(&format!(
                "SELECT {SNAP_COLUMNS} FROM subscription_history WHERE customer_id IS NULL AND stripe_customer_id = $1"
            ))
            .bind(sc)
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(&format!("SELECT {SNAP_COLUMNS} FROM subscription_history WHERE customer_id = $1"))
                .bind(key)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    Ok(rows.iter().map(snap).collect::<Result<_, _>>()?)
}

type Deltas = BTreeMap<(String, String), Totals>;

fn add_row(deltas: &mut Deltas, month: &str, plan: &str, t: &Totals, sign: i64) {
    for p in [plan, ""] {
        deltas.entry((month.to_string(), p.to_string())).or_default().add(t, sign);
        if plan.is_empty() {
            break;
        }
    }
}

/// Adds `deltas` to the month sums.
async fn apply_deltas(conn: &mut AnyConnection, deltas: &Deltas) -> Result<(), InsightsError> {
    let cols = TOTAL_COLUMNS.join(", ");
    let params: Vec<String> = (3..3 + TOTAL_COLUMNS.len()).map(|i| format!("${i}")).collect();
    let sets: Vec<String> =
        TOTAL_COLUMNS.iter().map(|c| format!("{c} = insights_mrr_months.{c} + excluded.{c}")).collect();
    let sql = format!(
        "INSERT INTO insights_mrr_months (month, plan, {cols}) VALUES ($1, $2, {}) ON CONFLICT (month, plan) DO UPDATE SET {}",
        params.join(", "),
        sets.join(", ")
    );
    for ((month, plan), t) in deltas {
        if t.is_zero() {
            continue;
        }
        let mut q = sqlx::query(&sql).bind(month).bind(plan);
        for v in t.0 {
            q = q.bind(v);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes month rows of one customer (multi-row inserts).
async fn insert_rows(
    conn: &mut AnyConnection,
    rows: &[(String, Option<String>, MonthRow)],
) -> Result<(), InsightsError> {
    // Each customer's rows come together, in month order: a row holds until the next.
    let next: Vec<Option<String>> =
        (0..rows.len()).map(|i| rows.get(i + 1).filter(|n| n.0 == rows[i].0).map(|n| n.2.month.to_string())).collect();
    // SQLite gets anonymous `?` parameters: sqlx asks SQLite each parameter's name while
    // binding, and SQLite finds a numbered one's by walking the list of all of them (4,000
    // `$n` here: 4,000² steps a statement, seconds of a million-customer rebuild).
    let sqlite = conn.backend_name() == "SQLite";
    for (chunk, next) in rows.chunks(500).zip(next.chunks(500)) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = i * 8;
                let p: Vec<String> =
                    (1..=8).map(|k| if sqlite { "?".to_string() } else { format!("${}", b + k) }).collect();
                format!("({})", p.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO insights_mrr_customer_months (month, customer_key, customer_id, plan, starting_cents,
                 ending_cents, movement, next_month) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for ((key, customer_id, r), next) in chunk.iter().zip(next) {
            q = q
                .bind(r.month.to_string())
                .bind(key)
                .bind(customer_id)
                .bind(&r.plan)
                .bind(r.starting_cents)
                .bind(r.ending_cents)
                .bind(r.movement)
                .bind(next);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The rows worth storing: the first, each movement, each change of plan.
pub fn compress(full: Vec<MonthRow>) -> Vec<MonthRow> {
    let mut out: Vec<MonthRow> = Vec::new();
    let mut prev: Option<(Month, String)> = None;
    for r in full {
        let keep = match &prev {
            None => true,
            Some((m, plan)) => r.movement != "none" || *plan != r.plan || m.next() != r.month,
        };
        prev = Some((r.month, r.plan.clone()));
        if keep {
            out.push(r);
        }
    }
    out
}

/// The customer's every month through `through` from its stored rows: a month without a
/// row repeats the previous row's end (nothing when that end is 0).
pub fn expand(stored: &[MonthRow], through: Month) -> Vec<MonthRow> {
    let mut out = Vec::new();
    for (i, r) in stored.iter().enumerate() {
        out.push(r.clone());
        let until = stored.get(i + 1).map(|n| n.month).unwrap_or_else(|| through.next());
        if r.ending_cents == 0 {
            continue;
        }
        let mut m = r.month.next();
        while m < until && m <= through {
            out.push(MonthRow {
                month: m,
                plan: r.plan.clone(),
                starting_cents: r.ending_cents,
                ending_cents: r.ending_cents,
                movement: "none",
            });
            m = m.next();
        }
    }
    out
}

fn movement_name(text: &str) -> &'static str {
    ["new", "expansion", "contraction", "churn", "reactivation"].into_iter().find(|m| *m == text).unwrap_or("none")
}

fn totals_of(r: &MonthRow) -> Totals {
    Totals::of(r.starting_cents, r.ending_cents, r.movement)
}

/// Recomputes one customer's rows through `through` and moves the sums by the difference.
/// The caller holds the state lock.
pub async fn recompute(
    conn: &mut AnyConnection,
    rules: &Rules,
    key: &str,
    through: Month,
) -> Result<(), InsightsError> {
    let old: Vec<(String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT month, plan, starting_cents, ending_cents, movement FROM insights_mrr_customer_months
         WHERE customer_key = $1 ORDER BY month",
    )
    .bind(key)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored = Vec::with_capacity(old.len());
    for (month, plan, s, e, movement) in old {
        stored.push(MonthRow {
            month: Month::parse(&month)?,
            plan,
            starting_cents: s,
            ending_cents: e,
            movement: movement_name(&movement),
        });
    }
    let customer = Customer::new(snaps_of(conn, key).await?, &rules.currency);
    let full = customer.months(rules.tz, through);
    let mut deltas = Deltas::new();
    for r in expand(&stored, through) {
        add_row(&mut deltas, &r.month.to_string(), &r.plan, &totals_of(&r), -1);
    }
    for r in &full {
        add_row(&mut deltas, &r.month.to_string(), &r.plan, &totals_of(r), 1);
    }
    let new = compress(full);
    if new != stored {
        sqlx::query("DELETE FROM insights_mrr_customer_months WHERE customer_key = $1")
            .bind(key)
            .execute(&mut *conn)
            .await?;
        let customer_id = (!key.starts_with("stripe:")).then(|| key.to_string());
        let rows: Vec<_> = new.into_iter().map(|r| (key.to_string(), customer_id.clone(), r)).collect();
        insert_rows(conn, &rows).await?;
    }
    apply_deltas(conn, &deltas).await
}

/// Covers the months after the covered one through `month`: the sums carry every paying
/// customer's end over unchanged (their rows need nothing: a month without a row repeats
/// the previous end), then the customers whose MRR can change in the new month (a
/// snapshot in it, or a discount ending in it) are recomputed. The caller holds the lock.
pub async fn extend(conn: &mut AnyConnection, rules: &Rules, from: Month, month: Month) -> Result<(), InsightsError> {
    let mut m = from;
    while m < month {
        let next = m.next();
        let (start, end) = next.bounds(rules.tz);
        let cols = TOTAL_COLUMNS.join(", ");
        // A carried-over month: starting = ending, no movement, the same paying customers.
        sqlx::query(&format!(
            "INSERT INTO insights_mrr_months (month, plan, {cols})
             SELECT $1, plan, ending_cents, 0, 0, 0, 0, 0, ending_cents, paying_end, paying_end, 0, 0, 0
             FROM insights_mrr_months WHERE month = $2 AND ending_cents > 0"
        ))
        .bind(next.to_string())
        .bind(m.to_string())
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE insights_mrr_state SET through_month = $1 WHERE id = 1")
            .bind(next.to_string())
            .execute(&mut *conn)
            .await?;
        let moved: Vec<(Option<String>, String)> = sqlx::query_as(
            "SELECT DISTINCT customer_id, stripe_customer_id FROM subscription_history
             WHERE (effective_at >= $1 AND effective_at < $2) OR (discount_end >= $1 AND discount_end < $2)",
        )
        .bind(start)
        .bind(end)
        .fetch_all(&mut *conn)
        .await?;
        let keys: BTreeSet<String> = moved.iter().map(|(c, sc)| key_of(c.as_deref(), sc)).collect();
        for key in keys {
            recompute(conn, rules, &key, next).await?;
        }
        m = next;
    }
    Ok(())
}

/// Recomputes everything from the history through `through`, a page of customers at a time.
pub async fn rebuild(conn: &mut AnyConnection, rules: &Rules, through: Month) -> Result<(), InsightsError> {
    sqlx::query("DELETE FROM insights_mrr_customer_months").execute(&mut *conn).await?;
    sqlx::query("DELETE FROM insights_mrr_months").execute(&mut *conn).await?;
    sqlx::query("UPDATE insights_mrr_state SET through_month = $1 WHERE id = 1")
        .bind(through.to_string())
        .execute(&mut *conn)
        .await?;
    let mut totals = Deltas::new();
    let mut after = String::new();
    const PAGE: i64 = 2_000;
    loop {
        let page: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT customer_id FROM subscription_history WHERE customer_id > $1 ORDER BY customer_id LIMIT $2",
        )
        .bind(&after)
        .bind(PAGE)
        .fetch_all(&mut *conn)
        .await?;
        let (Some(first), Some(last)) = (page.first(), page.last()) else { break };
        let rows = sqlx::query(&format!(
            "SELECT {SNAP_COLUMNS}, customer_id FROM subscription_history
             WHERE customer_id >= $1 AND customer_id <= $2 ORDER BY customer_id"
        ))
        .bind(&first.0)
        .bind(&last.0)
        .fetch_all(&mut *conn)
        .await?;
        let mut grouped: Vec<(String, Vec<Snap>)> = Vec::new();
        for r in &rows {
            let c: String = r.try_get(10)?;
            match grouped.last_mut() {
                Some((k, v)) if *k == c => v.push(snap(r)?),
                _ => grouped.push((c, vec![snap(r)?])),
            }
        }
        write_customers(conn, rules, through, grouped, &mut totals).await?;
        after = last.0.clone();
    }
    // Stripe customers not linked to ours (rare): one pass.
    let rows = sqlx::query(&format!(
        "SELECT {SNAP_COLUMNS}, stripe_customer_id FROM subscription_history WHERE customer_id IS NULL
         ORDER BY stripe_customer_id"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut grouped: Vec<(String, Vec<Snap>)> = Vec::new();
    for r in &rows {
        let key = key_of(None, &r.try_get::<String, _>(10)?);
        match grouped.last_mut() {
            Some((k, v)) if *k == key => v.push(snap(r)?),
            _ => grouped.push((key, vec![snap(r)?])),
        }
    }
    write_customers(conn, rules, through, grouped, &mut totals).await?;
    apply_deltas(conn, &totals).await
}

async fn write_customers(
    conn: &mut AnyConnection,
    rules: &Rules,
    through: Month,
    grouped: Vec<(String, Vec<Snap>)>,
    totals: &mut Deltas,
) -> Result<(), InsightsError> {
    let mut rows = Vec::new();
    let mut cal = Calendar::new(rules.tz);
    for (key, snaps) in grouped {
        let customer_id = (!key.starts_with("stripe:")).then(|| key.clone());
        let full = Customer::new(snaps, &rules.currency).months_in(&mut cal, through);
        for r in &full {
            add_row(totals, &r.month.to_string(), &r.plan, &totals_of(r), 1);
        }
        rows.extend(compress(full).into_iter().map(|r| (key.clone(), customer_id.clone(), r)));
    }
    insert_rows(conn, &rows).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(month: &str, plan: &str, s: i64, e: i64, movement: &'static str) -> MonthRow {
        MonthRow {
            month: Month::parse(month).unwrap(),
            plan: plan.into(),
            starting_cents: s,
            ending_cents: e,
            movement,
        }
    }

    #[test]
    fn stored_rows_are_the_months_where_something_happened_and_expand_back() {
        let full = vec![
            row("2026-01", "pro", 0, 9900, "new"),
            row("2026-02", "pro", 9900, 9900, "none"),
            row("2026-03", "pro", 9900, 9900, "none"),
            // Same price, another plan: kept, so the months after it carry the new plan.
            row("2026-04", "team", 9900, 9900, "none"),
            row("2026-05", "team", 9900, 0, "churn"),
            row("2026-07", "pro", 0, 2900, "reactivation"),
            row("2026-08", "pro", 2900, 2900, "none"),
        ];
        let stored = compress(full.clone());
        let months: Vec<String> = stored.iter().map(|r| r.month.to_string()).collect();
        assert_eq!(months, ["2026-01", "2026-04", "2026-05", "2026-07"]);
        assert_eq!(expand(&stored, Month::parse("2026-08").unwrap()), full);
        // Later months the rollups cover repeat the last end.
        let longer = expand(&stored, Month::parse("2026-09").unwrap());
        assert_eq!(longer.last(), Some(&row("2026-09", "pro", 2900, 2900, "none")));
    }
}
