//! Submitting, listing, reading and cancelling tasks: the one domain function each
//! surface (JSON API, dashboard, CLI) calls.

use j1msky_core::events::{TaskCancelled, TaskRetried, TaskSubmitted};
use std::collections::BTreeMap;

use j1msky_accounts::customers::{self, Customer};
use j1msky_accounts::{access, activity};
use j1msky_core::catalogue::{Catalogue, TeamAllowance};
use j1msky_db::{outbox, Backend, Db};
use serde::Serialize;
use sqlx::Row;

use crate::{TaskError, MAX_PROMPT_BYTES};

/// Queue priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// The stored rank, highest claimed first: a plan's SLA priority (`sla.priority`,
    /// 0 without an SLA) is the major part, so an SLA customer's tasks go before every
    /// task of a customer without one, whatever those were marked (the priority is the
    /// customer's to give; the SLA is sold); within the same SLA, high before normal
    /// before low. Ranks below 10,000 (no SLA, and every rank stored before migration
    /// 0053) read as the bands did before.
    fn rank(self, sla: i64) -> i64 {
        let band = match self {
            Priority::High => 2000,
            Priority::Normal => 1000,
            Priority::Low => 0,
        };
        sla.clamp(0, 999) * SLA_RANK + band
    }

    fn from_rank(rank: i64) -> Priority {
        match rank.rem_euclid(SLA_RANK) {
            r if r >= 2000 => Priority::High,
            r if r >= 1000 => Priority::Normal,
            _ => Priority::Low,
        }
    }
}

/// One step of a plan's SLA priority in a stored rank (above every band).
const SLA_RANK: i64 = 10_000;

/// A plan's SLA level in a task's rank: its `sla.priority`, 0 without an SLA.
pub(crate) fn sla_level(plan: Option<&j1msky_core::catalogue::Plan>) -> i64 {
    plan.and_then(|p| p.sla.as_ref()).map_or(0, |s| i64::from(s.priority).clamp(0, 999))
}

/// Gives `customer`'s waiting tasks the SLA `level` (a plan change), keeping their band:
/// the queued ones, and the running ones, which go back to the queue with their rank when
/// they wait for a cap or are retried after a failure.
pub(crate) async fn rerank_queued(conn: &mut sqlx::AnyConnection, customer: &str, level: i64) -> Result<(), TaskError> {
    sqlx::query(
        "UPDATE tasks SET priority = $1 + priority % $2
         WHERE customer_id = $3 AND state IN ('queued', 'running') AND priority / $2 <> $4",
    )
    .bind(level * SLA_RANK)
    .bind(SLA_RANK)
    .bind(customer)
    .bind(level)
    .execute(conn)
    .await?;
    Ok(())
}

impl std::str::FromStr for Priority {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(TaskError::invalid("priority", format!("`{other}` is not one of high, normal, low"))),
        }
    }
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => TaskState::Queued,
            "running" => TaskState::Running,
            "succeeded" => TaskState::Succeeded,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            other => {
                return Err(TaskError::invalid(
                    "state",
                    format!("`{other}` is not one of queued, running, succeeded, failed, cancelled"),
                ))
            }
        })
    }
}

/// What a customer asks for: a prompt, or a template with its fields.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub team: String,
    pub title: Option<String>,
    pub prompt: Option<String>,
    pub template: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub priority: Priority,
    /// Routing category; absent: the team's.
    pub category: Option<String>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: String,
    pub customer_id: String,
    pub team: String,
    pub category: String,
    pub template: Option<String>,
    pub title: String,
    pub prompt: String,
    pub priority: Priority,
    pub state: TaskState,
    pub attempts: i64,
    pub not_before: i64,
    /// Why a queued task is waiting (a cap, a budget, an upstream rate limit).
    pub wait_reason: Option<String>,
    pub error: Option<String>,
    pub result: Option<String>,
    /// What the task's model calls cost us, micro-USD.
    pub cost_micros: i64,
    pub tier: Option<String>,
    /// What the customer is charged for it (pay-per-task), micro-USD.
    pub charge_micros: Option<i64>,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One completed step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub step: i64,
    pub role: String,
    pub model: String,
    pub output: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub latency_micros: i64,
    pub created_at: i64,
    /// The output is held back from this viewer (see [`get`]); `output` is then empty.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub output_withheld: bool,
}

/// A task with its steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    pub steps: Vec<Step>,
}

/// The answer to a submit: the task, and whether an earlier submit with the same
/// idempotency key made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub task: Task,
    pub replayed: bool,
}

pub(crate) const COLUMNS: &str =
    "id, customer_id, team, category, template, title, prompt, priority, state, attempts, \
     not_before, wait_reason, error, result, cost_micros, tier, charge_micros, queued_at, started_at, finished_at";

pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<Task, TaskError> {
    let state: String = r.try_get(8)?;
    Ok(Task {
        id: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        team: r.try_get(2)?,
        category: r.try_get(3)?,
        template: r.try_get(4)?,
        title: r.try_get(5)?,
        prompt: r.try_get(6)?,
        priority: Priority::from_rank(r.try_get(7)?),
        state: state.parse().map_err(|_| TaskError::Corrupt(format!("task state `{state}`")))?,
        attempts: r.try_get(9)?,
        not_before: r.try_get(10)?,
        wait_reason: r.try_get(11)?,
        error: r.try_get(12)?,
        result: r.try_get(13)?,
        cost_micros: r.try_get(14)?,
        tier: r.try_get(15)?,
        charge_micros: r.try_get(16)?,
        queued_at: r.try_get(17)?,
        started_at: r.try_get(18)?,
        finished_at: r.try_get(19)?,
    })
}

/// The plan terms a customer's tasks run under: pay-per-task customers (no plan) get
/// every team and no monthly limit.
pub(crate) fn check_team(catalogue: &Catalogue, customer: &Customer, team: &str) -> Result<(), TaskError> {
    if !catalogue.teams.contains_key(team) {
        return Err(TaskError::UnknownTeam {
            team: team.to_string(),
            known: catalogue.teams.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    let Some(plan_id) = customer.plan.as_deref() else { return Ok(()) };
    let Some(plan) = catalogue.plans.get(plan_id) else {
        return Err(TaskError::Corrupt(format!("customer {} has unknown plan `{plan_id}`", customer.id)));
    };
    match plan.teams {
        TeamAllowance::All => Ok(()),
        TeamAllowance::Choose(0) => Err(TaskError::TeamNotInPlan {
            team: team.to_string(),
            plan: plan.name.clone(),
            hint: "; the plan runs no tasks — resume or upgrade to run them".into(),
        }),
        TeamAllowance::Choose(n) => {
            let chosen = j1msky_accounts::customers::teams_in_force(catalogue, customer);
            if chosen.iter().any(|t| t == team) {
                return Ok(());
            }
            Err(TaskError::TeamNotInPlan {
                team: team.to_string(),
                plan: plan.name.clone(),
                hint: if chosen.len() < n as usize {
                    format!(
                        "; your plan runs {n} teams of your choice and {} chosen: choose the rest on /app/tasks",
                        if chosen.is_empty() { "none is".into() } else { format!("{} is", chosen.join(", ")) }
                    )
                } else {
                    format!("; your {n} chosen teams are {}; upgrade to Pro for every team", chosen.join(", "))
                },
            })
        }
    }
}

/// Fills in a template or checks a free prompt; returns (title, prompt).
fn compose(catalogue: &Catalogue, input: &NewTask) -> Result<(String, String), TaskError> {
    let team = &catalogue.teams[&input.team];
    let (title, prompt) = match &input.template {
        Some(tid) => {
            let t = team.templates.get(tid).ok_or_else(|| {
                TaskError::invalid(
                    "template",
                    format!(
                        "the {} team has no template `{tid}`; its templates are: {}",
                        input.team,
                        team.templates.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            if let Some(unknown) = input.fields.keys().find(|k| !t.fields.contains(k)) {
                return Err(TaskError::invalid(
                    "fields",
                    format!("template `{tid}` has no field `{unknown}`; its fields are: {}", t.fields.join(", ")),
                ));
            }
            if let Some(missing) = t.fields.iter().find(|f| input.fields.get(*f).is_none_or(|v| v.trim().is_empty())) {
                return Err(TaskError::invalid("fields", format!("template `{tid}` needs the field `{missing}`")));
            }
            if input.prompt.is_some() {
                return Err(TaskError::invalid("prompt", "give a prompt or a template, not both"));
            }
            let env = minijinja::Environment::new();
            let prompt = env
                .render_str(&t.prompt, &input.fields)
                .map_err(|e| TaskError::Corrupt(format!("template {}/{tid} does not render: {e}", input.team)))?;
            (input.title.clone().unwrap_or_else(|| t.title.clone()), prompt)
        }
        None => {
            let prompt = input.prompt.clone().unwrap_or_default();
            let title = input.title.clone().unwrap_or_else(|| summary_title(&prompt));
            (title, prompt)
        }
    };
    if prompt.trim().is_empty() {
        return Err(TaskError::invalid("prompt", "the prompt is empty"));
    }
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(TaskError::invalid(
            "prompt",
            format!("the prompt is {} bytes; the limit is {MAX_PROMPT_BYTES}", prompt.len()),
        ));
    }
    let title = title.trim().to_string();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(TaskError::invalid("title", "the title must be 1 to 200 characters"));
    }
    Ok((title, prompt))
}

fn summary_title(prompt: &str) -> String {
    let line = prompt.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let mut t: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        t.push('…');
    }
    t
}

/// Submits a task for `customer_id`. With an idempotency key, a repeated submit returns
/// the first task instead of creating another. Over a plan limit: an error naming the
/// limit and the upgrade path, and a `plan.limit_hit` event.
pub async fn submit(
    db: &Db,
    catalogue: &Catalogue,
    customer_id: &str,
    input: &NewTask,
    idempotency_key: Option<&str>,
    now: i64,
) -> Result<Submitted, TaskError> {
    if let Some(key) = idempotency_key {
        if key.is_empty() || key.len() > 255 {
            return Err(TaskError::invalid("Idempotency-Key", "must be 1 to 255 characters"));
        }
        if let Some(task) = by_key(db, customer_id, key).await? {
            return Ok(Submitted { task, replayed: true });
        }
    }
    let customer = match customers::get(db, customer_id).await {
        Ok(c) => c,
        Err(j1msky_accounts::AccountsError::NotFound(_)) => return Err(TaskError::NoCustomer(customer_id.into())),
        Err(e) => return Err(e.into()),
    };
    // Limits below are those of the plan admission says is in force (the pause plan's
    // while paused), not whatever plan the row still names.
    let admitted = access::admit(catalogue, &access::Standing::of(&customer), now)?;
    let customer = Customer { plan: admitted.plan().map(str::to_string), ..customer };
    if let Err(e) = check_team(catalogue, &customer, &input.team) {
        if matches!(e, TaskError::TeamNotInPlan { .. }) {
            activity::limit_hit(db, customer_id, "team_not_in_plan", &e.to_string(), now).await;
        }
        return Err(e);
    }
    let (title, prompt) = compose(catalogue, input)?;
    let team = &catalogue.teams[&input.team];
    let category = match &input.category {
        Some(c) if c.is_empty() || c.len() > 40 || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') => {
            return Err(TaskError::invalid("category", "letters, digits and `_`, at most 40"))
        }
        Some(c) => c.to_ascii_lowercase(),
        None => team.category.clone().unwrap_or_else(|| input.team.clone()),
    };
    // A category some model is kept for (the catalogue's `model_only_for`: Opus for
    // architecture and strategy) is the team's to claim, not the customer's: a content
    // task marked `strategy` would otherwise run its roles on the reserved model, work
    // the plan sells with another team.
    let own = team.category.clone().unwrap_or_else(|| input.team.clone());
    if category != own && catalogue.routing.model_only_for.values().any(|kept| kept.contains(&category)) {
        return Err(TaskError::invalid(
            "category",
            format!("`{category}` is kept for the teams that work in it; the {} team works in `{own}`", input.team),
        ));
    }
    let plan = customer.plan.as_deref().and_then(|p| catalogue.plans.get(p));
    let sla = sla_level(plan);
    let id = j1msky_core::ids::new_id("tsk");

    let trial = match customer.stage {
        j1msky_core::vocab::Stage::Trial => j1msky_accounts::trials::get(db, customer_id).await?,
        _ => None,
    };
    let mut tx = db.begin().await?;
    if db.backend() == Backend::Postgres {
        // One submitter per customer at a time, so the monthly count below is exact.
        sqlx::query("SELECT id FROM customers WHERE id = $1 FOR UPDATE").bind(customer_id).execute(&mut *tx).await?;
    }
    // A trial the operator granted counts its tasks from its start and ends on its date.
    if let Some(trial) = &trial {
        if let Err(e) = trial_allows(&mut tx, trial, now).await {
            tx.rollback().await?;
            if let TaskError::LimitReached { message, .. } = &e {
                activity::limit_hit(db, customer_id, "trial_tasks", message, now).await;
            }
            return Err(e);
        }
    }
    // However many a plan includes, one customer's queue is bounded: tasks parked at the
    // front of the queue (a customer's cap spent) are read past by every claim.
    let (waiting,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM tasks WHERE customer_id = $1 AND state IN ('queued', 'running')")
            .bind(customer_id)
            .fetch_one(&mut *tx)
            .await?;
    if waiting >= i64::from(catalogue.max_waiting_tasks_per_customer) {
        tx.rollback().await?;
        let e = TaskError::TooManyWaiting { waiting };
        activity::limit_hit(db, customer_id, "tasks_waiting", &e.to_string(), now).await;
        return Err(e);
    }
    if let Some((limit, by_contract)) = monthly_task_limit(catalogue, &customer) {
        let tz: chrono_tz::Tz = customer.time_zone.parse().unwrap_or(chrono_tz::UTC);
        let (from, to) = j1msky_core::windows::month(tz, now);
        // Tasks cancelled before they started do not count.
        let used = counted_toward_limit(&mut tx, customer_id, from, to).await?;
        if used >= limit {
            tx.rollback().await?;
            let plan_name = plan.map_or("your plan".to_string(), |p| p.name.clone());
            let message = if by_contract {
                format!(
                    "your {plan_name} contract includes {limit} tasks a month and {used} have been used; \
                     ask us to raise the contract limit, or wait for next month"
                )
            } else {
                format!(
                    "the {plan_name} plan includes {limit} tasks a month and {used} have been used; \
                     upgrade to Pro for unlimited tasks, or wait for next month"
                )
            };
            activity::limit_hit(db, customer_id, "tasks_per_month", &message, now).await;
            return Err(TaskError::LimitReached { limit: "tasks_per_month", message });
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO tasks (id, customer_id, team, category, template, title, prompt, priority, state, attempts,
             failures, not_before, idempotency_key, queued_at, pay_per_task)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, 0, $9, $10, $9, $11)
         ON CONFLICT (customer_id, idempotency_key) DO NOTHING",
    )
    .bind(&id)
    .bind(customer_id)
    .bind(&input.team)
    .bind(&category)
    .bind(&input.template)
    .bind(&title)
    .bind(&prompt)
    .bind(input.priority.rank(sla))
    .bind(now)
    .bind(idempotency_key)
    .bind(i64::from(matches!(admitted, access::Admitted::PayPerTask)))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        // A concurrent submit with the same key won.
        tx.rollback().await?;
        let key = idempotency_key.unwrap_or_default();
        let task = by_key(db, customer_id, key).await?.ok_or_else(|| TaskError::NotFound(key.into()))?;
        return Ok(Submitted { task, replayed: true });
    }
    let event = TaskSubmitted {
        task_id: id.clone(),
        team: input.team.clone(),
        category: category.clone(),
        template: input.template.clone(),
    };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(customer_id), now).await?;
    tx.commit().await?;
    activity::mark_active(db, customer_id, activity::Source::Task, now).await;
    let task = get_task(db, &id).await?.ok_or_else(|| TaskError::NotFound(id.clone()))?;
    Ok(Submitted { task, replayed: false })
}

async fn by_key(db: &Db, customer_id: &str, key: &str) -> Result<Option<Task>, TaskError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE customer_id = $1 AND idempotency_key = $2"))
        .bind(customer_id)
        .bind(key)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub(crate) async fn get_task(db: &Db, id: &str) -> Result<Option<Task>, TaskError> {
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1")).bind(id).fetch_optional(db.pool()).await?;
    row.as_ref().map(from_row).transpose()
}

/// A task with its steps; `customer` limits it to one customer's tasks (another
/// customer's id is "not found", never "forbidden").
pub async fn get(db: &Db, id: &str, customer: Option<&str>) -> Result<TaskDetail, TaskError> {
    let task = get_task(db, id)
        .await?
        .filter(|t| customer.is_none_or(|c| c == t.customer_id))
        .ok_or_else(|| TaskError::NotFound(id.into()))?;
    let rows = sqlx::query(
        "SELECT step, role, model, output, input_tokens, output_tokens, cost_micros, latency_micros, created_at
         FROM task_steps WHERE task_id = $1 ORDER BY step",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await?;
    let steps = rows
        .iter()
        .map(|r| {
            Ok(Step {
                step: r.try_get(0)?,
                role: r.try_get(1)?,
                model: r.try_get(2)?,
                output: r.try_get(3)?,
                input_tokens: r.try_get(4)?,
                output_tokens: r.try_get(5)?,
                cost_micros: r.try_get(6)?,
                latency_micros: r.try_get(7)?,
                created_at: r.try_get(8)?,
                output_withheld: false,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let mut detail = TaskDetail { task, steps };
    if let Some(customer) = customer {
        withhold_unpaid_work(db, customer, &mut detail).await?;
    }
    Ok(detail)
}

/// Pay-per-task work is delivered with its charge: a task admitted as pay-per-task shows
/// its customer its steps' outputs once it has succeeded (and so was charged), not while
/// it runs nor after it failed or was cancelled, whatever plan the customer has since
/// (migration 0050's `tasks.pay_per_task`). Otherwise cancelling a task after its first
/// step, or a prompt written to be rejected twice, would deliver the work unpaid, and a
/// trial started later would deliver all of it. Tasks of a plan are paid through it and
/// show everything; so does the operator's view (no `customer`).
async fn withhold_unpaid_work(db: &Db, customer: &str, detail: &mut TaskDetail) -> Result<(), TaskError> {
    if detail.task.state == TaskState::Succeeded {
        return Ok(());
    }
    let paid_per_task: Option<(i64,)> =
        sqlx::query_as("SELECT pay_per_task FROM tasks WHERE id = $1 AND customer_id = $2")
            .bind(&detail.task.id)
            .bind(customer)
            .fetch_optional(db.pool())
            .await?;
    if matches!(paid_per_task, Some((1,))) {
        for s in &mut detail.steps {
            s.output.clear();
            s.output_withheld = true;
        }
    }
    Ok(())
}

/// Tasks, newest first; of one customer, or all.
pub async fn list(
    db: &Db,
    customer: Option<&str>,
    state: Option<TaskState>,
    limit: i64,
) -> Result<Vec<Task>, TaskError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE ($1 IS NULL OR customer_id = $1) AND ($2 IS NULL OR state = $2)
         ORDER BY queued_at DESC, id DESC LIMIT $3"
    ))
    .bind(customer)
    .bind(state.map(TaskState::as_str))
    .bind(limit.clamp(1, 1000))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Cancels a queued or running task (a running one stops before its next step; the
/// step in flight is paid for but the task is never charged).
pub async fn cancel(db: &Db, id: &str, customer: Option<&str>, by: &str, now: i64) -> Result<Task, TaskError> {
    let task = get(db, id, customer).await?.task;
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "UPDATE tasks SET state = 'cancelled', finished_at = $1, lease_owner = NULL, lease_until = NULL
         WHERE id = $2 AND state IN ('queued', 'running')",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        tx.rollback().await?;
        let state = get_task(db, id).await?.map_or("gone".to_string(), |t| t.state.as_str().to_string());
        return Err(TaskError::NotCancellable { id: id.into(), state });
    }
    let event = TaskCancelled { task_id: id.into(), by: by.into() };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(&task.customer_id), now).await?;
    tx.commit().await?;
    get_task(db, id).await?.ok_or_else(|| TaskError::NotFound(id.into()))
}

/// Puts a failed (or cancelled) task back in the queue, with its failure count reset;
/// its completed steps are kept, so it resumes after the last one.
pub async fn retry(db: &Db, id: &str, by: &str, now: i64) -> Result<Task, TaskError> {
    let task = get_task(db, id).await?.ok_or_else(|| TaskError::NotFound(id.into()))?;
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "UPDATE tasks SET state = 'queued', failures = 0, not_before = $1, finished_at = NULL, wait_reason = NULL,
             requeued_at = $1
         WHERE id = $2 AND state IN ('failed', 'cancelled')",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        tx.rollback().await?;
        return Err(TaskError::invalid(
            "state",
            format!("task {id} is {}; only failed or cancelled tasks are retried", task.state.as_str()),
        ));
    }
    let event = TaskRetried { task_id: id.into(), by: by.into() };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(&task.customer_id), now).await?;
    tx.commit().await?;
    get_task(db, id).await?.ok_or_else(|| TaskError::NotFound(id.into()))
}

/// Queued tasks of one priority and team.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Depth {
    pub priority: Priority,
    pub team: String,
    pub queued: i64,
    /// How long the oldest of them has waited, in microseconds (since it was queued, or
    /// queued again by [`retry`]).
    pub oldest_wait_micros: i64,
}

/// The operator's view of the queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueView {
    pub depth: Vec<Depth>,
    pub running: Vec<Task>,
    /// Queued tasks held back (by a cap, a budget, a rate limit, or a retry back-off).
    pub waiting: Vec<Task>,
    pub recent_failures: Vec<Task>,
}

/// Depth by priority and team, what runs, what waits and why, and recent failures.
pub async fn queue_view(db: &Db, now: i64) -> Result<QueueView, TaskError> {
    let rows = sqlx::query(
        "SELECT priority, team, COUNT(*), MIN(COALESCE(requeued_at, queued_at)) FROM tasks WHERE state = 'queued'
         GROUP BY priority, team ORDER BY priority DESC, team",
    )
    .fetch_all(db.pool())
    .await?;
    let mut depth: Vec<Depth> = Vec::new();
    for r in &rows {
        let priority = Priority::from_rank(r.try_get(0)?);
        let team: String = r.try_get(1)?;
        let n: i64 = r.try_get(2)?;
        let oldest: i64 = r.try_get(3)?;
        // Ranks of the same band under different SLAs fold into their band.
        match depth.iter_mut().find(|d| d.priority == priority && d.team == team) {
            Some(d) => {
                d.queued += n;
                d.oldest_wait_micros = d.oldest_wait_micros.max(now - oldest);
            }
            None => depth.push(Depth { priority, team, queued: n, oldest_wait_micros: now - oldest }),
        }
    }
    let running = tasks_where(db, "state = 'running'", "started_at", None).await?;
    let waiting = tasks_where(db, "state = 'queued' AND not_before > $1", "not_before", Some(now)).await?;
    let recent_failures = tasks_where(db, "state = 'failed'", "finished_at DESC", None).await?;
    Ok(QueueView { depth, running, waiting, recent_failures })
}

/// Queued tasks under one SLA (the plans whose `sla.priority` is `level`): how many, how
/// long the oldest has waited, and how many have waited longer than the strictest of those
/// plans' `sla.max_queue_wait_secs`, which is a breach of the SLA sold. A task an operator
/// queued again ([`retry`]) waits from then.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaLane {
    pub level: i64,
    /// The plans' names, as the catalogue has them.
    pub plans: Vec<String>,
    pub max_wait_micros: i64,
    pub queued: i64,
    pub oldest_wait_micros: i64,
    pub past_max: i64,
}

/// Every SLA of the catalogue with its queued tasks (a lane without any is left out).
/// Read from the tasks' ranks (the SLA level is their major part, [`Priority`]), one index
/// range per SLA, so the check is cheap enough to run every minute.
pub async fn sla_lanes(db: &Db, catalogue: &Catalogue, now: i64) -> Result<Vec<SlaLane>, TaskError> {
    let mut levels: BTreeMap<i64, (Vec<String>, i64)> = BTreeMap::new();
    for plan in catalogue.plans.values() {
        let Some(sla) = plan.sla.as_ref() else { continue };
        let level = sla_level(Some(plan));
        if level == 0 {
            continue; // no rank of its own: the plan's tasks queue with everyone's
        }
        let max = i64::from(sla.max_queue_wait_secs) * 1_000_000;
        let entry = levels.entry(level).or_insert_with(|| (Vec::new(), max));
        entry.0.push(plan.name.clone());
        entry.1 = entry.1.min(max);
    }
    let mut lanes = Vec::new();
    for (level, (plans, max_wait_micros)) in levels.into_iter().rev() {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(COALESCE(requeued_at, queued_at)),
                    COALESCE(SUM(CASE WHEN COALESCE(requeued_at, queued_at) < $3 THEN 1 ELSE 0 END), 0)
             FROM tasks WHERE state = 'queued' AND priority >= $1 AND priority < $2",
        )
        .bind(level * SLA_RANK)
        .bind((level + 1) * SLA_RANK)
        .bind(now - max_wait_micros)
        .fetch_one(db.pool())
        .await?;
        let queued: i64 = row.try_get(0)?;
        if queued == 0 {
            continue;
        }
        let oldest: Option<i64> = row.try_get(1)?;
        lanes.push(SlaLane {
            level,
            plans,
            max_wait_micros,
            queued,
            oldest_wait_micros: oldest.map_or(0, |t| now - t),
            past_max: row.try_get(2)?,
        });
    }
    Ok(lanes)
}

/// The customer's tasks queued in `[from, to)` that count toward a monthly task limit
/// (tasks cancelled before they started do not).
/// Refuses a task past a granted trial's end or beyond its included tasks.
async fn trial_allows(
    conn: &mut sqlx::AnyConnection,
    trial: &j1msky_accounts::trials::Trial,
    now: i64,
) -> Result<(), TaskError> {
    if now >= trial.ends_at {
        let msg = "the trial has ended; choose a plan in /app/billing to keep using the service";
        return Err(j1msky_accounts::access::NoActivePlan(msg.into()).into());
    }
    let used = counted_toward_limit(conn, &trial.customer_id, trial.started_at, i64::MAX).await?;
    if used >= trial.tasks {
        let message = format!(
            "the trial includes {} tasks and {used} have been used; choose a plan in /app/billing to continue",
            trial.tasks
        );
        return Err(TaskError::LimitReached { limit: "trial_tasks", message });
    }
    Ok(())
}

/// The tasks `customer` may start in a month, and whether its contract sets that (plans
/// with custom limits) rather than its plan; `None`: no monthly limit. `customer.plan`
/// must be the plan in force (`access::admit`'s: the pause plan's while paused), as
/// submitting and the customer's home both read it.
pub fn monthly_task_limit(catalogue: &Catalogue, customer: &Customer) -> Option<(i64, bool)> {
    let plan = customer.plan.as_deref().and_then(|p| catalogue.plans.get(p));
    let contract = customer.contract.tasks_per_month.filter(|_| plan.is_some_and(|p| p.custom_limits));
    match contract {
        Some(limit) => Some((limit, true)),
        None => plan.and_then(|p| p.tasks_per_month).map(|l| (i64::from(l), false)),
    }
}

pub async fn counted_toward_limit(
    conn: &mut sqlx::AnyConnection,
    customer_id: &str,
    from: i64,
    to: i64,
) -> Result<i64, TaskError> {
    let used: i64 = sqlx::query(
        "SELECT COUNT(*) FROM tasks WHERE customer_id = $1 AND queued_at >= $2 AND queued_at < $3
           AND NOT (state = 'cancelled' AND started_at IS NULL)",
    )
    .bind(customer_id)
    .bind(from)
    .bind(to)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    Ok(used)
}

/// How many tasks failed (finished in the `failed` state) in `[from, to)`.
pub async fn failed_between(db: &Db, from: i64, to: i64) -> Result<i64, TaskError> {
    let n: i64 =
        sqlx::query("SELECT COUNT(*) FROM tasks WHERE state = 'failed' AND finished_at >= $1 AND finished_at < $2")
            .bind(from)
            .bind(to)
            .fetch_one(db.pool())
            .await?
            .try_get(0)?;
    Ok(n)
}

/// Up to 50 tasks matching `filter` (which uses `$1` when `param` is given).
async fn tasks_where(db: &Db, filter: &str, order: &str, param: Option<i64>) -> Result<Vec<Task>, TaskError> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE {filter} ORDER BY {order} LIMIT 50");
    let mut q = sqlx::query(&sql);
    if let Some(p) = param {
        q = q.bind(p);
    }
    q.fetch_all(db.pool()).await?.iter().map(from_row).collect()
}
