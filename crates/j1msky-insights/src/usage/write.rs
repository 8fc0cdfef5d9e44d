//! `kpi rebuild` writing the sums `gather` read: `insights_tasks`, `insights_usage`,
//! `insights_model_cost`, and the split (`insights_pieces`, `insights_split`,
//! `insights_margins`) computed per customer month by the same function the what-if uses
//! (`data::customer_pieces`, which `tests/usage.rs` holds against the consumer's SQL).
//! Every table gets its rows in primary-key order, on the rebuild's own connection
//! (`direct`): appended to its B-tree when it was empty, else merged with its old rows
//! (`rewrite`: only what differs is written).

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender};

use rusqlite::Connection;

use super::data::{customer_pieces, Piece};
use super::gather::Gathered;
use crate::direct::Value;
use crate::rewrite::{self, Old, Op, Queue, Rewrite, Sources, Statements};
use crate::{Changes, InsightsError, TableChanges};

const TASKS: &[&str] = &[
    "task_id",
    "month",
    "customer_id",
    "team",
    "outcome",
    "duration_ms",
    "cost_micros",
    "charge_micros",
    "ledger_until",
    "plan",
];
const USAGE: &[&str] =
    &["month", "customer_id", "team", "tasks_completed", "tasks_failed", "cost_micros", "charge_micros"];
const MODEL_COST: &[&str] =
    &["month", "customer_id", "team", "model", "calls", "input_tokens", "output_tokens", "cost_micros"];
const PIECES: &[&str] = &[
    "month",
    "customer_id",
    "team",
    "model",
    "plan",
    "subscription_micros",
    "refunds_micros",
    "charge_micros",
    "cost_micros",
    "calls",
    "completed",
    "failed",
    "fees_micros",
];
const SPLIT: &[&str] = &[
    "month",
    "team",
    "model",
    "plan",
    "pieces",
    "subscription_micros",
    "refunds_micros",
    "charge_micros",
    "cost_micros",
    "calls",
    "completed",
    "failed",
    "fees_micros",
];
const MARGINS: &[&str] =
    &["month", "customer_id", "team", "plan", "revenue_micros", "cost_micros", "margin_micros", "completed"];

/// `insights_tasks` (after [`Gathered::sort_tasks`]), on the writing connection.
pub(super) fn tasks(conn: &Connection, sources: &Sources<'_>, g: &Gathered) -> Result<Changes, InsightsError> {
    let mut old = sources.old("insights_tasks", TASKS)?;
    let mut batch = Rewrite::new(conn, "insights_tasks", TASKS, old.as_mut())?;
    task_rows(g, |row| batch.push(row))?;
    batch.finish()
}

/// `insights_tasks` (after [`Gathered::sort_tasks`]) merged on another thread: compared with its
/// rows as `reader` sees them, the changes sent to `to` for the writing connection
/// (see [`apply_tasks`]).
pub(super) fn compare_tasks(reader: &Connection, g: &Gathered, to: SyncSender<Op>) -> Result<Changes, InsightsError> {
    let mut old = Old::new(reader, "insights_tasks", TASKS)?;
    let queue = Queue::new(to, old.key());
    let mut batch = Rewrite::to(queue, TASKS.len(), Some(&mut old))?;
    task_rows(g, |row| batch.push(row))?;
    batch.finish()
}

/// Writes the changes [`compare_tasks`] sends, until it is done.
pub(super) fn apply_tasks(conn: &Connection, from: Receiver<Op>) -> Result<(), InsightsError> {
    let key = rewrite::key_positions(conn, "insights_tasks", TASKS)?;
    let mut statements = Statements::new(conn, "insights_tasks", TASKS, Some(&key))?;
    for op in from {
        statements.apply(&op)?;
    }
    Ok(())
}

/// Each `insights_tasks` row, in the order of `g.tasks`.
fn task_rows(
    g: &Gathered,
    mut row: impl FnMut([Value<'_>; 10]) -> Result<(), InsightsError>,
) -> Result<(), InsightsError> {
    for t in &g.tasks {
        let Some(cm) = g.cms.get(t.cm) else { continue };
        row([
            g.keys.get(t.key).into(),
            g.months.get(cm.month).into(),
            g.customers.get(cm.customer).into(),
            g.teams.get(t.team).into(),
            g.outcomes.get(t.outcome).into(),
            t.duration_ms.into(),
            t.cost_micros.into(),
            t.charge_micros.into(),
            t.ledger_until.into(),
            g.plan(cm.customer).into(),
        ])?;
    }
    Ok(())
}

/// A piece's sums, as the split's tables add them up.
#[derive(Default, Clone, Copy)]
struct Sums {
    subscription: i64,
    refunds: i64,
    charge: i64,
    cost: i64,
    calls: i64,
    completed: i64,
    failed: i64,
    fees: i64,
}

impl Sums {
    fn add(&mut self, p: &Sums) {
        self.subscription += p.subscription;
        self.refunds += p.refunds;
        self.charge += p.charge;
        self.cost += p.cost;
        self.calls += p.calls;
        self.completed += p.completed;
        self.failed += p.failed;
        self.fees += p.fees;
    }

    fn of(p: &Piece) -> Sums {
        Sums {
            subscription: p.subscription_micros,
            refunds: p.refunds_micros,
            charge: p.charge_micros,
            cost: p.cost_micros,
            calls: p.calls,
            completed: p.completed,
            failed: p.failed,
            fees: p.fees_micros,
        }
    }

    fn values(&self) -> [Value<'static>; 8] {
        [
            self.subscription.into(),
            self.refunds.into(),
            self.charge.into(),
            self.cost.into(),
            self.calls.into(),
            self.completed.into(),
            self.failed.into(),
            self.fees.into(),
        ]
    }
}

/// The per-customer-month tables being written.
struct Tables<'c, 'o> {
    usage: Rewrite<'o, Statements<'c>>,
    model_cost: Rewrite<'o, Statements<'c>>,
    pieces: Rewrite<'o, Statements<'c>>,
    margins: Rewrite<'o, Statements<'c>>,
}

/// Usage, model cost, pieces and margins per customer month in (month, customer) order,
/// then the split's sums; what changed in each table.
pub(super) fn customer_months(
    conn: &Connection,
    sources: &Sources<'_>,
    g: &Gathered,
) -> Result<TableChanges, InsightsError> {
    let mut order: Vec<usize> = (0..g.cms.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (&g.cms[a], &g.cms[b]);
        g.months
            .get(a.month)
            .cmp(g.months.get(b.month))
            .then_with(|| g.customers.get(a.customer).cmp(g.customers.get(b.customer)))
    });
    let mut old = [
        sources.old("insights_usage", USAGE)?,
        sources.old("insights_model_cost", MODEL_COST)?,
        sources.old("insights_pieces", PIECES)?,
        sources.old("insights_margins", MARGINS)?,
    ];
    let [usage, model_cost, pieces, margins] = old.each_mut().map(Option::as_mut);
    let mut t = Tables {
        usage: Rewrite::new(conn, "insights_usage", USAGE, usage)?,
        model_cost: Rewrite::new(conn, "insights_model_cost", MODEL_COST, model_cost)?,
        pieces: Rewrite::new(conn, "insights_pieces", PIECES, pieces)?,
        margins: Rewrite::new(conn, "insights_margins", MARGINS, margins)?,
    };
    let mut split: BTreeMap<(&str, String, String, &str), (i64, Sums)> = BTreeMap::new();
    let mut out = Vec::new();
    for i in order {
        let Some(sums) = g.cms.get(i) else { continue };
        let (month, customer, plan) = (g.months.get(sums.month), g.customers.get(sums.customer), g.plan(sums.customer));
        let cm = g.customer_month(sums);
        for (team, u) in &cm.teams {
            let row: [Value<'_>; 7] = [
                month.into(),
                customer.into(),
                team.as_str().into(),
                u.completed.into(),
                u.failed.into(),
                u.cost_micros.into(),
                u.charge_micros.into(),
            ];
            t.usage.push(row)?;
            for (model, m) in &u.models {
                let row: [Value<'_>; 8] = [
                    month.into(),
                    customer.into(),
                    team.as_str().into(),
                    model.as_str().into(),
                    m.calls.into(),
                    m.input_tokens.into(),
                    m.output_tokens.into(),
                    m.cost_micros.into(),
                ];
                t.model_cost.push(row)?;
            }
        }
        out.clear();
        customer_pieces(customer, &cm, &mut out);
        // One row per (team, model), as the SQL's GROUP BY would merge two pieces of one key.
        let mut pieces: BTreeMap<(&str, &str), Sums> = BTreeMap::new();
        for p in &out {
            pieces.entry((p.team.as_str(), p.model.as_str())).or_default().add(&Sums::of(p));
        }
        // Margins per team and over all teams (team '', first in key order).
        let mut margins: BTreeMap<&str, Sums> = BTreeMap::new();
        for (&(team, model), s) in &pieces {
            let row = [month.into(), customer.into(), team.into(), model.into(), plan.into()];
            t.pieces.push(row.into_iter().chain(s.values()))?;
            let e = split.entry((month, team.to_owned(), model.to_owned(), plan)).or_default();
            e.0 += 1;
            e.1.add(s);
            margins.entry(team).or_default().add(s);
            margins.entry("").or_default().add(s);
        }
        for (team, s) in margins {
            let revenue = s.subscription - s.refunds + s.charge;
            let row: [Value<'_>; 8] = [
                month.into(),
                customer.into(),
                team.into(),
                plan.into(),
                revenue.into(),
                s.cost.into(),
                (revenue - s.cost - s.fees).into(),
                s.completed.into(),
            ];
            t.margins.push(row)?;
        }
    }
    let mut changes = vec![
        ("insights_usage", t.usage.finish()?),
        ("insights_model_cost", t.model_cost.finish()?),
        ("insights_pieces", t.pieces.finish()?),
        ("insights_margins", t.margins.finish()?),
    ];
    let mut old = sources.old("insights_split", SPLIT)?;
    let mut batch = Rewrite::new(conn, "insights_split", SPLIT, old.as_mut())?;
    for ((month, team, model, plan), (n, s)) in split {
        let row = [month.into(), team.as_str().into(), model.as_str().into(), plan.into(), n.into()];
        batch.push(row.into_iter().chain(s.values()))?;
    }
    changes.push(("insights_split", batch.finish()?));
    Ok(changes)
}
