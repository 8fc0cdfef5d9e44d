//! Workers: claim a task with a lease, run its remaining steps through the gateway
//! (heartbeating the lease meanwhile), and settle it. Every write after the claim is
//! fenced by (owner, claim count) and `state = 'running'`: a worker whose lease was taken
//! over, or whose task was cancelled, can no longer change it.
//!
//! A task whose worker died is claimed again once its lease expires and resumes after
//! its last stored step. Over a cap, a budget or an upstream rate limit the task waits
//! (`not_before`, with the reason shown to the operator) instead of failing.

use j1msky_core::events::{TaskFailed, TaskStarted, TaskSucceeded};
use std::sync::Arc;
use std::time::Duration;

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_core::clock::SECOND;
use j1msky_core::Clock;
use j1msky_db::{outbox, Backend, Db};
use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
use j1msky_gateway::limits::LimitError;
use j1msky_gateway::providers::UpstreamError;
use j1msky_gateway::{CallContext, Gateway, GatewayError};
use sqlx::Row;

use crate::pipeline::{self, Done};
use crate::tier::{self, Effort};
use crate::TaskError;

mod pg;

/// Worker settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How long an idle worker waits before looking for work again.
    pub poll: Duration,
    /// Failed attempts (errors that are not waits) before the task fails for good.
    pub max_failures: i64,
    /// First back-off after a failure; doubles with each.
    pub retry_backoff: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(100),
            max_failures: 3,
            retry_backoff: Duration::from_secs(10),
        }
    }
}

/// How one run of a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Back in the queue until `not_before`, for `reason`.
    Waiting {
        reason: String,
    },
    /// Failed this attempt; will run again.
    Retrying {
        error: String,
    },
    Failed {
        error: String,
    },
    /// The lease was lost (taken over after expiry) or the task was cancelled meanwhile.
    Lost,
}

/// A claimed task.
#[derive(Debug, Clone)]
struct Claim {
    id: String,
    customer_id: String,
    team: String,
    category: String,
    title: String,
    prompt: String,
    attempt: i64,
    failures: i64,
    /// Admitted as pay-per-task (`tasks.pay_per_task`): charged when it succeeds.
    pay_per_task: bool,
}

/// One worker (cheap to clone; run many).
#[derive(Clone)]
pub struct Worker {
    db: Db,
    catalogue: LiveCatalogue,
    gateway: Arc<Gateway>,
    clock: Arc<dyn Clock>,
    owner: String,
    config: WorkerConfig,
}

const FENCE: &str = "id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3";

impl Worker {
    pub fn new(
        db: Db,
        catalogue: impl Into<LiveCatalogue>,
        gateway: Arc<Gateway>,
        clock: Arc<dyn Clock>,
        owner: impl Into<String>,
        config: WorkerConfig,
    ) -> Worker {
        Worker { db, catalogue: catalogue.into(), gateway, clock, owner: owner.into(), config }
    }

    fn lease_micros(&self) -> i64 {
        self.config.lease.as_micros() as i64
    }

    /// Runs until `stop` turns true, then finishes the task in hand.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            match self.run_once().await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::error!(worker = %self.owner, error = %e, "task worker"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Claims the most urgent runnable task and works it; None when there is none.
    pub async fn run_once(&self) -> Result<Option<(String, Outcome)>, TaskError> {
        let Some(claim) = self.claim().await? else { return Ok(None) };
        let outcome = self.work(&claim).await?;
        tracing::debug!(task = %claim.id, ?outcome, "task run");
        Ok(Some((claim.id, outcome)))
    }

    async fn claim(&self) -> Result<Option<Claim>, TaskError> {
        let now = self.clock.now_micros();
        let lock = match self.db.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let runnable = "((state = 'queued' AND not_before <= $3) OR (state = 'running' AND lease_until < $3))";
        // Two index walks that each stop at their first row, rather than one OR that
        // sorts every runnable task on each claim: a task whose worker died is taken
        // first (it has waited longest), then the queue in priority order.
        let sql = format!(
            "UPDATE tasks SET state = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1,
                 started_at = COALESCE(started_at, $3), wait_reason = NULL
             WHERE id = COALESCE(
                     (SELECT id FROM tasks WHERE state = 'running' AND lease_until < $3
                      ORDER BY lease_until LIMIT 1 {lock}),
                     (SELECT id FROM tasks WHERE state = 'queued' AND not_before <= $3
                      ORDER BY priority DESC, not_before, queued_at, id LIMIT 1 {lock}))
               AND {runnable}
             RETURNING id, customer_id, team, category, title, prompt, attempts, failures, pay_per_task"
        );
        if self.db.backend() == Backend::Postgres {
            // The claim and its `task.started` in one statement.
            let row = pg::claim(&self.db, &sql, &self.owner, now + self.lease_micros(), now).await?;
            return row.map(|r| claim_from_row(&r)).transpose();
        }
        let mut tx = self.db.begin().await?;
        let row = sqlx::query(&sql)
            .bind(&self.owner)
            .bind(now + self.lease_micros())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let claim = claim_from_row(&row)?;
        let event = TaskStarted { task_id: claim.id.clone(), attempt: claim.attempt, worker: self.owner.clone() };
        outbox::emit_typed(&mut tx, self.db.backend(), event, Some(&claim.customer_id), now).await?;
        tx.commit().await?;
        Ok(Some(claim))
    }

    /// Why the task may not run, when the plan in force no longer includes its team: the
    /// customer paused (the pause plan runs no tasks) or moved to a plan without it after
    /// submitting. Checked at every claim (a first run, or a resumed one), as submission
    /// checked it; a task already running finishes its steps. A customer refused
    /// altogether is the gateway's to refuse, with its own reason.
    async fn team_left_the_plan(&self, c: &Claim) -> Result<Option<String>, TaskError> {
        let admitted = match self.gateway.admitted(&c.customer_id).await {
            Ok(Some(admitted)) => admitted,
            // Refused, or not known: the gateway refuses the call with its own reason.
            Ok(None) => return Ok(None),
            Err(e) => return Err(TaskError::Corrupt(format!("reading the plan in force: {e}"))),
        };
        // Only a plan that runs some teams, not all, needs the customer's chosen teams:
        // pay-per-task and plans with every team take no read here.
        let choose = admitted.plan().and_then(|p| self.catalogue.plans.get(p)).map(|p| &p.teams);
        if !matches!(choose, Some(j1msky_core::catalogue::TeamAllowance::Choose(_))) {
            return Ok(None);
        }
        let customer = match j1msky_accounts::customers::get(&self.db, &c.customer_id).await {
            Ok(customer) => customer,
            Err(j1msky_accounts::AccountsError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let customer = j1msky_accounts::customers::Customer { plan: admitted.plan().map(str::to_string), ..customer };
        Ok(match crate::submit::check_team(&self.catalogue, &customer, &c.team) {
            Err(e @ TaskError::TeamNotInPlan { .. }) => Some(format!("not run: {e}")),
            _ => None,
        })
    }

    /// Extends the lease; false when it was lost.
    async fn heartbeat(&self, c: &Claim) -> Result<bool, TaskError> {
        let until = self.clock.now_micros() + self.lease_micros();
        let done = sqlx::query(&format!("UPDATE tasks SET lease_until = $4 WHERE {FENCE}"))
            .bind(&c.id)
            .bind(&self.owner)
            .bind(c.attempt)
            .bind(until)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The task's stored steps. A first claim has none to read: steps are stored only
    /// under a claim (fenced on its number), and attempts only ever count up.
    async fn steps_done(&self, c: &Claim) -> Result<Vec<StepDone>, TaskError> {
        if c.attempt == 1 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT role, output, cost_micros, input_tokens + output_tokens, latency_micros FROM task_steps
             WHERE task_id = $1 ORDER BY step",
        )
        .bind(&c.id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StepDone {
                    done: Done { role: r.try_get(0)?, output: r.try_get(1)? },
                    cost: r.try_get(2)?,
                    tokens: r.try_get(3)?,
                    latency: r.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn work(&self, c: &Claim) -> Result<Outcome, TaskError> {
        let Some(team) = self.catalogue.teams.get(&c.team) else {
            return self.fail(c, &format!("the team `{}` is no longer in the catalogue", c.team), true).await;
        };
        if let Some(why) = self.team_left_the_plan(c).await? {
            return self.fail(c, &why, true).await;
        }
        let mut done = self.steps_done(c).await?;
        loop {
            let history: Vec<Done> = done.iter().map(|d| d.done.clone()).collect();
            let idx = match pipeline::next_role(team, &history) {
                pipeline::Next::Run(idx) => idx,
                pipeline::Next::Complete => return self.succeed(c, team, &done, None).await,
                pipeline::Next::Rejected { role, .. } => {
                    // The review itself is the last step's output, shown wherever step outputs
                    // are: not copied into the error, which a pay-per-task customer reads on
                    // a task that failed uncharged (its outputs withheld).
                    let error = format!("the {role} role rejected the revised work (its review is the last step)");
                    return self.fail(c, &error, true).await;
                }
            };
            let role = &team.roles[idx];
            let system = match pipeline::system_prompt(&c.team, team, role, &c.title, &c.prompt, &c.category, &history)
            {
                Ok(s) => s,
                Err(e) => return self.fail(c, &e, true).await,
            };
            let step = done.len() as i64;
            let req = ChatRequest {
                system: Some(system),
                turns: vec![Turn {
                    speaker: Speaker::User,
                    text: pipeline::user_message(&c.title, &c.prompt, &history),
                }],
                max_tokens: role.max_tokens,
                temperature: None,
                stop: vec![],
            };
            let ctx = CallContext {
                // One id per (task, step, claim): a resumed task's repeated call is a new
                // upstream call, recorded as such; the same attempt is never counted twice.
                request_id: format!("{}.s{step}.a{}", c.id, c.attempt),
                customer_id: Some(c.customer_id.clone()),
                category: c.category.clone(),
                task_id: Some(c.id.clone()),
                team: Some(c.team.clone()),
                role: Some(role.role.clone()),
            };
            let result = self.call_with_heartbeat(c, &ctx, &role.model, &req).await?;
            let completed = match result {
                Ok(completed) => completed,
                Err(e) => return self.after_error(c, e).await,
            };
            let output = completed.response.text.clone();
            // The step's model time is its answer's latency: failed attempts and the
            // back-off between them are our provider's trouble, not the task's work.
            let latency: i64 = completed.attempts.iter().filter(|a| a.outcome == "ok").map(|a| a.latency_micros).sum();
            let tokens = (completed.response.usage.input_tokens + completed.response.usage.output_tokens) as i64;
            let now = self.clock.now_micros();
            let row = StepRow { step, role: &role.role, output: &output, completed: &completed, latency, now };
            let done_step = Done { role: role.role.clone(), output: output.clone() };
            let step_done = StepDone { done: done_step, cost: completed.cost.micros(), tokens, latency };
            if self.one_trip() {
                // The last step is stored by the success's own statement.
                let mut then: Vec<Done> = history;
                then.push(step_done.done.clone());
                if pipeline::next_role(team, &then) == pipeline::Next::Complete {
                    done.push(step_done);
                    return self.succeed(c, team, &done, Some(&row)).await;
                }
            }
            if !self.store_step(c, &row).await? {
                return Ok(Outcome::Lost);
            }
            done.push(step_done);
        }
    }

    /// Stores a finished step under the task's lease (fenced: false when the lease was
    /// lost), with its ledger rows: a crash never leaves a step whose cost is missing from
    /// the ledger. On PostgreSQL it is one statement, and the ledger rows are already
    /// committed by the gateway's settlement before the call returned; on SQLite, one
    /// transaction that also writes them (the in-memory limits commit them later; a
    /// repeated row is ignored by the ledger).
    async fn store_step(&self, c: &Claim, s: &StepRow<'_>) -> Result<bool, TaskError> {
        let lease_until = s.now + self.lease_micros();
        if self.one_trip() {
            let sql = format!(
                "WITH fenced AS (UPDATE tasks SET lease_until = $4 WHERE {FENCE} RETURNING id)
                 {STEP_INSERT} SELECT id, $5, $6, $7, $8, $9, $10, $11, $12, $3, $13 FROM fenced"
            );
            let fenced = sqlx::query(&sql).bind(&c.id).bind(&self.owner).bind(c.attempt).bind(lease_until);
            let done = s.bind(fenced).bind(s.now).execute(self.db.pool()).await?;
            return Ok(done.rows_affected() == 1);
        }
        let mut tx = self.db.begin().await?;
        let fenced = sqlx::query(&format!("UPDATE tasks SET lease_until = $4 WHERE {FENCE}"))
            .bind(&c.id)
            .bind(&self.owner)
            .bind(c.attempt)
            .bind(lease_until)
            .execute(&mut *tx)
            .await?;
        if fenced.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let insert = format!("{STEP_INSERT} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
        s.bind(sqlx::query(&insert).bind(&c.id)).bind(c.attempt).bind(s.now).execute(&mut *tx).await?;
        j1msky_gateway::ledger::record(&mut tx, &s.completed.attempts).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// PostgreSQL with the limits in the database: the gateway has committed a call's
    /// ledger rows before returning it, so a step is stored by one statement of ours.
    fn one_trip(&self) -> bool {
        self.db.backend() == Backend::Postgres && !self.gateway.limits_in_process()
    }

    /// The gateway call, with the lease kept alive while it runs.
    async fn call_with_heartbeat(
        &self,
        c: &Claim,
        ctx: &CallContext,
        model: &str,
        req: &ChatRequest,
    ) -> Result<Result<j1msky_gateway::Completed, GatewayError>, TaskError> {
        let call = self.gateway.complete(ctx, Some(model), req);
        tokio::pin!(call);
        let every = (self.config.lease / 3).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                r = &mut call => return Ok(r),
                _ = tick.tick() => {
                    // The call runs on whatever the heartbeat says: dropping it would leave a
                    // paid upstream call unsettled and out of the ledger. A lost lease is
                    // caught by the fenced write of the step after it.
                    match self.heartbeat(c).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(task = %c.id, "lease lost during a model call"),
                        Err(e) => tracing::error!(task = %c.id, error = %e, "heartbeat failed during a model call"),
                    }
                }
            }
        }
    }

    async fn after_error(&self, c: &Claim, e: GatewayError) -> Result<Outcome, TaskError> {
        let wait = |secs: u64, why: String| Some((secs.max(1), why));
        let waiting = match &e {
            GatewayError::Limit(LimitError::Cap { scope, retry_after_secs, .. }) => {
                wait(*retry_after_secs, format!("hourly cap reached for {scope}"))
            }
            GatewayError::Limit(LimitError::Budget { scope, retry_after_secs, .. }) => {
                wait((*retry_after_secs).min(3600), format!("budget exhausted for {scope}"))
            }
            GatewayError::Limit(LimitError::Backlog { .. }) => wait(5, "the cost ledger is not being written".into()),
            GatewayError::Upstream(UpstreamError::RateLimited { retry_after_secs }) => {
                wait(retry_after_secs.unwrap_or(5), "the provider is rate limiting".into())
            }
            GatewayError::Upstream(UpstreamError::Overloaded { .. }) => {
                wait(15, "the provider is overloaded or its circuit is open".into())
            }
            _ => None,
        };
        if let Some((secs, reason)) = waiting {
            return self.wait(c, secs, &reason).await;
        }
        // A customer who may no longer use the service will not become able to by retrying.
        let permanent = matches!(e, GatewayError::Route(_) | GatewayError::Invalid(_) | GatewayError::NoActivePlan(_))
            || matches!(e, GatewayError::Upstream(UpstreamError::BadRequest { .. }));
        self.fail(c, &e.to_string(), permanent).await
    }

    async fn wait(&self, c: &Claim, secs: u64, reason: &str) -> Result<Outcome, TaskError> {
        let now = self.clock.now_micros();
        let done = sqlx::query(&format!(
            "UPDATE tasks SET state = 'queued', not_before = $4, wait_reason = $5, lease_owner = NULL,
                 lease_until = NULL WHERE {FENCE}"
        ))
        .bind(&c.id)
        .bind(&self.owner)
        .bind(c.attempt)
        .bind(now + secs as i64 * SECOND)
        .bind(reason)
        .execute(self.db.pool())
        .await?;
        Ok(if done.rows_affected() == 1 { Outcome::Waiting { reason: reason.into() } } else { Outcome::Lost })
    }

    async fn fail(&self, c: &Claim, error: &str, permanent: bool) -> Result<Outcome, TaskError> {
        let now = self.clock.now_micros();
        let failures = c.failures + 1;
        if !permanent && failures < self.config.max_failures {
            let backoff = self.config.retry_backoff.as_micros() as i64 * (1 << (failures - 1).min(10));
            let done = sqlx::query(&format!(
                "UPDATE tasks SET state = 'queued', failures = $4, not_before = $5, error = $6, lease_owner = NULL,
                     lease_until = NULL WHERE {FENCE}"
            ))
            .bind(&c.id)
            .bind(&self.owner)
            .bind(c.attempt)
            .bind(failures)
            .bind(now + backoff)
            .bind(error)
            .execute(self.db.pool())
            .await?;
            return Ok(if done.rows_affected() == 1 {
                Outcome::Retrying { error: error.into() }
            } else {
                Outcome::Lost
            });
        }
        let event = TaskFailed { task_id: c.id.clone(), team: c.team.clone(), error: error.into(), failures };
        if self.db.backend() == Backend::Postgres {
            let ended = pg::fail(&self.db, &c.id, &self.owner, c.attempt, event, now).await?;
            return Ok(if ended { Outcome::Failed { error: error.into() } } else { Outcome::Lost });
        }
        let mut tx = self.db.begin().await?;
        let done = sqlx::query(&format!(
            "UPDATE tasks SET state = 'failed', failures = $4, error = $5, finished_at = $6, lease_owner = NULL,
                 lease_until = NULL WHERE {FENCE}"
        ))
        .bind(&c.id)
        .bind(&self.owner)
        .bind(c.attempt)
        .bind(failures)
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Outcome::Lost);
        }
        outbox::emit_typed(&mut tx, self.db.backend(), event, Some(&c.customer_id), now).await?;
        tx.commit().await?;
        Ok(Outcome::Failed { error: error.into() })
    }

    /// Success, its cost, its tier and (pay-per-task) its charge, in one transaction.
    async fn succeed(
        &self,
        c: &Claim,
        team: &j1msky_core::catalogue::Team,
        done: &[StepDone],
        last: Option<&StepRow<'_>>,
    ) -> Result<Outcome, TaskError> {
        if let (Some(step), false) = (last, self.one_trip()) {
            if !self.store_step(c, step).await? {
                return Ok(Outcome::Lost);
            }
        }
        let now = self.clock.now_micros();
        let history: Vec<Done> = done.iter().map(|d| d.done.clone()).collect();
        let cost: i64 = done.iter().map(|d| d.cost).sum();
        let effort = Effort {
            steps: done.len(),
            tokens: done.iter().map(|d| d.tokens).sum(),
            sent_back: pipeline::was_sent_back(team, &history),
            // Every stored step is in `done` (read at the claim, then each one stored
            // under this lease): the model time of the task, not the waits between steps.
            model_micros: done.iter().map(|d| d.latency).sum(),
        };
        let tier = tier::tier(effort);
        let result = pipeline::result(team, &history).unwrap_or_default();
        let event = TaskSucceeded {
            task_id: c.id.clone(),
            team: c.team.clone(),
            steps: i64::try_from(done.len()).unwrap_or(i64::MAX),
            cost_micros: cost,
            tier: Some(tier.into()),
            charge_micros: None,
        };
        if self.db.backend() == Backend::Postgres {
            let price = tier::price(&self.catalogue, tier).micros();
            let (task_id, owner, attempt) = (c.id.as_str(), self.owner.as_str(), c.attempt);
            let last = last.filter(|_| self.one_trip());
            let s = pg::Success { task_id, owner, attempt, result, cost, tier, price, event, last, now };
            return Ok(match pg::succeed(&self.db, s).await? {
                Some(_) => Outcome::Succeeded,
                None => Outcome::Lost,
            });
        }
        // A task admitted as pay-per-task is charged (whatever plan its customer has since:
        // its outputs were withheld until this charge, `submit::withhold_unpaid_work`).
        let charge = c.pay_per_task.then(|| tier::price(&self.catalogue, tier).micros());
        let mut tx = self.db.begin().await?;
        let updated = sqlx::query(&format!(
            "UPDATE tasks SET state = 'succeeded', result = $4, cost_micros = $5, tier = $6, charge_micros = $7,
                 finished_at = $8, lease_owner = NULL, lease_until = NULL, wait_reason = NULL, error = NULL
             WHERE {FENCE}"
        ))
        .bind(&c.id)
        .bind(&self.owner)
        .bind(c.attempt)
        .bind(result)
        .bind(cost)
        .bind(tier)
        .bind(charge)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Outcome::Lost);
        }
        if let Some(amount) = charge {
            crate::charges::insert_for_task(&mut tx, &c.customer_id, &c.id, tier, amount, now).await?;
        }
        let event = TaskSucceeded { charge_micros: charge, ..event };
        outbox::emit_typed(&mut tx, self.db.backend(), event, Some(&c.customer_id), now).await?;
        tx.commit().await?;
        Ok(Outcome::Succeeded)
    }
}

fn claim_from_row(row: &sqlx::any::AnyRow) -> Result<Claim, TaskError> {
    Ok(Claim {
        id: row.try_get(0)?,
        customer_id: row.try_get(1)?,
        team: row.try_get(2)?,
        category: row.try_get(3)?,
        title: row.try_get(4)?,
        prompt: row.try_get(5)?,
        attempt: row.try_get(6)?,
        failures: row.try_get(7)?,
        pay_per_task: row.try_get::<i64, _>(8)? == 1,
    })
}

/// A step stored (read back at the claim, or stored by this run).
struct StepDone {
    done: Done,
    cost: i64,
    tokens: i64,
    /// Its model time (see [`Effort::model_micros`]).
    latency: i64,
}

/// The columns of a stored step.
const STEP_INSERT: &str = "INSERT INTO task_steps (task_id, step, role, model, output, input_tokens, output_tokens,
                 cost_micros, latency_micros, attempt, created_at)";

/// A finished step, to store.
struct StepRow<'a> {
    step: i64,
    role: &'a str,
    output: &'a str,
    completed: &'a j1msky_gateway::Completed,
    latency: i64,
    now: i64,
}

impl StepRow<'_> {
    /// Binds the step's own columns of [`STEP_INSERT`], from `step` to `latency_ms`, in order.
    fn bind<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        let usage = &self.completed.response.usage;
        query
            .bind(self.step)
            .bind(self.role)
            .bind(&self.completed.model)
            .bind(self.output)
            .bind(usage.input_tokens as i64)
            .bind(usage.output_tokens as i64)
            .bind(self.completed.cost.micros())
            .bind(self.latency)
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;
