//! One rollup table rewritten by `kpi rebuild` on a SQLite file (`direct`), its rows handed
//! over in primary-key order. A table that was empty is filled (`Mode::Fill`: its
//! secondary indexes dropped first and built after, as before). A table that held rows is
//! merged (`Mode::Merge`): its old rows are read in the same order from the reading
//! connection, whose snapshot is the rebuild's start, and only what differs is written —
//! a row missing is inserted, a row with other values updated, a row no longer produced
//! deleted. A rebuild over rollups the consumers kept right then writes almost nothing:
//! no emptied pages, no index builds, no WAL of the whole rollups to checkpoint.
//!
//! Merging needs nothing of the order but that the old rows come sorted (they do, by
//! `ORDER BY` the key): a row handed over out of order is inserted (its old row, passed
//! by then, was deleted), so the table's contents end up right either way; only the work
//! grows.

use std::cmp::Ordering;

use fallible_streaming_iterator::FallibleStreamingIterator;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Statement};
use serde::Serialize;

use crate::direct::{broken, err, Insert, Value};
use crate::InsightsError;

/// How the rebuild writes a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The table is empty: rows are appended.
    Fill,
    /// The table holds rows: only the differences are written.
    Merge,
}

/// What a rebuild changed in one table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Rows that were already right.
    pub kept: u64,
}

/// What a rebuild changed in each table it merged or filled, by table name.
pub type TableChanges = Vec<(&'static str, Changes)>;

/// The changes of several tables added up.
impl std::iter::Sum for Changes {
    fn sum<I: Iterator<Item = Changes>>(all: I) -> Changes {
        all.fold(Changes::default(), |a, c| Changes {
            inserted: a.inserted + c.inserted,
            updated: a.updated + c.updated,
            deleted: a.deleted + c.deleted,
            kept: a.kept + c.kept,
        })
    }
}

impl Changes {
    /// Rows written (inserted, updated or deleted).
    pub fn written(&self) -> u64 {
        self.inserted + self.updated + self.deleted
    }
}

/// How the rebuild writes `table`: merged when it holds a row, filled when empty (read on
/// the writing connection before the rebuild changes it).
pub(crate) fn mode_of(tx: &Connection, table: &str) -> Result<Mode, InsightsError> {
    let any: bool = tx.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |r| r.get(0)).map_err(err)?;
    Ok(if any { Mode::Merge } else { Mode::Fill })
}

/// Where the rebuild's writers find the old rows of the tables it merges.
pub(crate) struct Sources<'r> {
    /// The reading connection (its snapshot the rebuild's start); `None`: nothing merges.
    reader: Option<&'r Connection>,
    merged: Vec<&'static str>,
}

impl<'r> Sources<'r> {
    /// `merged` are the tables found holding rows ([`mode_of`]), read through `reader`.
    pub(crate) fn new(reader: Option<&'r Connection>, merged: Vec<&'static str>) -> Self {
        Sources { reader, merged }
    }

    /// The old rows of `table` when it is merged, else `None` (it is filled).
    pub(crate) fn old(&self, table: &str, columns: &[&str]) -> Result<Option<Old<'r>>, InsightsError> {
        if !self.merged.contains(&table) {
            return Ok(None);
        }
        let reader = self.reader.ok_or_else(|| broken(format!("{table} merged without a reader")))?;
        Old::new(reader, table, columns).map(Some)
    }
}

/// Most columns a rewritten row has (the widest rollup has 12).
const MAX_COLUMNS: usize = 16;

/// The old rows of a merged table: a prepared statement on the reading connection.
pub(crate) struct Old<'r> {
    stmt: Statement<'r>,
    /// Positions (in the written columns) of the primary key's columns, in key order.
    key: Vec<usize>,
}

impl<'r> Old<'r> {
    /// The rows of `table` as `reader` sees them, in primary-key order, columns as written.
    pub(crate) fn new(reader: &'r Connection, table: &str, columns: &[&str]) -> Result<Self, InsightsError> {
        let key = key_positions(reader, table, columns)?;
        let order: Vec<&str> = key.iter().map(|&i| columns[i]).collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY {}", columns.join(", "), order.join(", "));
        Ok(Old { stmt: reader.prepare(&sql).map_err(err)?, key })
    }

    /// Positions (in the written columns) of the primary key's columns, in key order.
    pub(crate) fn key(&self) -> &[usize] {
        &self.key
    }
}

/// The positions of a row's `width` columns that are not in `key`.
fn other_columns(width: usize, key: &[usize]) -> Vec<usize> {
    (0..width).filter(|i| !key.contains(i)).collect()
}

/// The positions in `columns` of `table`'s primary-key columns, in the key's order; an
/// error when the table has none or a key column is not among `columns`.
pub(crate) fn key_positions(conn: &Connection, table: &str, columns: &[&str]) -> Result<Vec<usize>, InsightsError> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})")).map_err(err)?;
    let mut key: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(5)?, r.get::<_, String>(1)?)))
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?
        .into_iter()
        .filter(|(pk, _)| *pk > 0)
        .collect();
    key.sort();
    let corrupt = |m: String| broken(format!("{table}: {m}"));
    if key.is_empty() {
        return Err(corrupt("no primary key to merge its rows by".into()));
    }
    key.iter()
        .map(|(_, name)| {
            columns.iter().position(|c| c == name).ok_or_else(|| corrupt(format!("key column {name} is not written")))
        })
        .collect()
}

/// Where a merge's changes go: written at once on the writing connection
/// ([`Statements`]), or queued for it from another thread ([`Queue`]).
pub(crate) trait Sink {
    /// A row to insert, its values in the columns' order.
    fn insert(&mut self, row: &[Value<'_>]) -> Result<(), InsightsError>;
    /// A row whose values (the key's included) replace the stored row with its key.
    fn update(&mut self, row: &[Value<'_>]) -> Result<(), InsightsError>;
    /// The stored row `old` (its columns as written) to delete, by its key.
    fn delete(&mut self, old: &rusqlite::Row<'_>) -> Result<(), InsightsError>;
}

/// One table's INSERT, and for a merge its UPDATE and DELETE by key, prepared on the
/// writing connection.
pub(crate) struct Statements<'c> {
    insert: Insert<'c>,
    /// The statements by key (merge only).
    by_key: Option<ByKey<'c>>,
}

/// UPDATE and DELETE by key, with the key's positions and the other columns'.
struct ByKey<'c> {
    update: Statement<'c>,
    delete: Statement<'c>,
    key: Vec<usize>,
    values: Vec<usize>,
}

impl<'c> Statements<'c> {
    /// The statements writing `columns` of `table`; with `key` (its columns' positions in
    /// `columns`, in the key's order), also those changing and deleting a row by its key.
    pub(crate) fn new(
        tx: &'c Connection,
        table: &str,
        columns: &[&str],
        key: Option<&[usize]>,
    ) -> Result<Self, InsightsError> {
        if columns.len() > MAX_COLUMNS {
            return Err(broken(format!("{table}: {} columns, at most {MAX_COLUMNS}", columns.len())));
        }
        let insert = Insert::new(tx, table, columns)?;
        let Some(key) = key else { return Ok(Statements { insert, by_key: None }) };
        let values = other_columns(columns.len(), key);
        let n = values.len();
        let set: Vec<String> =
            values.iter().enumerate().map(|(i, &c)| format!("{} = ?{}", columns[c], i + 1)).collect();
        let at = |from: usize| -> Vec<String> {
            key.iter().enumerate().map(|(i, &c)| format!("{} = ?{}", columns[c], from + i + 1)).collect()
        };
        let update = if values.is_empty() {
            // Every column is the key: a row is either there or not, never updated.
            "SELECT 1".to_string()
        } else {
            format!("UPDATE {table} SET {} WHERE {}", set.join(", "), at(n).join(" AND "))
        };
        let delete = format!("DELETE FROM {table} WHERE {}", at(0).join(" AND "));
        let (update, delete) = (tx.prepare(&update).map_err(err)?, tx.prepare(&delete).map_err(err)?);
        Ok(Statements { insert, by_key: Some(ByKey { update, delete, key: key.to_vec(), values }) })
    }

    fn by_key(&mut self) -> Result<&mut ByKey<'c>, InsightsError> {
        self.by_key.as_mut().ok_or_else(|| broken("a change by key to a filled table"))
    }

    /// Writes a change another thread queued ([`Queue`]).
    pub(crate) fn apply(&mut self, op: &Op) -> Result<(), InsightsError> {
        fn values(row: &[OwnedValue]) -> Vec<Value<'_>> {
            row.iter().map(borrow).collect()
        }
        match op {
            Op::Insert(row) => self.insert(&values(row)),
            Op::Update(row) => self.update(&values(row)),
            Op::Delete(key) => {
                let delete = &mut self.by_key()?.delete;
                for (n, v) in key.iter().enumerate() {
                    delete.raw_bind_parameter(n + 1, borrow(v)).map_err(err)?;
                }
                delete.raw_execute().map_err(err)?;
                Ok(())
            }
        }
    }
}

impl Sink for Statements<'_> {
    fn insert(&mut self, row: &[Value<'_>]) -> Result<(), InsightsError> {
        self.insert.push(row.iter().copied())
    }

    fn update(&mut self, row: &[Value<'_>]) -> Result<(), InsightsError> {
        let ByKey { update, key, values, .. } = self.by_key()?;
        for (n, &i) in values.iter().chain(key.iter()).enumerate() {
            update.raw_bind_parameter(n + 1, row[i]).map_err(err)?;
        }
        update.raw_execute().map_err(err)?;
        Ok(())
    }

    fn delete(&mut self, old: &rusqlite::Row<'_>) -> Result<(), InsightsError> {
        let ByKey { delete, key, .. } = self.by_key()?;
        for (n, &i) in key.iter().enumerate() {
            delete.raw_bind_parameter(n + 1, ToSqlOutput::Borrowed(old.get_ref(i).map_err(err)?)).map_err(err)?;
        }
        delete.raw_execute().map_err(err)?;
        Ok(())
    }
}

/// An owned value of a queued change.
type OwnedValue = rusqlite::types::Value;

/// A change queued for the writing connection: a row (inserted or updated), or the key
/// of a row to delete.
pub(crate) enum Op {
    Insert(Vec<OwnedValue>),
    Update(Vec<OwnedValue>),
    Delete(Vec<OwnedValue>),
}

fn own(v: Value<'_>) -> OwnedValue {
    match v {
        Value::Text(s) => OwnedValue::Text(s.to_owned()),
        Value::Int(i) => OwnedValue::Integer(i),
        Value::Null => OwnedValue::Null,
    }
}

fn borrow(v: &OwnedValue) -> Value<'_> {
    match v {
        OwnedValue::Text(s) => Value::Text(s),
        OwnedValue::Integer(i) => Value::Int(*i),
        // The rollups hold integers, text and NULL only.
        _ => Value::Null,
    }
}

/// The changes of a merge run on another thread, sent to the writing connection's thread
/// (a bounded channel: a merge that finds much to change waits for the writer instead of
/// holding its changes in memory).
pub(crate) struct Queue {
    to: std::sync::mpsc::SyncSender<Op>,
    key: Vec<usize>,
}

impl Queue {
    /// Sends the changes to `to`; `key` as [`Statements::new`]'s.
    pub(crate) fn new(to: std::sync::mpsc::SyncSender<Op>, key: &[usize]) -> Self {
        Queue { to, key: key.to_vec() }
    }

    fn send(&self, op: Op) -> Result<(), InsightsError> {
        self.to.send(op).map_err(|_| broken("the writing thread stopped"))
    }
}

impl Sink for Queue {
    fn insert(&mut self, row: &[Value<'_>]) -> Result<(), InsightsError> {
        self.send(Op::Insert(row.iter().copied().map(own).collect()))
    }

    fn update(&mut self, row: &[Value<'_>]) -> Result<(), InsightsError> {
        self.send(Op::Update(row.iter().copied().map(own).collect()))
    }

    fn delete(&mut self, old: &rusqlite::Row<'_>) -> Result<(), InsightsError> {
        let key = self.key.iter().map(|&i| old.get::<_, OwnedValue>(i)).collect::<Result<_, _>>().map_err(err)?;
        self.send(Op::Delete(key))
    }
}

/// A merge in progress: the old rows' cursor.
struct Merging<'o> {
    old: rusqlite::Rows<'o>,
    key: &'o [usize],
    /// Positions of the columns that are not the key.
    values: Vec<usize>,
}

/// Rows of one table as the rebuild writes them (see the module's comment), their
/// changes going to `S`.
pub(crate) struct Rewrite<'o, S> {
    sink: S,
    merge: Option<Merging<'o>>,
    changes: Changes,
}

impl<'c, 'o> Rewrite<'o, Statements<'c>> {
    /// Writes `columns` of `table` on `tx`: filled when `old` is `None`, else merged
    /// with the rows `old` reads.
    pub(crate) fn new(
        tx: &'c Connection,
        table: &str,
        columns: &[&str],
        old: Option<&'o mut Old<'_>>,
    ) -> Result<Self, InsightsError> {
        let sink = Statements::new(tx, table, columns, old.as_ref().map(|o| &o.key[..]))?;
        Rewrite::to(sink, columns.len(), old)
    }
}

impl<'o, S: Sink> Rewrite<'o, S> {
    /// Rows of `width` columns, their changes to `sink`: merged with `old`'s rows, or all
    /// inserted when it is `None`.
    pub(crate) fn to(sink: S, width: usize, old: Option<&'o mut Old<'_>>) -> Result<Self, InsightsError> {
        let Some(Old { stmt, key }) = old else {
            return Ok(Rewrite { sink, merge: None, changes: Changes::default() });
        };
        let key = &key[..];
        let values = other_columns(width, key);
        let mut rows = stmt.raw_query();
        rows.advance().map_err(err)?;
        Ok(Rewrite { sink, merge: Some(Merging { old: rows, key, values }), changes: Changes::default() })
    }

    /// Writes one row, its values in the columns' order, rows in the key's order.
    pub(crate) fn push<'v>(&mut self, row: impl IntoIterator<Item = Value<'v>>) -> Result<(), InsightsError> {
        let mut buf = [Value::Null; MAX_COLUMNS];
        let mut len = 0;
        for v in row {
            let slot = buf.get_mut(len).ok_or_else(|| too_wide(len))?;
            *slot = v;
            len += 1;
        }
        let row = &buf[..len];
        if let Some(m) = self.merge.as_mut() {
            while let Some(old) = m.old.get() {
                let order = m.key.iter().try_fold(Ordering::Equal, |o, &i| -> rusqlite::Result<Ordering> {
                    Ok(o.then(compare(row[i], old.get_ref(i)?)))
                });
                match order.map_err(err)? {
                    // Not among the old rows: inserted below.
                    Ordering::Less => break,
                    Ordering::Equal => {
                        let same = m.values.iter().try_fold(true, |s, &i| -> rusqlite::Result<bool> {
                            Ok(s && same(row[i], old.get_ref(i)?))
                        });
                        if same.map_err(err)? {
                            self.changes.kept += 1;
                        } else {
                            self.sink.update(row)?;
                            self.changes.updated += 1;
                        }
                        m.old.advance().map_err(err)?;
                        return Ok(());
                    }
                    // An old row no longer produced.
                    Ordering::Greater => {
                        self.sink.delete(old)?;
                        self.changes.deleted += 1;
                        m.old.advance().map_err(err)?;
                    }
                }
            }
        }
        self.changes.inserted += 1;
        self.sink.insert(row)
    }

    /// Deletes the old rows after the last row handed over; what was changed.
    pub(crate) fn finish(mut self) -> Result<Changes, InsightsError> {
        if let Some(m) = self.merge.as_mut() {
            while let Some(old) = m.old.get() {
                self.sink.delete(old)?;
                self.changes.deleted += 1;
                m.old.advance().map_err(err)?;
            }
        }
        Ok(self.changes)
    }
}

fn too_wide(len: usize) -> InsightsError {
    broken(format!("a row of more than {len} values"))
}

/// SQLite's order of two values (NULL, then numbers, then text, then blobs; text by its
/// bytes, as the key columns' default BINARY collation compares them).
fn compare(new: Value<'_>, old: ValueRef<'_>) -> Ordering {
    fn class(v: &ValueRef<'_>) -> u8 {
        match v {
            ValueRef::Null => 0,
            ValueRef::Integer(_) | ValueRef::Real(_) => 1,
            ValueRef::Text(_) => 2,
            ValueRef::Blob(_) => 3,
        }
    }
    let new = match new {
        Value::Null => ValueRef::Null,
        Value::Int(i) => ValueRef::Integer(i),
        Value::Text(s) => ValueRef::Text(s.as_bytes()),
    };
    match (new, old) {
        (ValueRef::Integer(a), ValueRef::Integer(b)) => a.cmp(&b),
        (ValueRef::Integer(a), ValueRef::Real(b)) => (a as f64).partial_cmp(&b).unwrap_or(Ordering::Less),
        (ValueRef::Text(a), ValueRef::Text(b)) => a.cmp(b),
        (a, b) => class(&a).cmp(&class(&b)),
    }
}

/// Whether a written value is the stored one, type included (a stored 1.0 is rewritten as 1).
fn same(new: Value<'_>, old: ValueRef<'_>) -> bool {
    match (new, old) {
        (Value::Null, ValueRef::Null) => true,
        (Value::Int(a), ValueRef::Integer(b)) => a == b,
        (Value::Text(a), ValueRef::Text(b)) => a.as_bytes() == b,
        _ => false,
    }
}
