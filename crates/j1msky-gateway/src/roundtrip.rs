//! Shared limits on PostgreSQL at one round trip per admission and one per batch of
//! settlements: the server-side functions of migration 0035 (`j1msky_admit`,
//! `j1msky_settle`) do what [`crate::limits`] does on SQLite in a transaction of many
//! statements. One statement in autocommit holds the rows every call shares (the global
//! cap, the day's budget) only while the server runs it, never while a network round trip
//! to this process is in flight. The rules are the same as SQLite's: every cap counted and
//! every budget reserved or nothing; a reservation is a row naming its owner and expiry;
//! settling releases it (or, when the sweeper of dead owners got there first, only adds
//! the spend) and books the ledger rows, a repeated (request id, attempt) counting once.

use std::collections::{BTreeMap, HashMap};

use j1msky_core::Money;
use j1msky_db::{Db, DbError};
use serde_json::json;

use crate::admission::{Budget, Cap, LeaseKind, LimitError, Reservation};
use crate::ledger::Attempt;

/// Why `j1msky_admit` refused: the index of the cap or budget, and for a budget what was
/// committed in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Cap(usize),
    Budget(usize, i64),
}

/// Counts one request against `caps` and reserves `amount` in `budgets` (both already in
/// lock order) in one statement; `None` when admitted.
#[allow(clippy::too_many_arguments)] // the function's parameters, one for one
pub(crate) async fn admit(
    db: &Db,
    caps: &[&Cap],
    window: i64,
    budgets: &[&Budget],
    amount: Money,
    id: &str,
    owner: &str,
    expires_at: i64,
) -> Result<Option<Refusal>, LimitError> {
    let caps = json!(caps.iter().map(|c| json!({"s": c.scope, "c": c.cap})).collect::<Vec<_>>()).to_string();
    let budgets = json!(budgets
        .iter()
        .map(|b| json!({"s": b.scope, "w": b.window_start, "c": b.cap.micros()}))
        .collect::<Vec<_>>())
    .to_string();
    let answer: String = sqlx::query_scalar("SELECT j1msky_admit($1, $2, $3, $4, $5, $6, $7)")
        .bind(caps)
        .bind(window)
        .bind(budgets)
        .bind(amount.micros())
        .bind(id)
        .bind(owner)
        .bind(expires_at)
        .fetch_one(db.pool())
        .await?;
    parse_refusal(&answer)
}

fn parse_refusal(answer: &str) -> Result<Option<Refusal>, LimitError> {
    let bad = || LimitError::Db(DbError::Corrupt(format!("j1msky_admit answered `{answer}`")));
    let mut parts = answer.split(' ');
    match parts.next() {
        Some("") => Ok(None),
        Some("cap") => Ok(Some(Refusal::Cap(parts.next().and_then(|i| i.parse().ok()).ok_or_else(bad)?))),
        Some("budget") => {
            let i = parts.next().and_then(|i| i.parse().ok()).ok_or_else(bad)?;
            let committed = parts.next().and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            Ok(Some(Refusal::Budget(i, committed)))
        }
        _ => Err(bad()),
    }
}

/// One call to settle: its reservation, what it actually cost, and its ledger rows.
#[derive(Debug, Clone)]
pub(crate) struct Settlement {
    pub reservation: Reservation,
    pub actual: Money,
    pub attempts: Vec<Attempt>,
}

/// A budget window's spend after a settlement: (scope, window start, spent micros).
pub(crate) type Spent = (String, i64, i64);

/// Settles every call of `batch` in one statement on `conn` (`j1msky_settle_by_key`,
/// migration 0043); returns the spend of each window changed. The sums per window and per
/// slice are made here, so the server reaches every row through its key.
pub(crate) async fn settle(conn: &mut sqlx::AnyConnection, batch: &[Settlement]) -> Result<Vec<Spent>, DbError> {
    // Windows in admission's lock order (by scope, then window), with the batch's spend.
    let mut windows: BTreeMap<(&str, i64), i64> = BTreeMap::new();
    let mut leased: BTreeMap<(&str, &str, i64), i64> = BTreeMap::new();
    let mut held: Vec<(&str, &str, i64)> = Vec::new();
    let mut rows = Vec::new();
    for s in batch {
        let a = s.actual.micros();
        for (scope, window) in &s.reservation.budgets {
            *windows.entry((scope, *window)).or_default() += a;
            held.push((&s.reservation.id, scope, *window));
        }
        // Parts taken from a budget slice turn that much of the slice into spend (0041).
        for l in s.reservation.leased.iter().filter(|l| l.kind == LeaseKind::Budget) {
            *windows.entry((&l.scope, l.window_start)).or_default() += a;
            *leased.entry((&l.lease, &l.scope, l.window_start)).or_default() += a;
        }
        rows.extend(s.attempts.iter().map(ledger_row));
    }
    let index: HashMap<(&str, i64), usize> = windows.keys().enumerate().map(|(i, k)| (*k, i + 1)).collect();
    let at = |scope: &str, window: i64| index.get(&(scope, window)).copied().unwrap_or(0);
    let answer: String = sqlx::query_scalar("SELECT j1msky_settle_by_key($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(text_array(windows.keys().map(|(s, _)| *s)))
        .bind(number_array(windows.keys().map(|(_, w)| *w)))
        .bind(number_array(windows.values().copied()))
        .bind(text_array(leased.keys().map(|(l, _, _)| *l)))
        .bind(number_array(leased.keys().map(|(_, s, w)| at(s, *w) as i64)))
        .bind(number_array(leased.values().copied()))
        .bind(text_array(held.iter().map(|(id, _, _)| *id)))
        .bind(number_array(held.iter().map(|(_, s, w)| at(s, *w) as i64)))
        .bind(serde_json::to_string(&rows).map_err(|e| DbError::Corrupt(format!("ledger rows: {e}")))?)
        .fetch_one(conn)
        .await?;
    let spent: Vec<&str> = if windows.is_empty() { Vec::new() } else { answer.split(',').collect() };
    if spent.len() != windows.len() {
        return Err(DbError::Corrupt(format!(
            "j1msky_settle_by_key answered `{answer}` for {} windows",
            windows.len()
        )));
    }
    let mut changed = Vec::new();
    for ((scope, window), value) in windows.keys().zip(spent) {
        if value.is_empty() {
            continue; // no row for that window: nothing to report
        }
        let value =
            value.parse().map_err(|e| DbError::Corrupt(format!("j1msky_settle_by_key answered `{answer}`: {e}")))?;
        changed.push((scope.to_string(), *window, value));
    }
    Ok(changed)
}

/// A PostgreSQL array literal of texts (`{"a","b"}`), every element quoted and escaped.
fn text_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// A PostgreSQL array literal of integers (`{1,2}`).
fn number_array(items: impl Iterator<Item = i64>) -> String {
    let items: Vec<String> = items.map(|n| n.to_string()).collect();
    format!("{{{}}}", items.join(","))
}

/// A ledger row as `j1msky_settle_by_key` reads it (`json_to_recordset`): serialised
/// straight from the attempt, without building a JSON map per row.
#[derive(serde::Serialize)]
struct LedgerRow<'a> {
    id: String,
    request_id: &'a str,
    attempt: i64,
    customer_id: Option<&'a str>,
    task_id: Option<&'a str>,
    team: Option<&'a str>,
    role: Option<&'a str>,
    category: Option<&'a str>,
    provider: &'a str,
    model_requested: &'a str,
    model_used: &'a str,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    latency_micros: i64,
    outcome: &'a str,
    fallback_reason: Option<&'a str>,
    created_at: i64,
}

fn ledger_row(a: &Attempt) -> LedgerRow<'_> {
    LedgerRow {
        id: j1msky_core::ids::new_id("llm"),
        request_id: &a.request_id,
        attempt: a.attempt,
        customer_id: a.customer_id.as_deref(),
        task_id: a.task_id.as_deref(),
        team: a.team.as_deref(),
        role: a.role.as_deref(),
        category: a.category.as_deref(),
        provider: &a.provider,
        model_requested: &a.model_requested,
        model_used: &a.model_used,
        input_tokens: a.input_tokens,
        output_tokens: a.output_tokens,
        cost_micros: a.cost.micros(),
        latency_micros: a.latency_micros,
        outcome: &a.outcome,
        fallback_reason: a.fallback_reason.as_deref(),
        created_at: a.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_functions_answers() {
        assert_eq!(parse_refusal("").ok(), Some(None));
        assert_eq!(parse_refusal("cap 2").ok(), Some(Some(Refusal::Cap(2))));
        assert_eq!(parse_refusal("budget 1 1135").ok(), Some(Some(Refusal::Budget(1, 1135))));
        assert!(parse_refusal("budget x").is_err());
        assert!(parse_refusal("nonsense").is_err());
    }

    #[test]
    fn writes_array_literals() {
        assert_eq!(text_array(["business:day", "a\"b", "c\\d"].into_iter()), r#"{"business:day","a\"b","c\\d"}"#);
        assert_eq!(text_array(std::iter::empty()), "{}");
        assert_eq!(number_array([1, -2, 30].into_iter()), "{1,-2,30}");
    }
}
