//! The cost ledger: one row per upstream attempt, and the daily cost review.

use j1msky_core::Money;
use j1msky_db::{Db, DbError, Tx};
use serde::Serialize;

/// One upstream attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub request_id: String,
    pub attempt: i64,
    pub customer_id: Option<String>,
    pub task_id: Option<String>,
    pub team: Option<String>,
    pub role: Option<String>,
    pub category: Option<String>,
    pub provider: String,
    pub model_requested: String,
    pub model_used: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: Money,
    pub latency_micros: i64,
    /// `ok`, or the classified failure (`rate_limited`, `timeout`…).
    pub outcome: String,
    /// Why this attempt used another model than requested.
    pub fallback_reason: Option<String>,
    pub created_at: i64,
}

/// Records attempts inside the caller's transaction. A repeated (request id, attempt)
/// is ignored, so replaying a settlement never counts twice.
pub async fn record(tx: &mut Tx, attempts: &[Attempt]) -> Result<(), DbError> {
    for a in attempts {
        sqlx::query(
            "INSERT INTO llm_calls (id, request_id, attempt, customer_id, task_id, team, role, category, provider,
                 model_requested, model_used, input_tokens, output_tokens, cost_micros, latency_micros, outcome,
                 fallback_reason, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             ON CONFLICT (request_id, attempt) DO NOTHING",
        )
        .bind(j1msky_core::ids::new_id("llm"))
        .bind(&a.request_id)
        .bind(a.attempt)
        .bind(&a.customer_id)
        .bind(&a.task_id)
        .bind(&a.team)
        .bind(&a.role)
        .bind(&a.category)
        .bind(&a.provider)
        .bind(&a.model_requested)
        .bind(&a.model_used)
        .bind(a.input_tokens)
        .bind(a.output_tokens)
        .bind(a.cost.micros())
        .bind(a.latency_micros)
        .bind(&a.outcome)
        .bind(&a.fallback_reason)
        .bind(a.created_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Attempts of one request, in order.
pub async fn for_request(db: &Db, request_id: &str) -> Result<Vec<Attempt>, DbError> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT request_id, attempt, customer_id, task_id, team, role, category, provider, model_requested, model_used,
                input_tokens, output_tokens, cost_micros, latency_micros, outcome, fallback_reason, created_at
         FROM llm_calls WHERE request_id = $1 ORDER BY attempt",
    )
    .bind(request_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(AttemptRow::into_attempt).collect())
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    request_id: String,
    attempt: i64,
    customer_id: Option<String>,
    task_id: Option<String>,
    team: Option<String>,
    role: Option<String>,
    category: Option<String>,
    provider: String,
    model_requested: String,
    model_used: String,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    latency_micros: i64,
    outcome: String,
    fallback_reason: Option<String>,
    created_at: i64,
}

impl AttemptRow {
    fn into_attempt(self) -> Attempt {
        Attempt {
            request_id: self.request_id,
            attempt: self.attempt,
            customer_id: self.customer_id,
            task_id: self.task_id,
            team: self.team,
            role: self.role,
            category: self.category,
            provider: self.provider,
            model_requested: self.model_requested,
            model_used: self.model_used,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: Money::from_micros(self.cost_micros),
            latency_micros: self.latency_micros,
            outcome: self.outcome,
            fallback_reason: self.fallback_reason,
            created_at: self.created_at,
        }
    }
}

/// How many upstream attempts in `[from, to)` ended with `outcome` (`rate_limited`, …).
pub async fn outcome_count(db: &Db, outcome: &str, from: i64, to: i64) -> Result<i64, DbError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM llm_calls WHERE outcome = $1 AND created_at >= $2 AND created_at < $3",
    )
    .bind(outcome)
    .bind(from)
    .bind(to)
    .fetch_one(db.pool())
    .await?;
    Ok(n)
}

/// The model cost of every attempt in `[from, to)` (ops' cost-spike check).
pub async fn spend_between(db: &Db, from: i64, to: i64) -> Result<Money, DbError> {
    let total: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE created_at >= $1 AND created_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(db.pool())
    .await?;
    Ok(Money::from_micros(total))
}

/// One line of the daily cost review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostLine {
    pub key: String,
    pub calls: i64,
    pub failed: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: Money,
}

/// PostgreSQL's SUM of BIGINT is NUMERIC, hence the casts.
/// The review of `[from, to)`: totals grouped by `group` (`model_used`, `team`,
/// `customer_id`), most expensive first.
pub async fn review(db: &Db, group: Group, from: i64, to: i64) -> Result<Vec<CostLine>, DbError> {
    let column = group.column();
    let sql = format!(
        "SELECT COALESCE({column}, '-') AS k, COUNT(*),
                CAST(SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END) AS BIGINT),
                CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(cost_micros) AS BIGINT)
         FROM llm_calls WHERE created_at >= $1 AND created_at < $2
         GROUP BY COALESCE({column}, '-') ORDER BY SUM(cost_micros) DESC, k"
    );
    let rows: Vec<(String, i64, i64, i64, i64, i64)> =
        sqlx::query_as(&sql).bind(from).bind(to).fetch_all(db.pool()).await?;
    Ok(rows
        .into_iter()
        .map(|(key, calls, failed, input_tokens, output_tokens, cost)| CostLine {
            key,
            calls,
            failed,
            input_tokens,
            output_tokens,
            cost: Money::from_micros(cost),
        })
        .collect())
}

/// How the review is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Model,
    Team,
    Customer,
}

impl Group {
    fn column(self) -> &'static str {
        match self {
            Group::Model => "model_used",
            Group::Team => "team",
            Group::Customer => "customer_id",
        }
    }
}
