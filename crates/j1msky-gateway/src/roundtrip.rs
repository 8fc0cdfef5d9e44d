//! Shared limits on PostgreSQL at one round trip per admission and one per batch of
//! settlements: the server-side functions of migration 0035 (`j1msky_admit`,
//! `j1msky_settle`) do what [`crate::limits`] does on SQLite in a transaction of many
//! statements. One statement in autocommit holds the rows every call shares (the global
//! cap, the day's budget) only while the server runs it, never while a network round trip
//! to this process is in flight. The rules are the same as SQLite's: every cap counted and
//! every budget reserved or nothing; a reservation is a row naming its owner and expiry;
//! settling releases it (or, when the sweeper of dead owners got there first, only adds
//! the spend) and books the ledger rows, a repeated (request id, attempt) counting once.

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

/// Settles every call of `batch` in one statement on `conn`; returns the spend of each
/// window changed.
pub(crate) async fn settle(conn: &mut sqlx::AnyConnection, batch: &[Settlement]) -> Result<Vec<Spent>, DbError> {
    let mut settle = Vec::new();
    let mut rows = Vec::new();
    for s in batch {
        for (scope, window) in &s.reservation.budgets {
            settle.push(json!({"id": s.reservation.id, "s": scope, "w": window, "a": s.actual.micros()}));
        }
        // Parts taken from a budget slice turn that much of the slice into spend (0041).
        for l in s.reservation.leased.iter().filter(|l| l.kind == LeaseKind::Budget) {
            settle.push(json!({"l": l.lease, "s": l.scope, "w": l.window_start, "a": s.actual.micros()}));
        }
        rows.extend(s.attempts.iter().map(ledger_row));
    }
    let answer: String = sqlx::query_scalar("SELECT j1msky_settle($1, $2)")
        .bind(json!(settle).to_string())
        .bind(json!(rows).to_string())
        .fetch_one(conn)
        .await?;
    let changed: Vec<serde_json::Value> = serde_json::from_str(&answer)
        .map_err(|e| DbError::Corrupt(format!("j1msky_settle answered `{answer}`: {e}")))?;
    Ok(changed
        .iter()
        .filter_map(|c| Some((c["s"].as_str()?.to_string(), c["w"].as_i64()?, c["spent"].as_i64()?)))
        .collect())
}

fn ledger_row(a: &Attempt) -> serde_json::Value {
    json!({
        "id": j1msky_core::ids::new_id("llm"),
        "request_id": a.request_id,
        "attempt": a.attempt,
        "customer_id": a.customer_id,
        "task_id": a.task_id,
        "team": a.team,
        "role": a.role,
        "category": a.category,
        "provider": a.provider,
        "model_requested": a.model_requested,
        "model_used": a.model_used,
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
        "cost_micros": a.cost.micros(),
        "latency_micros": a.latency_micros,
        "outcome": a.outcome,
        "fallback_reason": a.fallback_reason,
        "created_at": a.created_at,
    })
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
}
