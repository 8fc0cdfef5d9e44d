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

use crate::admission::{Budget, Cap, LimitError, Reservation, BUSINESS_DAY};
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

/// Settles every call of `batch` in one statement on `conn` (`j1msky_settle_batch`,
/// migrations 0043 and 0048): its ledger rows, and the spend and release of what its
/// calls held per call. What calls spent from this process's budget slices is not written
/// here but kept by the slices until their next flush ([`crate::leases::Leases::flush`],
/// migration 0052), so a batch costs the server nothing per slice. Returns the business's
/// spend of the day after it when the batch spent in a day's window per call (the latest
/// such day; its slices' flushed spend included), otherwise none. The sums per window are
/// made here, so the server reaches every row through its key.
pub(crate) async fn settle(conn: &mut sqlx::AnyConnection, batch: &[Settlement]) -> Result<Option<Spent>, DbError> {
    // Windows in admission's lock order (by scope, then window), with the batch's spend.
    let mut windows: BTreeMap<(&str, i64), i64> = BTreeMap::new();
    let mut held: Vec<(&str, &str, i64)> = Vec::new();
    let mut rows = Vec::new();
    for s in batch {
        let a = s.actual.micros();
        for (scope, window) in &s.reservation.budgets {
            *windows.entry((scope, *window)).or_default() += a;
            held.push((&s.reservation.id, scope, *window));
        }
        rows.extend(s.attempts.iter().map(ledger_row));
    }
    let index: HashMap<(&str, i64), usize> = windows.keys().enumerate().map(|(i, k)| (*k, i + 1)).collect();
    let at = |scope: &str, window: i64| index.get(&(scope, window)).copied().unwrap_or(0);
    // Windows are in key order, so the last of the day's scope is the latest day.
    let want = windows.keys().rev().find(|(scope, _)| *scope == BUSINESS_DAY).copied();
    let answer: String = sqlx::query_scalar("SELECT j1msky_settle_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .bind(text_array(windows.keys().map(|(s, _)| *s)))
        .bind(number_array(windows.keys().map(|(_, w)| *w)))
        .bind(number_array(windows.values().copied()))
        // No slice parts (0043's l_*): the slices' flushes write them.
        .bind("{}")
        .bind("{}")
        .bind("{}")
        .bind(text_array(held.iter().map(|(id, _, _)| *id)))
        .bind(number_array(held.iter().map(|(_, s, w)| at(s, *w) as i64)))
        .bind(serde_json::to_string(&rows).map_err(|e| DbError::Corrupt(format!("ledger rows: {e}")))?)
        .bind(want.map_or(-1, |(scope, window)| at(scope, window) as i32))
        .fetch_one(conn)
        .await?;
    match want {
        // No row for that window (or no day in the batch): nothing to report.
        _ if answer.is_empty() => Ok(None),
        Some((scope, window)) => match answer.parse() {
            Ok(value) => Ok(Some((scope.to_string(), window, value))),
            Err(e) => Err(DbError::Corrupt(format!("j1msky_settle_batch answered `{answer}` for {scope}: {e}"))),
        },
        None => Err(DbError::Corrupt(format!("j1msky_settle_batch answered `{answer}` where nothing was asked"))),
    }
}

/// A PostgreSQL array literal of texts (`{"a","b"}`), every element quoted and escaped.
pub(crate) fn text_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
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
pub(crate) fn number_array(items: impl Iterator<Item = i64>) -> String {
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

    fn attempt(request_id: &str, cost: i64) -> Attempt {
        Attempt {
            request_id: request_id.into(),
            attempt: 1,
            customer_id: None,
            task_id: None,
            team: None,
            role: None,
            category: None,
            provider: "moonshot".into(),
            model_requested: "kimi".into(),
            model_used: "kimi".into(),
            input_tokens: 10,
            output_tokens: 20,
            cost: Money::from_micros(cost),
            latency_micros: 1,
            outcome: "ok".into(),
            fallback_reason: None,
            created_at: 1,
        }
    }

    /// A batch over two days' windows and a customer's month, one call from a slice of the
    /// day and one from per-call reservations: every window gets what was held per call,
    /// the slice's part waits for the slice's flush (migration 0052), and the answer is the
    /// latest day's spend alone (its slices' flushed spend included).
    #[tokio::test]
    async fn a_batch_answers_the_latest_days_spend_alone() {
        use crate::admission::{LeaseKind, Leased};
        if j1msky_db::testing::requested_backend() != j1msky_db::Backend::Postgres {
            return; // settlement batches are PostgreSQL's (SQLite settles per call)
        }
        let t = j1msky_db::testing::TestDb::new().await;
        let (day1, day2, month) = (86_400_000_000_i64, 2 * 86_400_000_000_i64, 0_i64);
        for (scope, start, reserved, spent) in [
            (BUSINESS_DAY, day1, 0, 700),
            (BUSINESS_DAY, day2, 5_000 + 300, 40),
            ("customer:c1:month", month, 300, 1_000),
        ] {
            sqlx::query("INSERT INTO budget_windows (scope, window_start, cap_micros, reserved_micros, spent_micros) VALUES ($1, $2, 1000000, $3, $4)")
                .bind(scope).bind(start).bind(reserved).bind(spent)
                .execute(t.db.pool()).await.expect("window");
        }
        // Another process's slice of day 2 has spent 60 already; ours holds 5,000.
        for (id, amount, spent) in [("lease-other", 1_000, 60), ("lease-ours", 5_000, 0)] {
            sqlx::query("INSERT INTO limit_leases (id, kind, scope, window_start, owner, amount, expires_at, spent) VALUES ($1, 'budget', $2, $3, 'o', $4, 9, $5)")
                .bind(id).bind(BUSINESS_DAY).bind(day2).bind(amount).bind(spent)
                .execute(t.db.pool()).await.expect("lease");
        }
        for (scope, start) in [(BUSINESS_DAY, day2), ("customer:c1:month", month)] {
            sqlx::query("INSERT INTO budget_reservations (id, scope, window_start, owner, amount_micros, expires_at) VALUES ('res-2', $1, $2, 'o', 300, 9)")
                .bind(scope).bind(start)
                .execute(t.db.pool()).await.expect("reservation");
        }
        let sliced = Settlement {
            reservation: Reservation {
                id: "res-1".into(),
                budgets: vec![("customer:c1:month".into(), month)],
                amount: Money::from_micros(0),
                leased: vec![Leased {
                    kind: LeaseKind::Budget,
                    scope: BUSINESS_DAY.into(),
                    window_start: day2,
                    lease: "lease-ours".into(),
                    amount: 200,
                }],
            },
            actual: Money::from_micros(150),
            attempts: vec![attempt("req-1", 150)],
        };
        let held = Settlement {
            reservation: Reservation {
                id: "res-2".into(),
                budgets: vec![(BUSINESS_DAY.into(), day2), ("customer:c1:month".into(), month)],
                amount: Money::from_micros(300),
                leased: vec![],
            },
            actual: Money::from_micros(250),
            attempts: vec![attempt("req-2", 250)],
        };
        let late = Settlement {
            reservation: Reservation {
                id: "res-3".into(),
                budgets: vec![(BUSINESS_DAY.into(), day1)],
                amount: Money::from_micros(0),
                leased: vec![],
            },
            actual: Money::from_micros(5),
            attempts: vec![attempt("req-3", 5)],
        };
        let mut conn = t.db.pool().acquire().await.expect("connection");
        let answer = settle(&mut conn, &[sliced, held, late]).await.expect("settled");
        // Day 2: the window's 40 + 250 settled per call, plus the other slice's 60; our
        // slice's 150 is not written by the batch.
        assert_eq!(answer, Some((BUSINESS_DAY.to_string(), day2, 40 + 250 + 60)));
        let windows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT scope, window_start, reserved_micros, spent_micros FROM budget_windows ORDER BY scope, window_start",
        )
        .fetch_all(t.db.pool())
        .await
        .expect("windows");
        assert_eq!(
            windows,
            vec![
                (BUSINESS_DAY.to_string(), day1, 0, 705),
                (BUSINESS_DAY.to_string(), day2, 5_000, 290),
                ("customer:c1:month".to_string(), month, 0, 1_400),
            ]
        );
        let lease = |id: &'static str| {
            let pool = t.db.pool().clone();
            async move {
                sqlx::query_as::<_, (i64, i64)>("SELECT amount, spent FROM limit_leases WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .expect("lease")
            }
        };
        assert_eq!(lease("lease-ours").await, (5_000, 0), "the batch leaves the slice's row alone");
        // The slice's flush moves the 150 from what the row holds to its spend and answers
        // the day with it; a part of a slice the sweeper took (no row) adds nothing anywhere.
        let flushed: i64 = sqlx::query_scalar("SELECT j1msky_slices_spent($1, $2, $3, $4)")
            .bind(r#"{"lease-ours","lease-swept"}"#)
            .bind("{150,999}")
            .bind(BUSINESS_DAY)
            .bind(day2)
            .fetch_one(&mut *conn)
            .await
            .expect("flushed");
        assert_eq!(flushed, 40 + 250 + 60 + 150);
        assert_eq!(lease("lease-ours").await, (4_850, 150));
        let unasked: i64 = sqlx::query_scalar("SELECT j1msky_slices_spent('{}', '{}', NULL, 0)")
            .fetch_one(&mut *conn)
            .await
            .expect("nothing asked");
        assert_eq!(unasked, -1);
        let (rows,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM llm_calls").fetch_one(t.db.pool()).await.expect("rows");
        assert_eq!(rows, 3);
        // A batch that spent in no day's budget asks for nothing and gets nothing.
        let monthly = Settlement {
            reservation: Reservation {
                id: "res-4".into(),
                budgets: vec![("customer:c1:month".into(), month)],
                amount: Money::from_micros(0),
                leased: vec![],
            },
            actual: Money::from_micros(1),
            attempts: vec![attempt("req-4", 1)],
        };
        assert_eq!(settle(&mut conn, &[monthly]).await.expect("settled"), None);
        // Processes of an older build during an upgrade still get every window's spend.
        let every: String =
            sqlx::query_scalar("SELECT j1msky_settle_by_key($1, $2, '{0,0}', '{}', '{}', '{}', '{}', '{}', '[]')")
                .bind(format!("{{\"{BUSINESS_DAY}\",\"customer:c1:month\"}}"))
                .bind(format!("{{{day1},{month}}}"))
                .fetch_one(&mut *conn)
                .await
                .expect("the older function");
        assert_eq!(every, "705,1401");
    }

    #[test]
    fn writes_array_literals() {
        assert_eq!(text_array(["business:day", "a\"b", "c\\d"].into_iter()), r#"{"business:day","a\"b","c\\d"}"#);
        assert_eq!(text_array(std::iter::empty()), "{}");
        assert_eq!(number_array([1, -2, 30].into_iter()), "{1,-2,30}");
    }
}
