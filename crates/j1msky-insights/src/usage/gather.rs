//! `kpi rebuild`'s usage rollups summed in memory: the finished tasks, the ledger and the
//! metered API days are each read once, in table order, and added up in hash and B-tree
//! maps keyed by (month, customer, team, model). SQLite's GROUP BY sorts every task and
//! every ledger row on disk-backed temporary B-trees; a map of a few hundred thousand
//! customer months does the same sums without a sort, and serves PostgreSQL unchanged.
//! The rules are the consumer's (`parts`): what a task, an API day or a revenue row adds
//! here is what `parts::settle_task` and `settle_revenue` would have added.

use std::collections::{BTreeMap, HashMap};

use chrono_tz::Tz;
use futures::TryStreamExt;
use j1msky_db::Backend;
use sqlx::{AnyConnection, Row};

use super::data::{CustomerMonth, ModelUse, TeamUse, PAY_PER_TASK, UNATTRIBUTED};
use super::parts::{api_day_key, API_TEAM};
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

/// One customer's month: usage by team, subscription revenue and refunds (cents).
pub(super) struct CustomerMonthSums {
    pub month: usize,
    pub customer: usize,
    teams: BTreeMap<usize, TeamSums>,
    subscription_cents: i64,
    refunds_cents: i64,
}

/// One `insights_tasks` row (a finished task or a metered API day).
pub(super) struct TaskRow {
    pub key: String,
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
pub(super) struct Gathered {
    pub customers: Names,
    /// The plan of customers `0..plans.len()` (the `customers` table); later numbers are
    /// ids no customer has (`unattributed`).
    plans: Vec<Option<String>>,
    pub teams: Names,
    pub models: Names,
    pub months: Names,
    pub outcomes: Names,
    cm_index: HashMap<(usize, usize), usize>,
    pub cms: Vec<CustomerMonthSums>,
    pub tasks: Vec<TaskRow>,
}

impl Gathered {
    /// The customer's plan key (`parts::PLAN_KEY`).
    pub fn plan(&self, customer: usize) -> &str {
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
            });
        }
        i
    }

    fn team(&mut self, cm: usize, team: usize) -> Option<&mut TeamSums> {
        self.cms.get_mut(cm).map(|c| c.teams.entry(team).or_default())
    }

    /// The customer month in the data types the split rule reads (`data::customer_pieces`),
    /// teams and models in name order.
    pub fn customer_month(&self, c: &CustomerMonthSums) -> CustomerMonth {
        let mut out = CustomerMonth { refunds_cents: c.refunds_cents, ..CustomerMonth::default() };
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

/// Reads customers, finished tasks, the ledger, the API days and `insights_revenue` (which
/// the rebuild has written already) into sums.
pub(super) async fn gather(
    conn: &mut AnyConnection,
    backend: Backend,
    tz: Tz,
    api_days: Vec<(String, String, i64)>,
) -> Result<Gathered, InsightsError> {
    let mut g = Gathered::default();
    let mut rows = sqlx::query("SELECT id, plan FROM customers").fetch(&mut *conn);
    while let Some(r) = rows.try_next().await? {
        g.customers.id_owned(r.try_get(0)?);
        g.plans.push(r.try_get(1)?);
    }
    drop(rows);
    tasks(conn, backend, tz, &mut g).await?;
    let mut days = api_day_map(api_days)?;
    ledger(conn, backend, &mut g, &mut days).await?;
    add_api_days(tz, &mut g, days);
    let mut rows = sqlx::query("SELECT month, customer_id, subscription_cents, refunds_cents FROM insights_revenue")
        .fetch(&mut *conn);
    while let Some(r) = rows.try_next().await? {
        let month = g.months.id_owned(r.try_get(0)?);
        let customer = g.customers.id_owned(r.try_get(1)?);
        let cm = g.cm(month, customer);
        if let Some(c) = g.cms.get_mut(cm) {
            c.subscription_cents += r.try_get::<i64, _>(2)?;
            c.refunds_cents += r.try_get::<i64, _>(3)?;
        }
    }
    Ok(g)
}

/// The finished tasks, read in table order (the COALESCE keeps SQLite off the index on
/// `state`: nearly every task is finished), then sorted by id for the ledger's look-ups.
#[allow(clippy::type_complexity)]
async fn tasks(conn: &mut AnyConnection, backend: Backend, tz: Tz, g: &mut Gathered) -> Result<(), InsightsError> {
    // The month of the previous task, with its bounds: tasks come roughly in time order.
    let mut last: Option<(i64, i64, usize)> = None;
    type Task = (String, String, String, String, i64, i64, Option<i64>);
    let each = |(key, customer, team, state, queued, finished, charge): Task| {
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
        let customer = g.customers.id_owned(customer);
        let team = g.teams.id_owned(team);
        let outcome = g.outcomes.id(&state);
        let charge = if state == "succeeded" { charge.unwrap_or(0) } else { 0 };
        let (completed, failed) = (i64::from(state == "succeeded"), i64::from(state == "failed"));
        let cm = g.cm(month, customer);
        if let Some(t) = g.team(cm, team) {
            t.completed += completed;
            t.failed += failed;
            t.charge_micros += charge;
        }
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
    };
    in_table_order(
        conn,
        backend,
        "tasks",
        "id, customer_id, team, state, queued_at, finished_at, charge_micros",
        "COALESCE(state, '') IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL",
        each,
    )
    .await?;
    if !g.tasks.is_sorted_by(|a, b| a.key <= b.key) {
        g.tasks.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    }
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

/// Every ledger row once, in table order: a task's row adds to its finished task (rows of
/// unfinished tasks are not counted yet), a row outside tasks to its customer's API day.
async fn ledger(
    conn: &mut AnyConnection,
    backend: Backend,
    g: &mut Gathered,
    days: &mut HashMap<(String, i64), ApiDay>,
) -> Result<(), InsightsError> {
    type Call = (Option<String>, String, i64, i64, i64, i64, Option<String>);
    let each = |(task, model, created, cost, input, output, customer): Call| {
        let part = ModelUse { calls: 1, input_tokens: input, output_tokens: output, cost_micros: cost };
        match task {
            Some(task) => {
                let Ok(i) = g.tasks.binary_search_by(|t| t.key.as_str().cmp(&task)) else { return };
                let model = g.models.id_owned(model);
                let Some(t) = g.tasks.get_mut(i) else { return };
                t.cost_micros += part.cost_micros;
                t.ledger_until = t.ledger_until.max(created);
                let (cm, team) = (t.cm, t.team);
                if let Some(sums) = g.team(cm, team) {
                    sums.cost_micros += part.cost_micros;
                    add(sums.models.entry(model).or_default(), &part);
                }
            }
            None => {
                let Some(customer) = customer else { return };
                let start = created.div_euclid(DAY_MICROS) * DAY_MICROS;
                let Some(day) = days.get_mut(&(customer, start)) else { return };
                let model = g.models.id_owned(model);
                add(day.models.entry(model).or_default(), &part);
                day.until = day.until.max(created);
            }
        }
    };
    let columns = "task_id, model_used, created_at, cost_micros, input_tokens, output_tokens, customer_id";
    in_table_order(conn, backend, "llm_calls", columns, "1 = 1", each).await
}

/// Rows a read of this many rowids at a time hands over as one JSON array (SQLite).
const CHUNK: i64 = 20_000;

/// Hands every row of `table` that `filter` keeps to `each`, its `columns` as a JSON array
/// decoded into `T`, in table order. Millions of rows pass here: one sqlx row each costs
/// a hand-over between sqlx's SQLite thread and ours (about 10 µs, most of the rebuild's
/// time when it was done so), so on SQLite the rows come [`CHUNK`] rowids at a time as one
/// `json_group_array` text. PostgreSQL sends one JSON array per row.
async fn in_table_order<T: serde::de::DeserializeOwned>(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
    columns: &str,
    filter: &str,
    mut each: impl FnMut(T),
) -> Result<(), InsightsError> {
    let bad = |e: serde_json::Error| InsightsError::Db(j1msky_db::DbError::Corrupt(format!("{table}: {e}")));
    match backend {
        Backend::Sqlite => {
            let max: Option<i64> =
                sqlx::query_scalar(&format!("SELECT MAX(rowid) FROM {table}")).fetch_one(&mut *conn).await?;
            let sql = format!(
                "SELECT json_group_array(json_array({columns})) FROM {table} WHERE rowid > $1 AND rowid <= $2 AND {filter}"
            );
            let mut lo = 0;
            while lo < max.unwrap_or(0) {
                let text: String = sqlx::query_scalar(&sql).bind(lo).bind(lo + CHUNK).fetch_one(&mut *conn).await?;
                for row in serde_json::from_str::<Vec<T>>(&text).map_err(bad)? {
                    each(row);
                }
                lo += CHUNK;
            }
        }
        Backend::Postgres => {
            let sql = format!("SELECT json_build_array({columns})::text FROM {table} WHERE {filter}");
            let mut rows = sqlx::query_scalar::<_, String>(&sql).fetch(&mut *conn);
            while let Some(text) = rows.try_next().await? {
                each(serde_json::from_str(&text).map_err(bad)?);
            }
        }
    }
    Ok(())
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
        g.tasks.push(TaskRow {
            key: api_day_key(&d.customer, &d.day),
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
