//! The MRR rollups of `kpi rebuild` on a SQLite file, on the rebuild's own connections
//! (`crate::direct`): [`compute`] reads `subscription_history` once in table order on a
//! read-only connection and runs the same rules as [`super::store::rebuild`] (each
//! customer's months from `Customer::months_in`, stored as `compress` keeps them, the
//! month sums of `Totals`); [`write`] stores the result on the writing connection in
//! primary-key order. Splitting the two lets the reading and computing run on one core
//! while the other writes the usage rollups.

use std::collections::{BTreeMap, HashMap};

use rusqlite::Connection;

use super::compute::{Calendar, Customer, MonthRow, Snap, Totals, TOTAL_COLUMNS};
use super::store::{compress, key_of, Rules};
use crate::direct::{err, Insert, Value};
use crate::{InsightsError, Month};

/// What [`write`] stores: each customer's rows (key order, months in order) and the month
/// sums per (month, plan; '' for all plans).
pub struct Computed {
    through: Month,
    rows: Vec<(String, Vec<MonthRow>)>,
    totals: BTreeMap<(Month, String), Totals>,
}

/// The month the rollups are rebuilt through: the one they cover, at least `this_month`
/// (as `store::lock` then `max` in the SQL rebuild).
fn through(conn: &Connection, this_month: Month) -> Result<Month, InsightsError> {
    let covered: Option<String> = conn
        .query_row("SELECT through_month FROM insights_mrr_state WHERE id = 1", [], |r| r.get(0))
        .map(Some)
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })
        .map_err(err)?;
    Ok(covered.map(|m| Month::parse(&m)).transpose()?.map_or(this_month, |c| c.max(this_month)))
}

/// Reads the whole history (one pass in table order, grouped by customer key in memory)
/// and computes every customer's rows and the month sums.
pub fn compute(conn: &Connection, rules: &Rules, this_month: Month) -> Result<Computed, InsightsError> {
    let through = through(conn, this_month)?;
    let mut by_key: HashMap<String, Vec<Snap>> = HashMap::new();
    let sql = "SELECT subscription_id, version, status, plan, currency, amount_cents, discount_percent_bp,
                      discount_amount_cents, discount_end, effective_at, customer_id, stripe_customer_id
               FROM subscription_history";
    let mut stmt = conn.prepare(sql).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let snap = Snap {
            subscription: r.get(0).map_err(err)?,
            version: r.get(1).map_err(err)?,
            status: r.get(2).map_err(err)?,
            plan: r.get(3).map_err(err)?,
            currency: r.get(4).map_err(err)?,
            amount_cents: r.get(5).map_err(err)?,
            discount_percent_bp: r.get(6).map_err(err)?,
            discount_amount_cents: r.get(7).map_err(err)?,
            discount_end: r.get(8).map_err(err)?,
            effective_at: r.get(9).map_err(err)?,
        };
        let customer: Option<String> = r.get(10).map_err(err)?;
        let key = match customer {
            Some(c) => c,
            None => key_of(None, &r.get::<_, String>(11).map_err(err)?),
        };
        by_key.entry(key).or_default().push(snap);
    }
    let mut keyed: Vec<(String, Vec<Snap>)> = by_key.into_iter().collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut cal = Calendar::new(rules.tz);
    let mut totals: BTreeMap<(Month, String), Totals> = BTreeMap::new();
    let mut out = Vec::with_capacity(keyed.len());
    for (key, snaps) in keyed {
        let full = Customer::new(snaps, &rules.currency).months_in(&mut cal, through);
        for r in &full {
            let t = Totals::of(r.starting_cents, r.ending_cents, r.movement);
            // As `store::add_row`: the plan's sums and the all-plans sums ('').
            if !r.plan.is_empty() {
                totals.entry((r.month, r.plan.clone())).or_default().add(&t, 1);
            }
            totals.entry((r.month, String::new())).or_default().add(&t, 1);
        }
        let stored = compress(full);
        if !stored.is_empty() {
            out.push((key, stored));
        }
    }
    Ok(Computed { through, rows: out, totals })
}

/// Replaces both MRR rollups by `c` and sets the month they cover, inside the caller's
/// write transaction (the state row is written first, as every MRR writer does).
pub fn write(tx: &Connection, c: &Computed) -> Result<(), InsightsError> {
    let through = c.through.to_string();
    tx.execute(
        "INSERT INTO insights_mrr_state (id, through_month) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET through_month = excluded.through_month",
        [&through],
    )
    .map_err(err)?;
    tx.execute_batch("DELETE FROM insights_mrr_customer_months; DELETE FROM insights_mrr_months").map_err(err)?;
    let indexes = crate::direct::drop_indexes(tx, "insights_mrr_customer_months")?;
    let cols =
        ["month", "customer_key", "customer_id", "plan", "starting_cents", "ending_cents", "movement", "next_month"];
    let mut insert = Insert::new(tx, "insights_mrr_customer_months", &cols)?;
    for (key, rows) in &c.rows {
        let customer_id = if key.starts_with("stripe:") { Value::Null } else { Value::Text(key) };
        for (i, r) in rows.iter().enumerate() {
            let month = r.month.to_string();
            let next = rows.get(i + 1).map(|n| n.month.to_string());
            insert.push([
                Value::Text(&month),
                Value::Text(key),
                customer_id,
                Value::Text(&r.plan),
                Value::Int(r.starting_cents),
                Value::Int(r.ending_cents),
                Value::Text(r.movement),
                next.as_deref().map_or(Value::Null, Value::Text),
            ])?;
        }
    }
    let mut cols = vec!["month", "plan"];
    cols.extend(TOTAL_COLUMNS);
    let mut insert = Insert::new(tx, "insights_mrr_months", &cols)?;
    for ((month, plan), t) in &c.totals {
        // `store::apply_deltas` leaves zero sums out.
        if t.is_zero() {
            continue;
        }
        let month = month.to_string();
        insert.push([Value::Text(&month), Value::Text(plan)].into_iter().chain(t.0.map(Value::Int)))?;
    }
    crate::direct::create_indexes(tx, &indexes)
}
