//! Trials the operator grants (not Stripe's checkout trial): a plan to try, an end date
//! and a number of tasks. Starting one moves the customer to stage `trial` on that plan
//! and creates its owner without a usable password: the owner sets one through a
//! one-time link (`tokens`), so no password is ever printed or mailed.

use sqlx::{AnyConnection, Row};

use crate::customers::{self, Customer};
use crate::tokens::{self, Purpose};
use crate::users::{self, NewUser, User};
use crate::{secrets, AccountsError};
use j1msky_audit::{audit, Actor};
use j1msky_core::catalogue::{Catalogue, TeamAllowance};
use j1msky_core::events::CustomerPlanChanged;
use j1msky_core::vocab::{Stage, UserRole};
use j1msky_core::Money;
use j1msky_db::{outbox, Backend, Db};

/// A granted trial.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trial {
    pub customer_id: String,
    pub plan: String,
    pub started_at: i64,
    pub ends_at: i64,
    /// Tasks the trial includes, in all.
    pub tasks: i64,
}

/// When a granted trial started and ends (what admission needs of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialDates {
    pub started_at: i64,
    pub ends_at: i64,
}

impl Trial {
    /// Its dates.
    pub fn dates(&self) -> TrialDates {
        TrialDates { started_at: self.started_at, ends_at: self.ends_at }
    }
}

/// What a customer past its trial's end is told, on every path that refuses it.
pub const ENDED_MESSAGE: &str = "the trial has ended; choose a plan in /app/billing to keep using the service";

const DAY_MICROS: i64 = 86_400_000_000;

/// The most a trial may spend on direct model API calls (`/v1`) over its whole run: its
/// plan's monthly price for the trial's share of a 30-day month, so a trial never costs
/// more in model spend than the plan would have earned over the same days. Tasks are
/// held to the trial's included tasks instead. `None` for an unknown plan.
pub fn direct_call_budget(catalogue: &Catalogue, plan: &str, dates: TrialDates) -> Option<Money> {
    let price = i128::from(catalogue.plans.get(plan)?.monthly_price.micros());
    let length = i128::from(dates.ends_at.saturating_sub(dates.started_at).max(0));
    let share = price.saturating_mul(length) / (30 * i128::from(DAY_MICROS));
    Some(Money::from_micros(i64::try_from(share).unwrap_or(i64::MAX)))
}

/// What it takes to start a trial.
#[derive(Debug, Clone)]
pub struct NewTrial {
    pub plan: String,
    pub days: i64,
    pub tasks: i64,
    pub owner_email: String,
    pub owner_name: String,
}

/// A started trial: the customer as it is now, its owner and the set-password token.
#[derive(Debug, Clone)]
pub struct Started {
    pub customer: Customer,
    pub owner: User,
    pub token: String,
    pub trial: Trial,
}

/// The trial of a customer, if one was granted.
pub async fn get(db: &Db, customer_id: &str) -> Result<Option<Trial>, AccountsError> {
    let row = sqlx::query("SELECT plan, started_at, ends_at, tasks FROM account_trials WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| {
        Ok(Trial {
            customer_id: customer_id.to_string(),
            plan: r.try_get(0)?,
            started_at: r.try_get(1)?,
            ends_at: r.try_get(2)?,
            tasks: r.try_get(3)?,
        })
    })
    .transpose()
}

/// A trial granted to another customer reaching the same mailbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EarlierTrial {
    pub customer_id: String,
    pub name: String,
    pub contact_email: String,
    pub started_at: i64,
}

/// Trials granted to other customers than `except` whose contact address reaches the
/// mailbox `email` reaches ([`crate::Email::mailbox`]: `ann+2@…` is `ann@…`), oldest
/// first: the operator sees them before granting another. Granted trials are few (the
/// operator grants each), so they are read whole and compared here.
pub async fn earlier_for_mailbox(db: &Db, email: &str, except: &str) -> Result<Vec<EarlierTrial>, AccountsError> {
    let Ok(wanted) = crate::Email::parse(email).map(|e| e.mailbox()) else { return Ok(Vec::new()) };
    let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT c.id, c.name, c.contact_email, t.started_at FROM account_trials t JOIN customers c ON c.id = t.customer_id
         WHERE c.id <> $1 ORDER BY t.started_at, c.id",
    )
    .bind(except)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(customer_id, name, contact, started_at)| {
            let contact = contact?;
            let same = crate::Email::parse(&contact).is_ok_and(|e| e.mailbox() == wanted);
            same.then_some(EarlierTrial { customer_id, name, contact_email: contact, started_at })
        })
        .collect())
}

/// Inside the caller's transaction: how many granted trials are running (their
/// customer still in stage `trial`). On PostgreSQL the trials table is locked until
/// the transaction ends, so two starts cannot both take the last pilot slot.
pub async fn running_in(conn: &mut AnyConnection, backend: Backend) -> Result<i64, AccountsError> {
    if backend == Backend::Postgres {
        sqlx::query("LOCK TABLE account_trials IN SHARE ROW EXCLUSIVE MODE").execute(&mut *conn).await?;
    }
    count_running(conn).await
}

async fn count_running(conn: &mut AnyConnection) -> Result<i64, AccountsError> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM account_trials t JOIN customers c ON c.id = t.customer_id WHERE c.stage = 'trial'",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(n)
}

/// How many granted trials are running, for display.
pub async fn running(db: &Db) -> Result<i64, AccountsError> {
    let mut conn = db.pool().acquire().await?;
    count_running(&mut conn).await
}

/// Checks a trial's terms against the catalogue.
pub fn check(catalogue: &Catalogue, t: &NewTrial) -> Result<(), AccountsError> {
    customers::check_plan(catalogue, Some(&t.plan), &[])?;
    if t.plan == catalogue.pause_plan {
        return Err(AccountsError::invalid("plan", "the pause plan cannot be tried"));
    }
    if !(1..=90).contains(&t.days) {
        return Err(AccountsError::invalid("days", "a trial lasts 1 to 90 days"));
    }
    if !(1..=10_000).contains(&t.tasks) {
        return Err(AccountsError::invalid("tasks", "a trial includes 1 to 10000 tasks"));
    }
    Ok(())
}

/// Inside the caller's transaction: starts a trial for a customer in stage `lead` or
/// `qualified` (anything else is a conflict): the plan is set, the stage moves to
/// `trial`, the owner is created and a set-password link issued.
pub async fn start_in(
    conn: &mut AnyConnection,
    backend: Backend,
    catalogue: &Catalogue,
    actor: &Actor,
    customer_id: &str,
    t: &NewTrial,
    now: i64,
) -> Result<Started, AccountsError> {
    check(catalogue, t)?;
    let lock = if backend == Backend::Postgres { " FOR UPDATE" } else { "" };
    sqlx::query(&format!("SELECT id FROM customers WHERE id = $1{lock}")).bind(customer_id).execute(&mut *conn).await?;
    let customer = customers::get_in(conn, customer_id).await?;
    if !matches!(customer.stage, Stage::Lead | Stage::Qualified) {
        return Err(AccountsError::Conflict(format!(
            "a trial starts from stage lead or qualified; {} is in stage {}",
            customer.name, customer.stage
        )));
    }
    // The owner can never sign in with this password: nobody ever sees it.
    let new = NewUser {
        email: t.owner_email.clone(),
        display_name: t.owner_name.clone(),
        password: secrets::random_token(),
        role: UserRole::Owner,
        customer_id: Some(customer_id.to_string()),
    };
    let owner = users::insert(conn, backend, actor, users::prepare(new, now)?, now).await?;
    let token = tokens::issue(conn, &owner.id, Purpose::SetPassword, tokens::INVITE_TTL, now).await?;
    let ends_at = now.saturating_add(t.days.saturating_mul(DAY_MICROS));
    let inserted = sqlx::query(
        "INSERT INTO account_trials (customer_id, plan, started_at, ends_at, tasks, granted_by)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(customer_id)
    .bind(&t.plan)
    .bind(now)
    .bind(ends_at)
    .bind(t.tasks)
    .bind(actor.as_str())
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() != 1 {
        return Err(AccountsError::Conflict(format!("{} already had a trial", customer.name)));
    }
    // A plan with chosen teams starts with the team of the lead's use case, so the
    // trial can be used at once; the owner may change the choice later.
    let teams_to_choose = matches!(catalogue.plans[&t.plan].teams, TeamAllowance::Choose(n) if n >= 1);
    let use_case_team = customer.use_case.map(|u| u.as_str().to_string()).filter(|u| catalogue.teams.contains_key(u));
    let chosen = match (teams_to_choose && customer.chosen_teams.is_empty(), use_case_team) {
        (true, Some(team)) => vec![team],
        _ => customer.chosen_teams.clone(),
    };
    if chosen != customer.chosen_teams {
        sqlx::query("UPDATE customers SET chosen_teams = $1, updated_at = $2 WHERE id = $3")
            .bind(serde_json::to_string(&chosen).unwrap_or_else(|_| "[]".into()))
            .bind(now)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    }
    if customer.plan.as_deref() != Some(t.plan.as_str()) {
        sqlx::query("UPDATE customers SET plan = $1, updated_at = $2, plan_since = COALESCE(plan_since, CASE WHEN plan IS NULL THEN $2 END) WHERE id = $3")
            .bind(&t.plan)
            .bind(now)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
        let event = CustomerPlanChanged { from: customer.plan.clone(), to: t.plan.clone() };
        outbox::emit_typed(conn, backend, event, Some(customer_id), now).await?;
    }
    customers::change_stage(conn, backend, actor, customer_id, customer.stage, Stage::Trial, now).await?;
    let trial =
        Trial { customer_id: customer_id.to_string(), plan: t.plan.clone(), started_at: now, ends_at, tasks: t.tasks };
    let detail = serde_json::to_value(&trial).unwrap_or_default();
    audit::record(conn, actor, "customer.trial_started", customer_id, Some(customer_id), detail, now).await?;
    let customer = Customer {
        stage: Stage::Trial,
        plan: Some(t.plan.clone()),
        chosen_teams: chosen,
        stage_changed_at: now,
        updated_at: now,
        ..customer
    };
    Ok(Started { customer, owner, token, trial })
}

/// Inside the caller's transaction: a member invited to `customer_id` by its owner,
/// created without a usable password, with an invite link (the token).
pub async fn invite_member_in(
    conn: &mut AnyConnection,
    backend: Backend,
    actor: &Actor,
    customer_id: &str,
    email: &str,
    display_name: &str,
    now: i64,
) -> Result<(User, String), AccountsError> {
    let new = NewUser {
        email: email.to_string(),
        display_name: display_name.to_string(),
        password: secrets::random_token(),
        role: UserRole::Member,
        customer_id: Some(customer_id.to_string()),
    };
    let member = users::insert(conn, backend, actor, users::prepare(new, now)?, now).await?;
    let token = tokens::issue(conn, &member.id, Purpose::Invite, tokens::INVITE_TTL, now).await?;
    Ok((member, token))
}

/// The trials running or ended, with their customers' stages: for the admin list.
pub async fn list(db: &Db, limit: i64) -> Result<Vec<(Trial, Stage)>, AccountsError> {
    let rows = sqlx::query(
        "SELECT t.customer_id, t.plan, t.started_at, t.ends_at, t.tasks, c.stage FROM account_trials t
         JOIN customers c ON c.id = t.customer_id ORDER BY t.started_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let stage: String = r.try_get(5)?;
            Ok((
                Trial {
                    customer_id: r.try_get(0)?,
                    plan: r.try_get(1)?,
                    started_at: r.try_get(2)?,
                    ends_at: r.try_get(3)?,
                    tasks: r.try_get(4)?,
                },
                stage.parse().map_err(|e: j1msky_core::vocab::UnknownWord| AccountsError::Internal(e.to_string()))?,
            ))
        })
        .collect()
}

/// Inside the caller's transaction: ends the trial of a customer whose trial's end has
/// come and who is still in stage `trial` (nothing converted it or closed it): the stage
/// moves to `churned` (the stage the model gives an account with nothing paid for, as a
/// Stripe trial that ends unpaid is cancelled), with its history row, audit and event,
/// which also frees its pilot slot. `None`, writing nothing, for any other customer:
/// converted, cancelled, ended already, or not yet due.
pub async fn end_in(
    conn: &mut AnyConnection,
    backend: Backend,
    actor: &Actor,
    customer_id: &str,
    now: i64,
) -> Result<Option<(Customer, Trial)>, AccountsError> {
    let lock = if backend == Backend::Postgres { " FOR UPDATE" } else { "" };
    sqlx::query(&format!("SELECT id FROM customers WHERE id = $1{lock}")).bind(customer_id).execute(&mut *conn).await?;
    let row = sqlx::query("SELECT plan, started_at, ends_at, tasks FROM account_trials WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let trial = Trial {
        customer_id: customer_id.to_string(),
        plan: r.try_get(0)?,
        started_at: r.try_get(1)?,
        ends_at: r.try_get(2)?,
        tasks: r.try_get(3)?,
    };
    let customer = customers::get_in(conn, customer_id).await?;
    if customer.stage != Stage::Trial || now < trial.ends_at {
        return Ok(None);
    }
    customers::change_stage(conn, backend, actor, customer_id, Stage::Trial, Stage::Churned, now).await?;
    let detail = serde_json::to_value(&trial).unwrap_or_default();
    audit::record(conn, actor, "customer.trial_ended", customer_id, Some(customer_id), detail, now).await?;
    let customer = Customer { stage: Stage::Churned, stage_changed_at: now, updated_at: now, ..customer };
    Ok(Some((customer, trial)))
}

/// The trials whose customers are still in stage `trial`, soonest end first.
pub async fn running_list(db: &Db) -> Result<Vec<Trial>, AccountsError> {
    let rows = sqlx::query(
        "SELECT t.customer_id, t.plan, t.started_at, t.ends_at, t.tasks FROM account_trials t
         JOIN customers c ON c.id = t.customer_id WHERE c.stage = 'trial' ORDER BY t.ends_at, t.customer_id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Trial {
                customer_id: r.try_get(0)?,
                plan: r.try_get(1)?,
                started_at: r.try_get(2)?,
                ends_at: r.try_get(3)?,
                tasks: r.try_get(4)?,
            })
        })
        .collect()
}
