//! What one finished task, one metered day of API calls or one revenue entry adds to the
//! rollups. The consumer and the rebuild both go through here: a source's contribution
//! is read from the source tables as they are now, compared with what was counted for it
//! before (`insights_tasks`, `insights_revenue_seen`), and only the difference is
//! applied, so handling an event twice, or out of order, changes nothing.
//!
//! What a task added per model is not stored: it is re-read as its ledger rows up to the
//! newest one counted (`ledger_until`). That relies on the ledger being append-only and a
//! task's rows being written before its end is (the worker commits each step's rows with
//! the step); a row written later with an older time would be taken back without having
//! been added, until `kpi rebuild`.

use chrono_tz::Tz;
use sqlx::{AnyConnection, Row};

use crate::{InsightsError, Month};

const DAY_MICROS: i64 = 86_400_000_000;

/// The team of direct API calls made outside any task.
pub const API_TEAM: &str = "api";

/// A task's ledger rows on one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPart {
    pub model: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

/// One finished task (or metered API day) as counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPart {
    pub month: String,
    pub customer: String,
    pub team: String,
    /// `succeeded`, `failed`, `cancelled`, or `api` for a day of API calls.
    pub outcome: String,
    pub duration_ms: i64,
    pub charge_micros: i64,
    pub ledger_until: i64,
    pub models: Vec<ModelPart>,
}

impl TaskPart {
    fn cost(&self) -> i64 {
        self.models.iter().map(|m| m.cost_micros).sum()
    }
}

async fn ledger(
    conn: &mut AnyConnection,
    filter: &str,
    binds: (&str, i64, i64),
) -> Result<(Vec<ModelPart>, i64), InsightsError> {
    let sql = format!(
        "SELECT model_used, COUNT(*), CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT),
                CAST(SUM(cost_micros) AS BIGINT), MAX(created_at)
         FROM llm_calls WHERE {filter} GROUP BY model_used ORDER BY model_used"
    );
    let rows = sqlx::query(&sql).bind(binds.0).bind(binds.1).bind(binds.2).fetch_all(&mut *conn).await?;
    let mut models = Vec::with_capacity(rows.len());
    let mut until = 0;
    for r in rows {
        until = until.max(r.try_get::<i64, _>(5)?);
        models.push(ModelPart {
            model: r.try_get(0)?,
            calls: r.try_get(1)?,
            input_tokens: r.try_get(2)?,
            output_tokens: r.try_get(3)?,
            cost_micros: r.try_get(4)?,
        });
    }
    Ok((models, until))
}

/// The task's contribution as the tables say now; `None` while it is not finished.
pub async fn task_now(conn: &mut AnyConnection, tz: Tz, task: &str) -> Result<Option<TaskPart>, InsightsError> {
    let row =
        sqlx::query("SELECT customer_id, team, state, queued_at, finished_at, charge_micros FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let state: String = row.try_get(2)?;
    let finished: Option<i64> = row.try_get(4)?;
    let (Some(finished), true) = (finished, matches!(state.as_str(), "succeeded" | "failed" | "cancelled")) else {
        return Ok(None);
    };
    let queued: i64 = row.try_get(3)?;
    let charge: Option<i64> = row.try_get(5)?;
    let (models, ledger_until) =
        ledger(conn, "task_id = $1 AND created_at >= $2 AND created_at <= $3", (task, i64::MIN, i64::MAX)).await?;
    Ok(Some(TaskPart {
        month: Month::of(tz, finished).to_string(),
        customer: row.try_get(0)?,
        team: row.try_get(1)?,
        charge_micros: if state == "succeeded" { charge.unwrap_or(0) } else { 0 },
        outcome: state,
        duration_ms: (finished - queued).max(0) / 1000,
        ledger_until,
        models,
    }))
}

/// A customer's metered day of direct API calls (`day` is `YYYY-MM-DD`, UTC), counted in
/// the business month its first instant falls in.
pub async fn api_day_now(
    conn: &mut AnyConnection,
    tz: Tz,
    customer: &str,
    day: &str,
    charge_micros: i64,
) -> Result<TaskPart, InsightsError> {
    let start = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|_| InsightsError::invalid("day", format!("`{day}` is not a YYYY-MM-DD day")))?
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp_micros())
        .unwrap_or(0);
    let (models, ledger_until) = ledger(
        conn,
        "customer_id = $1 AND task_id IS NULL AND created_at >= $2 AND created_at < $3",
        (customer, start, start + DAY_MICROS),
    )
    .await?;
    Ok(TaskPart {
        month: Month::of(tz, start).to_string(),
        customer: customer.into(),
        team: API_TEAM.into(),
        outcome: "api".into(),
        duration_ms: 0,
        charge_micros,
        ledger_until,
        models,
    })
}

/// The key a metered API day is kept under in `insights_tasks`.
pub fn api_day_key(customer: &str, day: &str) -> String {
    format!("api:{customer}:{day}")
}

/// What was counted for `key` (its ledger by model re-read up to the row it had seen).
async fn task_counted(conn: &mut AnyConnection, key: &str) -> Result<Option<TaskPart>, InsightsError> {
    let row = sqlx::query(
        "SELECT month, customer_id, team, outcome, duration_ms, charge_micros, ledger_until
         FROM insights_tasks WHERE task_id = $1",
    )
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let customer: String = row.try_get(1)?;
    let outcome: String = row.try_get(3)?;
    let until: i64 = row.try_get(6)?;
    let models = if until == 0 {
        Vec::new()
    } else if outcome == "api" {
        let day = key.rsplit(':').next().unwrap_or_default();
        let start = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp_micros())
            .unwrap_or(0);
        let filter = "customer_id = $1 AND task_id IS NULL AND created_at >= $2 AND created_at <= $3";
        ledger(conn, filter, (&customer, start, until)).await?.0
    } else {
        ledger(conn, "task_id = $1 AND created_at >= $2 AND created_at <= $3", (key, i64::MIN, until)).await?.0
    };
    Ok(Some(TaskPart {
        month: row.try_get(0)?,
        customer,
        team: row.try_get(2)?,
        outcome,
        duration_ms: row.try_get(4)?,
        charge_micros: row.try_get(5)?,
        ledger_until: until,
        models,
    }))
}

async fn add_task(conn: &mut AnyConnection, p: &TaskPart, sign: i64) -> Result<(), InsightsError> {
    let completed = i64::from(p.outcome == "succeeded");
    let failed = i64::from(p.outcome == "failed");
    sqlx::query(
        "INSERT INTO insights_usage (month, customer_id, team, tasks_completed, tasks_failed, cost_micros, charge_micros)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (month, customer_id, team) DO UPDATE SET
             tasks_completed = insights_usage.tasks_completed + excluded.tasks_completed,
             tasks_failed = insights_usage.tasks_failed + excluded.tasks_failed,
             cost_micros = insights_usage.cost_micros + excluded.cost_micros,
             charge_micros = insights_usage.charge_micros + excluded.charge_micros",
    )
    .bind(&p.month)
    .bind(&p.customer)
    .bind(&p.team)
    .bind(sign * completed)
    .bind(sign * failed)
    .bind(sign * p.cost())
    .bind(sign * p.charge_micros)
    .execute(&mut *conn)
    .await?;
    for m in &p.models {
        sqlx::query(
            "INSERT INTO insights_model_cost (month, customer_id, team, model, calls, input_tokens, output_tokens,
                 cost_micros)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (month, customer_id, team, model) DO UPDATE SET
                 calls = insights_model_cost.calls + excluded.calls,
                 input_tokens = insights_model_cost.input_tokens + excluded.input_tokens,
                 output_tokens = insights_model_cost.output_tokens + excluded.output_tokens,
                 cost_micros = insights_model_cost.cost_micros + excluded.cost_micros",
        )
        .bind(&p.month)
        .bind(&p.customer)
        .bind(&p.team)
        .bind(&m.model)
        .bind(sign * m.calls)
        .bind(sign * m.input_tokens)
        .bind(sign * m.output_tokens)
        .bind(sign * m.cost_micros)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The plan key of the customer `{id}` names as it is now: its plan, `pay-per-task`
/// without one, `unattributed` for no known customer (the split's keys, `data::plan_key`).
pub const PLAN_KEY: &str = "COALESCE((SELECT COALESCE(c.plan, 'pay-per-task') FROM customers c WHERE c.id = {id}),
     'unattributed')";

const STORE_TASK: &str = "INSERT INTO insights_tasks (task_id, month, customer_id, team, outcome, duration_ms,
     cost_micros, charge_micros, ledger_until, plan)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {plan})";

async fn store_task(conn: &mut AnyConnection, sql: &str, key: &str, p: &TaskPart) -> Result<u64, InsightsError> {
    let sql = sql.replace("{plan}", &PLAN_KEY.replace("{id}", "$3"));
    let done = sqlx::query(&sql)
        .bind(key)
        .bind(&p.month)
        .bind(&p.customer)
        .bind(&p.team)
        .bind(&p.outcome)
        .bind(p.duration_ms)
        .bind(p.cost())
        .bind(p.charge_micros)
        .bind(p.ledger_until)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Moves `customer`'s finished tasks to its plan now (its plan changed).
pub async fn move_plan(conn: &mut AnyConnection, customer: &str) -> Result<(), InsightsError> {
    let sql = format!("UPDATE insights_tasks SET plan = {} WHERE customer_id = $1", PLAN_KEY.replace("{id}", "$1"));
    sqlx::query(&sql).bind(customer).execute(&mut *conn).await?;
    Ok(())
}

/// The (month, customer) pairs whose usage or revenue rollups a settle changed.
pub type Touched = Vec<(String, String)>;

fn touched<'a>(parts: impl IntoIterator<Item = (&'a str, &'a str)>) -> Touched {
    let mut out: Touched = Vec::new();
    for (m, c) in parts {
        if !out.iter().any(|(om, oc)| om == m && oc == c) {
            out.push((m.to_string(), c.to_string()));
        }
    }
    out
}

/// Brings the rollups in line with `now` for the task (or API day) `key`; says which
/// customers' months changed.
pub async fn settle_task(conn: &mut AnyConnection, key: &str, now: Option<TaskPart>) -> Result<Touched, InsightsError> {
    // The common case, a task counted for the first time, in one statement less.
    if let Some(p) = &now {
        let sql = format!("{STORE_TASK} ON CONFLICT (task_id) DO NOTHING");
        if store_task(conn, &sql, key, p).await? == 1 {
            add_task(conn, p, 1).await?;
            return Ok(touched([(p.month.as_str(), p.customer.as_str())]));
        }
    }
    let before = task_counted(conn, key).await?;
    if before == now {
        return Ok(Vec::new());
    }
    if let Some(b) = &before {
        add_task(conn, b, -1).await?;
    }
    match &now {
        Some(p) => {
            add_task(conn, p, 1).await?;
            let sql = format!(
                "{STORE_TASK} ON CONFLICT (task_id) DO UPDATE SET month = excluded.month,
                     customer_id = excluded.customer_id, team = excluded.team, outcome = excluded.outcome,
                     duration_ms = excluded.duration_ms, cost_micros = excluded.cost_micros,
                     charge_micros = excluded.charge_micros, ledger_until = excluded.ledger_until,
                     plan = excluded.plan"
            );
            store_task(conn, &sql, key, p).await?;
        }
        None => {
            sqlx::query("DELETE FROM insights_tasks WHERE task_id = $1").bind(key).execute(&mut *conn).await?;
        }
    }
    let parts = before.iter().chain(now.iter()).map(|p| (p.month.as_str(), p.customer.as_str()));
    Ok(touched(parts))
}

/// What Stripe kept (billing's `stripe_fee` entries, negative): counted as fees.
pub const STRIPE_FEE: &str = "stripe_fee";

/// Whether a revenue entry of `kind` counts as money given back: a refund, or what a
/// disputed charge took (and, won, gave back: a positive entry lowers the refunds).
fn gives_back(kind: &str) -> bool {
    kind == "refund" || kind == "dispute"
}

/// One revenue entry as counted: subscription revenue (`invoice_paid`), a refund or a dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RevenuePart {
    kind: String,
    month: String,
    customer: String,
    plan: String,
    amount_cents: i64,
}

async fn add_revenue(conn: &mut AnyConnection, p: &RevenuePart, sign: i64) -> Result<(), InsightsError> {
    let (sub, refund, fee) = if gives_back(&p.kind) {
        (0, -p.amount_cents, 0)
    } else if p.kind == STRIPE_FEE {
        (0, 0, -p.amount_cents)
    } else {
        (p.amount_cents, 0, 0)
    };
    sqlx::query(
        "INSERT INTO insights_revenue (month, customer_id, plan, subscription_cents, refunds_cents, fees_cents)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (month, customer_id, plan) DO UPDATE SET
             subscription_cents = insights_revenue.subscription_cents + excluded.subscription_cents,
             refunds_cents = insights_revenue.refunds_cents + excluded.refunds_cents,
             fees_cents = insights_revenue.fees_cents + excluded.fees_cents",
    )
    .bind(&p.month)
    .bind(&p.customer)
    .bind(&p.plan)
    .bind(sign * sub)
    .bind(sign * refund)
    .bind(sign * fee)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The refund and dispute entries on the charge that paid `invoice` (billing nets them of
/// the invoice's tax once the invoice is booked).
pub async fn given_back_on_charge_of(conn: &mut AnyConnection, invoice: &str) -> Result<Vec<String>, InsightsError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT g.source_id FROM revenue_entries i JOIN revenue_entries g ON g.charge_id = i.charge_id
         WHERE i.source_id = $1 AND i.charge_id IS NOT NULL AND g.kind IN ('refund', 'dispute')
         ORDER BY g.source_id",
    )
    .bind(invoice)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Brings the rollups in line with billing's revenue entry `source` (an invoice id, or
/// `{charge}:refunded`, `{dispute}:withdrawn|reinstated`). Usage entries are not read: pay-per-task revenue is counted
/// when the task succeeds. Says which customers' months changed.
pub async fn settle_revenue(conn: &mut AnyConnection, tz: Tz, source: &str) -> Result<Touched, InsightsError> {
    let row = sqlx::query(
        "SELECT kind, customer_id, plan, amount_cents, occurred_at FROM revenue_entries
         WHERE source_id = $1 AND kind IN ('invoice_paid', 'refund', 'dispute', 'stripe_fee')",
    )
    .bind(source)
    .fetch_optional(&mut *conn)
    .await?;
    let now = match row {
        Some(r) => {
            let kind: String = r.try_get(0)?;
            let plan: Option<String> = r.try_get(2)?;
            Some(RevenuePart {
                month: Month::of(tz, r.try_get(4)?).to_string(),
                customer: r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                plan: if gives_back(&kind) || kind == STRIPE_FEE { String::new() } else { plan.unwrap_or_default() },
                amount_cents: r.try_get(3)?,
                kind,
            })
        }
        None => None,
    };
    let before = sqlx::query(
        "SELECT kind, month, customer_id, plan, amount_cents FROM insights_revenue_seen WHERE source_id = $1",
    )
    .bind(source)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| -> Result<RevenuePart, sqlx::Error> {
        Ok(RevenuePart {
            kind: r.try_get(0)?,
            month: r.try_get(1)?,
            customer: r.try_get(2)?,
            plan: r.try_get(3)?,
            amount_cents: r.try_get(4)?,
        })
    })
    .transpose()?;
    if before == now {
        return Ok(Vec::new());
    }
    if let Some(b) = &before {
        add_revenue(conn, b, -1).await?;
    }
    if let Some(p) = &now {
        add_revenue(conn, p, 1).await?;
        sqlx::query(
            "INSERT INTO insights_revenue_seen (source_id, kind, month, customer_id, plan, amount_cents)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (source_id) DO UPDATE SET kind = excluded.kind, month = excluded.month,
                 customer_id = excluded.customer_id, plan = excluded.plan, amount_cents = excluded.amount_cents",
        )
        .bind(source)
        .bind(&p.kind)
        .bind(&p.month)
        .bind(&p.customer)
        .bind(&p.plan)
        .bind(p.amount_cents)
        .execute(&mut *conn)
        .await?;
    }
    Ok(touched(before.iter().chain(now.iter()).map(|p| (p.month.as_str(), p.customer.as_str()))))
}
