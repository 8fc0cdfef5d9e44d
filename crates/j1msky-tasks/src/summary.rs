//! A customer's tasks summed up over a period: counts by state and by team, and what
//! they were charged (the lifecycle engine's week in review and monthly report).

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

use crate::TaskError;

/// A customer's tasks queued in `[from, to)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub running: i64,
    pub queued: i64,
    /// Tasks per team, most used first in `top_teams`.
    pub by_team: BTreeMap<String, i64>,
    /// Charged to the customer (micro-USD), succeeded tasks only.
    pub charged_micros: i64,
}

impl Summary {
    /// Succeeded tasks as a whole percentage of finished ones; `None` before any finished.
    pub fn success_percent(&self) -> Option<i64> {
        let finished = self.succeeded + self.failed;
        (finished > 0).then(|| self.succeeded * 100 / finished)
    }

    /// Teams by number of tasks, most first.
    pub fn top_teams(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = self.by_team.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

/// Sums `customer_id`'s tasks queued in `[from, to)`, on the caller's connection.
pub async fn of_customer(
    conn: &mut AnyConnection,
    customer_id: &str,
    from: i64,
    to: i64,
) -> Result<Summary, TaskError> {
    let rows = sqlx::query(
        "SELECT team, state, COUNT(*), CAST(COALESCE(SUM(COALESCE(charge_micros, 0)), 0) AS BIGINT) FROM tasks
         WHERE customer_id = $1 AND queued_at >= $2 AND queued_at < $3 GROUP BY team, state",
    )
    .bind(customer_id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Summary::default();
    for r in &rows {
        let team: String = r.try_get(0)?;
        let state: String = r.try_get(1)?;
        let n: i64 = r.try_get(2)?;
        let charged: i64 = r.try_get(3)?;
        s.total += n;
        *s.by_team.entry(team).or_default() += n;
        match state.as_str() {
            "succeeded" => {
                s.succeeded += n;
                s.charged_micros += charged;
            }
            "failed" => s.failed += n,
            "running" => s.running += n,
            "queued" => s.queued += n,
            _ => {}
        }
    }
    Ok(s)
}
