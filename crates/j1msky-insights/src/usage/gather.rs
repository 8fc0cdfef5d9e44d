//! `kpi rebuild`'s usage rollups summed in memory: the finished tasks, the ledger and the
//! metered API days are each read once, in table order, and added up in hash and B-tree
//! maps keyed by (month, customer, team, model). SQLite's GROUP BY sorts every task and
//! every ledger row; a map of a few hundred thousand customer months does the same sums
//! without a sort. Rows are stepped in place on the rebuild's own SQLite connection
//! (`direct`).
//! The rules are the consumer's (`parts`): what a task, an API day or a revenue row adds
//! here is what `parts::settle_task` and `settle_revenue` would have added.

use std::collections::{BTreeMap, HashMap};

use chrono_tz::Tz;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::data::{CustomerMonth, ModelUse, TeamUse, PAY_PER_TASK, UNATTRIBUTED};
use super::parts::{api_day_key, API_TEAM};
use crate::direct::err;
use crate::{InsightsError, Month};

const DAY_MICROS: i64 = 86_400_000_000;

/// Strings kept once and named by their position (customers, teams, models, months).
#[derive(Default)]
pub(super) struct Names {
    index: HashMap<String, usize>,
    pub names: Vec<String>,
}

impl Names {
    fn id(&mut self, s: &str) -> usize {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        self.names.push(s.to_owned());
        self.index.insert(s.to_owned(), self.names.len() - 1);
        self.names.len() - 1
    }

    fn id_owned(&mut self, s: String) -> usize {
        if let Some(&i) = self.index.get(&s) {
            return i;
        }
        self.names.push(s.clone());
        self.index.insert(s, self.names.len() - 1);
        self.names.len() - 1
    }

    pub fn get(&self, i: usize) -> &str {
        self.names.get(i).map_or("", String::as_str)
    }
}

/// One customer's team in a month, by model number.
#[derive(Default)]
struct TeamSums {
    completed: i64,
    failed: i64,
    cost_micros: i64,
    charge_micros: i64,
    models: BTreeMap<usize, ModelUse>,
}

/// One customer's month: usage by team, subscription revenue, refunds and Stripe's fees (cents).
pub(super) struct CustomerMonthSums {
    pub month: usize,
    pub customer: usize,
    teams: BTreeMap<usize, TeamSums>,
    subscription_cents: i64,
    refunds_cents: i64,
    fees_cents: i64,
}

/// The tasks' keys, one after another in one string: at 20,000,000 tasks one `String`
/// each took most of a gigabyte and seconds to allocate, and ~4 s more to free.
#[derive(Default)]
pub(super) struct Keys {
    text: String,
}

/// Where one key lies in [`Keys`].
#[derive(Clone, Copy)]
pub(super) struct Key {
    start: usize,
    len: usize,
}

impl Keys {
    fn push(&mut self, key: &str) -> Key {
        let start = self.text.len();
        self.text.push_str(key);
        Key { start, len: key.len() }
    }

    pub(super) fn get(&self, key: Key) -> &str {
        self.text.get(key.start..key.start + key.len).unwrap_or_default()
    }
}

/// One `insights_tasks` row (a finished task or a metered API day).
pub(super) struct TaskRow {
    pub key: Key,
    pub cm: usize,
    pub team: usize,
    pub outcome: usize,
    pub duration_ms: i64,
    pub cost_micros: i64,
    pub charge_micros: i64,
    pub ledger_until: i64,
}

/// A customer's metered day of API calls (`charges::api_days`), with its ledger by model.
struct ApiDay {
    customer: String,
    day: String,
    start: i64,
    amount: i64,
    models: BTreeMap<usize, ModelUse>,
    until: i64,
}

/// Everything the usage rebuild writes, before it is split into pieces.
#[derive(Default)]
pub(crate) struct Gathered {
    pub(super) customers: Names,
    /// The plan of customers `0..plans.len()` (the `customers` table); later numbers are
    /// ids no customer has (`unattributed`).
    plans: Vec<Option<String>>,
    pub(super) teams: Names,
    pub(super) models: Names,
    pub(super) months: Names,
    pub(super) outcomes: Names,
    cm_index: HashMap<(usize, usize), usize>,
    pub(super) cms: Vec<CustomerMonthSums>,
    pub(super) tasks: Vec<TaskRow>,
    pub(super) keys: Keys,
}

impl Gathered {
    /// The customer's plan key (`parts::PLAN_KEY`).
    pub(super) fn plan(&self, customer: usize) -> &str {
        match self.plans.get(customer) {
            Some(Some(p)) => p,
            Some(None) => PAY_PER_TASK,
            None => UNATTRIBUTED,
        }
    }

    fn cm(&mut self, month: usize, customer: usize) -> usize {
        let next = self.cms.len();
        let i = *self.cm_index.entry((month, customer)).or_insert(next);
        if i == next {
            self.cms.push(CustomerMonthSums {
                month,
                customer,
                teams: BTreeMap::new(),
                subscription_cents: 0,
                refunds_cents: 0,
                fees_cents: 0,
            });
        }
        i
    }

    /// Puts the tasks in key order (the ledger's look-ups and `insights_tasks` take them
    /// so); tasks read in the order of time-ordered ids are in it already.
    pub(super) fn sort_tasks(&mut self) {
        let keys = &self.keys;
        if !self.tasks.is_sorted_by(|a, b| keys.get(a.key) <= keys.get(b.key)) {
            self.tasks.sort_unstable_by(|a, b| keys.get(a.key).cmp(keys.get(b.key)));
        }
    }

    fn team(&mut self, cm: usize, team: usize) -> Option<&mut TeamSums> {
        self.cms.get_mut(cm).map(|c| c.teams.entry(team).or_default())
    }

    /// The customer month in the data types the split rule reads (`data::customer_pieces`),
    /// teams and models in name order.
    pub(super) fn customer_month(&self, c: &CustomerMonthSums) -> CustomerMonth {
        let mut out =
            CustomerMonth { refunds_cents: c.refunds_cents, fees_cents: c.fees_cents, ..CustomerMonth::default() };
        out.subscription_cents.insert(String::new(), c.subscription_cents);
        for (&t, sums) in &c.teams {
            let models = sums.models.iter().map(|(&m, u)| (self.models.get(m).to_owned(), u.clone())).collect();
            let team = TeamUse {
                completed: sums.completed,
                failed: sums.failed,
                cost_micros: sums.cost_micros,
                charge_micros: sums.charge_micros,
                models,
            };
            out.teams.insert(self.teams.get(t).to_owned(), team);
        }
        out
    }
}

fn add(to: &mut ModelUse, from: &ModelUse) {
    to.calls += from.calls;
    to.input_tokens += from.input_tokens;
    to.output_tokens += from.output_tokens;
    to.cost_micros += from.cost_micros;
}

/// Reads customers, finished tasks, the ledger and the API days into sums (the revenue
/// comes after, from `insights_revenue`: [`add_revenue`]). With a `second` connection (in
/// the same snapshot), the ledger's later half is read on it on another thread, beside
/// the first half here; the connection is handed back.
pub(crate) fn gather(
    tx: &Connection,
    second: Option<Connection>,
    tz: Tz,
    api_days: Vec<(String, String, i64)>,
) -> Result<(Gathered, Option<Connection>), InsightsError> {
    let mut g = Gathered::default();
    each_row(tx, "SELECT id, plan FROM customers", |r| {
        g.customers.id(text(r, 0)?);
        g.plans.push(r.get(1)?);
        Ok(())
    })?;
    tasks(tx, tz, &mut g)?;
    let mut days = api_day_map(api_days)?;
    let (first, rest) = ledger_halves(tx, second.is_some())?;
    let (parts, second) = match second {
        None => (vec![ledger(tx, (g.tasks.as_slice(), &g.keys), &days, first)?], None),
        Some(second) => std::thread::scope(|s| {
            // A scoped thread, joined here: the second half of this one scan.
            let (tasks, known) = ((g.tasks.as_slice(), &g.keys), &days);
            let later = s.spawn(move || (ledger(&second, tasks, known, rest), second));
            let here = ledger(tx, tasks, known, first);
            let (there, second) =
                later.join().map_err(|_| crate::direct::broken("the ledger's second reader stopped"))?;
            Ok::<_, InsightsError>((vec![here?, there?], Some(second)))
        })?,
    };
    for part in parts {
        part.add_to(&mut g, &mut days);
    }
    add_api_days(tz, &mut g, days);
    Ok((g, second))
}

/// Adds each customer month's subscription revenue, refunds and fees from `insights_revenue`,
/// which the rebuild has written already (read on the writing connection).
pub(super) fn add_revenue(tx: &Connection, g: &mut Gathered) -> Result<(), InsightsError> {
    let sql = "SELECT month, customer_id, subscription_cents, refunds_cents, fees_cents FROM insights_revenue";
    each_row(tx, sql, |r| {
        let month = g.months.id(text(r, 0)?);
        let customer = g.customers.id(text(r, 1)?);
        let cm = g.cm(month, customer);
        if let Some(c) = g.cms.get_mut(cm) {
            c.subscription_cents += r.get::<_, i64>(2)?;
            c.refunds_cents += r.get::<_, i64>(3)?;
            c.fees_cents += r.get::<_, i64>(4)?;
        }
        Ok(())
    })
}

/// Steps through every row of `sql`, in place (no copy of a row).
fn each_row(
    tx: &Connection,
    sql: &str,
    each: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
) -> Result<(), InsightsError> {
    each_row_with(tx, sql, [], each)
}

/// As [`each_row`], with the statement's parameters.
fn each_row_with(
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
) -> Result<(), InsightsError> {
    let mut stmt = tx.prepare(sql).map_err(err)?;
    let mut rows = stmt.query(params).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        each(r).map_err(err)?;
    }
    Ok(())
}

/// Column `i` as text borrowed from the row (NULL reads as '').
fn text<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    match r.get_ref(i)? {
        ValueRef::Null => Ok(""),
        v => Ok(v.as_str()?),
    }
}

/// The finished tasks, read in table order (the COALESCE keeps SQLite off the index on
/// `state`: nearly every task is finished), then sorted by id for the ledger's look-ups.
fn tasks(tx: &Connection, tz: Tz, g: &mut Gathered) -> Result<(), InsightsError> {
    // The month of the previous task, with its bounds: tasks come roughly in time order.
    let mut last: Option<(i64, i64, usize)> = None;
    let sql = "SELECT id, customer_id, team, state, queued_at, finished_at, charge_micros FROM tasks
               WHERE COALESCE(state, '') IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL";
    each_row(tx, sql, |r| {
        let (queued, finished): (i64, i64) = (r.get(4)?, r.get(5)?);
        let month = match last {
            Some((lo, hi, m)) if finished >= lo && finished < hi => m,
            _ => {
                let month = Month::of(tz, finished);
                let (lo, hi) = month.bounds(tz);
                let m = g.months.id_owned(month.to_string());
                last = Some((lo, hi, m));
                m
            }
        };
        let customer = g.customers.id(text(r, 1)?);
        let team = g.teams.id(text(r, 2)?);
        let state = text(r, 3)?;
        let outcome = g.outcomes.id(state);
        let charge = if state == "succeeded" { r.get::<_, Option<i64>>(6)?.unwrap_or(0) } else { 0 };
        let (completed, failed) = (i64::from(state == "succeeded"), i64::from(state == "failed"));
        let cm = g.cm(month, customer);
        if let Some(t) = g.team(cm, team) {
            t.completed += completed;
            t.failed += failed;
            t.charge_micros += charge;
        }
        let key = g.keys.push(text(r, 0)?);
        g.tasks.push(TaskRow {
            key,
            cm,
            team,
            outcome,
            duration_ms: if finished > queued { (finished - queued) / 1000 } else { 0 },
            cost_micros: 0,
            charge_micros: charge,
            ledger_until: 0,
        });
        Ok(())
    })?;
    g.sort_tasks();
    Ok(())
}

/// The API days by (customer, first instant of the UTC day).
fn api_day_map(api_days: Vec<(String, String, i64)>) -> Result<HashMap<(String, i64), ApiDay>, InsightsError> {
    let mut days = HashMap::with_capacity(api_days.len());
    for (customer, day, amount) in api_days {
        let start = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
            .map_err(|_| InsightsError::invalid("day", format!("`{day}` is not a YYYY-MM-DD day")))?
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc().timestamp_micros())
            .unwrap_or(0);
        let d = ApiDay { customer: customer.clone(), day, start, amount, models: BTreeMap::new(), until: 0 };
        // Unique per (customer, day) in billing; were one repeated, the later would count, as
        // the consumer's settle would leave it.
        days.insert((customer, start), d);
    }
    Ok(days)
}

/// Rowids from the first (included) to the last (excluded).
type Rowids = (i64, i64);

/// The ledger's rows by rowid: all of them (and an empty rest), or (`split`) two halves.
fn ledger_halves(tx: &Connection, split: bool) -> Result<(Rowids, Rowids), InsightsError> {
    let (lo, hi): (Option<i64>, Option<i64>) = tx
        .query_row("SELECT MIN(rowid), MAX(rowid) FROM llm_calls", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(err)?;
    let (lo, hi) = (lo.unwrap_or(0), hi.unwrap_or(0).saturating_add(1));
    let mid = if split { lo + (hi - lo) / 2 } else { hi };
    Ok(((lo, mid), (mid, hi)))
}

/// What the ledger rows of one range add: each task's cost and newest row (by position
/// in the tasks), each (customer month, team, model)'s use, each API day's use by model.
/// Kept apart from the sums so that two ranges can be read at once.
struct LedgerPart {
    tasks: Vec<(i64, i64)>,
    models: Names,
    uses: HashMap<(usize, usize, usize), ModelUse>,
    days: HashMap<(String, i64), (BTreeMap<usize, ModelUse>, i64)>,
}

impl LedgerPart {
    /// Adds this part to the sums (the models renumbered as the sums number them).
    fn add_to(self, g: &mut Gathered, days: &mut HashMap<(String, i64), ApiDay>) {
        let ids: Vec<usize> = self.models.names.iter().map(|m| g.models.id(m)).collect();
        let model = |m: usize| ids.get(m).copied().unwrap_or_default();
        for (t, (cost, until)) in g.tasks.iter_mut().zip(self.tasks) {
            t.cost_micros += cost;
            t.ledger_until = t.ledger_until.max(until);
        }
        for ((cm, team, m), u) in self.uses {
            if let Some(sums) = g.team(cm, team) {
                sums.cost_micros += u.cost_micros;
                add(sums.models.entry(model(m)).or_default(), &u);
            }
        }
        for (key, (models, until)) in self.days {
            let Some(day) = days.get_mut(&key) else { continue };
            for (m, u) in models {
                add(day.models.entry(model(m)).or_default(), &u);
            }
            day.until = day.until.max(until);
        }
    }
}

/// Every ledger row of `range` (rowids) once, in table order: a task's row adds to its
/// finished task (rows of unfinished tasks are not counted yet), a row outside tasks to
/// its customer's API day, if `days` has it.
fn ledger(
    conn: &Connection,
    (tasks, keys): (&[TaskRow], &Keys),
    days: &HashMap<(String, i64), ApiDay>,
    range: Rowids,
) -> Result<LedgerPart, InsightsError> {
    let sql = "SELECT task_id, model_used, created_at, cost_micros, input_tokens, output_tokens, customer_id
               FROM llm_calls WHERE rowid >= ?1 AND rowid < ?2";
    let mut part = LedgerPart {
        tasks: vec![(0, 0); tasks.len()],
        models: Names::default(),
        uses: HashMap::new(),
        days: HashMap::new(),
    };
    // The last task found: a task's ledger rows are mostly written one after another.
    let mut last: Option<usize> = None;
    each_row_with(conn, sql, [range.0, range.1], |r| {
        let created: i64 = r.get(2)?;
        let cost: i64 = r.get(3)?;
        let use_ = ModelUse { calls: 1, input_tokens: r.get(4)?, output_tokens: r.get(5)?, cost_micros: cost };
        match r.get_ref(0)? {
            ValueRef::Null => {
                let ValueRef::Text(_) = r.get_ref(6)? else { return Ok(()) };
                let start = created.div_euclid(DAY_MICROS) * DAY_MICROS;
                let key = (text(r, 6)?.to_owned(), start);
                if !days.contains_key(&key) {
                    return Ok(());
                }
                let model = part.models.id(text(r, 1)?);
                let day = part.days.entry(key).or_default();
                add(day.0.entry(model).or_default(), &use_);
                day.1 = day.1.max(created);
            }
            v => {
                let task = v.as_str()?;
                let found = match last {
                    Some(i) if tasks.get(i).is_some_and(|t| keys.get(t.key) == task) => Some(i),
                    _ => tasks.binary_search_by(|t| keys.get(t.key).cmp(task)).ok(),
                };
                let (Some(i), Some(t)) = (found, found.and_then(|i| tasks.get(i))) else { return Ok(()) };
                last = Some(i);
                let model = part.models.id(text(r, 1)?);
                if let Some(slot) = part.tasks.get_mut(i) {
                    slot.0 += cost;
                    slot.1 = slot.1.max(created);
                }
                add(part.uses.entry((t.cm, t.team, model)).or_default(), &use_);
            }
        }
        Ok(())
    })?;
    Ok(part)
}

/// Each API day as a row of `insights_tasks` and a contribution to team `api`.
fn add_api_days(tz: Tz, g: &mut Gathered, days: HashMap<(String, i64), ApiDay>) {
    let team = g.teams.id(API_TEAM);
    let outcome = g.outcomes.id("api");
    for d in days.into_values() {
        let month = g.months.id_owned(Month::of(tz, d.start).to_string());
        let customer = g.customers.id(&d.customer);
        let cm = g.cm(month, customer);
        let cost: i64 = d.models.values().map(|m| m.cost_micros).sum();
        if let Some(sums) = g.team(cm, team) {
            sums.cost_micros += cost;
            sums.charge_micros += d.amount;
            for (m, u) in &d.models {
                add(sums.models.entry(*m).or_default(), u);
            }
        }
        let key = g.keys.push(&api_day_key(&d.customer, &d.day));
        g.tasks.push(TaskRow {
            key,
            cm,
            team,
            outcome,
            duration_ms: 0,
            cost_micros: cost,
            charge_micros: d.amount,
            ledger_until: d.until,
        });
    }
}
