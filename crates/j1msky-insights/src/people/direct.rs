//! `insights_people` in `kpi rebuild` on a SQLite file (`crate::direct`): [`compute`]
//! steps the SQL rebuild's own SELECT (`rollup::people_select`) on the reading
//! connection, [`write`] inserts its rows in key order on the writing one. NPS answers
//! stay with the SQL path (`rollup::nps`): lifecycle reads them through its own function.

use rusqlite::Connection;

use super::rollup::{people_select, PEOPLE_COLUMNS};
use crate::direct::{err, Insert, Value};
use crate::InsightsError;

/// One customer's row: id, plan, then creation, the four stage times and activation.
pub struct Person {
    id: String,
    plan: Option<String>,
    times: [Option<i64>; 6],
}

/// Every customer's row, in id order.
pub fn compute(conn: &Connection) -> Result<Vec<Person>, InsightsError> {
    let mut stmt = conn.prepare(&people_select()).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        let mut times = [None; 6];
        for (i, t) in times.iter_mut().enumerate() {
            *t = r.get(i + 2).map_err(err)?;
        }
        out.push(Person { id: r.get(0).map_err(err)?, plan: r.get(1).map_err(err)?, times });
    }
    out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Replaces `insights_people` by `people` inside the caller's write transaction (its
/// indexes dropped and built again after the rows, as `bulk` does for the SQL rebuild).
pub fn write(tx: &Connection, people: &[Person]) -> Result<(), InsightsError> {
    tx.execute_batch("DELETE FROM insights_people").map_err(err)?;
    let indexes = crate::direct::drop_indexes(tx, "insights_people")?;
    let mut insert = Insert::new(tx, "insights_people", &PEOPLE_COLUMNS)?;
    for p in people {
        let head = [Value::Text(&p.id), p.plan.as_deref().map_or(Value::Null, Value::Text)];
        insert.push(head.into_iter().chain(p.times.map(|t| t.map_or(Value::Null, Value::Int))))?;
    }
    crate::direct::create_indexes(tx, &indexes)
}
