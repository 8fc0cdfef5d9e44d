//! Accounts' reactions to other domains' events. `accounts.subscription_state` applies
//! the plan, stage and payment standing that billing derived from a customer's Stripe
//! subscriptions (`customer.subscription_state`): billing records its facts, accounts
//! alone writes the customer.

use j1msky_core::vocab::Stage;
use j1msky_db::consumers::{self, Consumer, Handled, Handler, OnFailure, Runner};
use j1msky_db::outbox::{self, Event};
use j1msky_db::{AnyConnection, Backend, Db, DbError};
use sqlx::Row;

use crate::{access, customers, AccountsError};
use j1msky_audit::Actor;
use j1msky_core::events::{CustomerPlanChanged, CustomerSubscriptionState, Kind};

/// The consumer's name (its cursor row).
pub const SUBSCRIPTION_STATE: &str = "accounts.subscription_state";
/// The event billing emits each time it settles a customer's subscriptions.
pub const SUBSCRIPTION_STATE_KIND: Kind = Kind::CustomerSubscriptionState;

/// The actor Stripe-driven changes are recorded under.
fn stripe() -> Actor {
    Actor("stripe".into())
}

/// Every consumer accounts runs.
pub fn consumers() -> Vec<Consumer> {
    // Blocking: a customer's states must apply in order, the last one winning.
    vec![Consumer::new(SUBSCRIPTION_STATE, &[SUBSCRIPTION_STATE_KIND], OnFailure::Block, SubscriptionState)]
}

/// Runs accounts' consumers until they are caught up (the CLI, and tests that apply
/// Stripe events without the background runner); returns the events handled.
pub async fn catch_up(db: &Db, clock: &dyn j1msky_core::Clock) -> Result<usize, DbError> {
    let runner = Runner::for_this_process();
    let all = consumers();
    let mut handled = 0;
    loop {
        let p = consumers::run_once(db, &runner, &all, clock).await?;
        handled += p.handled;
        if p.handled + p.passed == 0 {
            return Ok(handled);
        }
    }
}

struct SubscriptionState;

impl Handler for SubscriptionState {
    fn handle<'a>(&'a self, conn: &'a mut AnyConnection, backend: Backend, event: &'a Event, now: i64) -> Handled<'a> {
        Box::pin(async move { Ok(apply_state(conn, backend, event, now).await?) })
    }
}

async fn apply_state(conn: &mut AnyConnection, backend: Backend, event: &Event, now: i64) -> Result<(), AccountsError> {
    let where_ = || format!("event {} ({})", event.seq, event.kind);
    let customer_id = event
        .customer_id
        .as_deref()
        .ok_or_else(|| AccountsError::invalid("customer_id", format!("{}: no customer", where_())))?;
    let state: CustomerSubscriptionState = j1msky_core::events::decode(&event.kind, &event.payload)
        .and_then(|d| d.payload_as())
        .map_err(|e| AccountsError::invalid("payload", format!("{}: {e}", where_())))?;
    let lock = if backend == Backend::Postgres { " FOR UPDATE" } else { "" };
    let row = sqlx::query(&format!("SELECT stage, plan, stage_changed_at FROM customers WHERE id = $1{lock}"))
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?;
    // A customer deleted since: nothing left to apply it to.
    let Some(row) = row else { return Ok(()) };
    let current: String = row.try_get(0)?;
    let current: Stage =
        current.parse().map_err(|e| AccountsError::Internal(format!("stored stage of {customer_id}: {e}")))?;
    let current_plan: Option<String> = row.try_get(1)?;
    // Never dated before the stage it replaces (events of two subscriptions out of order).
    let at = state.at.max(row.try_get::<i64, _>(2)?);
    if let Some(plan) = state.plan.filter(|p| current_plan.as_deref() != Some(p.as_str())) {
        sqlx::query("UPDATE customers SET plan = $1, updated_at = $2, plan_since = COALESCE(plan_since, CASE WHEN plan IS NULL THEN $2 END) WHERE id = $3")
            .bind(&plan)
            .bind(now)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
        let event = CustomerPlanChanged { from: current_plan, to: plan };
        outbox::emit_typed(conn, backend, event, Some(customer_id), now).await?;
    }
    if let Some(stage) = state.stage {
        let stage: Stage =
            stage.parse().map_err(|e| AccountsError::invalid("payload.stage", format!("{}: {e}", where_())))?;
        customers::change_stage_at(conn, backend, &stripe(), customer_id, current, stage, at, now).await?;
    }
    access::set_billing_status(conn, backend, &stripe(), customer_id, state.billing_status.as_deref(), now).await?;
    // The Checkout trial's window (the gateway's trial budget), cleared once it is over.
    // And the paid period (the gateway holds the plan's monthly budget to it as well).
    sqlx::query(
        "UPDATE customers SET stripe_trial_started_at = $1, stripe_trial_ends_at = $2,
             paid_period_start = $3, paid_period_end = $4, paid_period_budget_micros = $5 WHERE id = $6",
    )
    .bind(state.trial.map(|t| t.started_at))
    .bind(state.trial.map(|t| t.ends_at))
    .bind(state.period.map(|p| p.started_at))
    .bind(state.period.map(|p| p.ends_at))
    .bind(state.period.and(state.period_budget_micros))
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
