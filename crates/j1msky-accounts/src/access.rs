//! Whether a customer may use the service now: the one rule the model gateway, the task
//! queue and the task workers all ask, and the billing facts it reads (a failed payment
//! and since when, a payment method on file), which only this crate writes.

use j1msky_core::events::{CustomerAccessRestricted, CustomerBillingStatusChanged, CustomerPaymentMethodChanged};
use sqlx::AnyConnection;

use crate::customers::Customer;
use crate::AccountsError;
use j1msky_audit::{audit, Actor};
use j1msky_core::catalogue::Catalogue;
use j1msky_core::vocab::Stage;
use j1msky_db::{outbox, Backend, Db};

const DAY_MICROS: i64 = 86_400_000_000;

/// The facts admission is decided on (a few columns of the customer's row, so the
/// gateway can keep them in its short per-customer cache).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub stage: Option<Stage>,
    pub plan: Option<String>,
    pub billing_status: Option<String>,
    pub billing_status_since: Option<i64>,
    pub payment_method_on_file: bool,
    /// The dates of the trial the operator granted, if any: admission refuses a customer
    /// still in stage `trial` once its end has come, before the end timer moves it on.
    pub trial: Option<crate::trials::TrialDates>,
    /// Since when a disputed payment keeps the customer out (see [`set_disputed`]).
    pub disputed_since: Option<i64>,
}

impl Standing {
    /// A stored customer's standing (without its trial's dates: the task queue reads
    /// the trial itself, with its included tasks).
    pub fn of(c: &Customer) -> Standing {
        Standing {
            stage: Some(c.stage),
            plan: c.plan.clone(),
            billing_status: c.billing_status.clone(),
            billing_status_since: c.billing_status_since,
            payment_method_on_file: c.payment_method_on_file,
            trial: None,
            disputed_since: c.disputed_since,
        }
    }
}

/// What an admitted customer's use is measured against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// This plan's limits (the pause plan's while paused).
    Plan(String),
    /// No plan: every call and task is billed by the unit.
    PayPerTask,
}

impl Admitted {
    /// The plan whose limits apply, if any.
    pub fn plan(&self) -> Option<&str> {
        match self {
            Admitted::Plan(p) => Some(p),
            Admitted::PayPerTask => None,
        }
    }
}

/// Refused: the customer may not use the service now; the message says why and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoActivePlan(pub String);

/// When a `past_due` customer's grace period ends.
pub fn grace_until(catalogue: &Catalogue, s: &Standing) -> Option<i64> {
    match (s.billing_status.as_deref(), s.billing_status_since) {
        (Some("past_due"), Some(since)) => {
            Some(since.saturating_add(i64::from(catalogue.stripe.past_due_grace_days).saturating_mul(DAY_MICROS)))
        }
        _ => None,
    }
}

/// Decides whether a customer may use the service at `now`.
pub fn admit(catalogue: &Catalogue, s: &Standing, now: i64) -> Result<Admitted, NoActivePlan> {
    if s.disputed_since.is_some() {
        return Err(NoActivePlan(DISPUTED_MESSAGE.into()));
    }
    match s.billing_status.as_deref() {
        Some("unpaid") => {
            return Err(NoActivePlan(
                "the latest invoice is unpaid and the account is restricted; pay it or update the payment \
                 method in /app/billing to use the service again"
                    .into(),
            ))
        }
        Some("past_due") if grace_until(catalogue, s).is_none_or(|end| now >= end) => {
            return Err(NoActivePlan(format!(
                "a payment failed and the {}-day grace period has ended; update the payment method in \
                 /app/billing to use the service again",
                catalogue.stripe.past_due_grace_days
            )))
        }
        _ => {}
    }
    if let (Some(Stage::Trial), Some(t)) = (s.stage, s.trial) {
        if now >= t.ends_at {
            return Err(NoActivePlan(crate::trials::ENDED_MESSAGE.into()));
        }
    }
    let known_plan = s.plan.as_deref().filter(|p| catalogue.plans.contains_key(*p));
    match (s.stage, known_plan) {
        (Some(Stage::Churned), _) => {
            Err(NoActivePlan("the account is closed; subscribe to a plan again to use the service".into()))
        }
        (Some(Stage::Paused), _) => Ok(Admitted::Plan(catalogue.pause_plan.clone())),
        (Some(Stage::Trial | Stage::Active), Some(plan)) => Ok(Admitted::Plan(plan.to_string())),
        (_, None) if s.plan.is_none() && s.payment_method_on_file => Ok(Admitted::PayPerTask),
        (stage, _) => Err(NoActivePlan(format!(
            "no active plan: a customer in stage `{}` needs a subscription, a trial, or a payment method on \
             file for pay-per-task, to use the service",
            stage.map_or("unknown", Stage::as_str)
        ))),
    }
}

/// Why a customer with a disputed payment is refused, and what to do.
pub const DISPUTED_MESSAGE: &str = "a payment of this account is disputed with the card issuer, so the service is \
     paused until the dispute is settled; contact us (reply to any of our emails) to settle it";

/// Inside the caller's transaction: whether a disputed payment keeps the customer from the
/// service (`Some(since)`) or not (`None`), as billing decides from the customer's
/// disputes; audited when it changes. Returns whether it changed.
pub async fn set_disputed(
    conn: &mut AnyConnection,
    actor: &Actor,
    customer_id: &str,
    since: Option<i64>,
    now: i64,
) -> Result<bool, AccountsError> {
    let row: Option<(Option<i64>,)> = sqlx::query_as("SELECT disputed_since FROM customers WHERE id = $1")
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((current,)) = row else { return Err(AccountsError::NotFound("customer")) };
    if current.is_some() == since.is_some() {
        return Ok(false);
    }
    sqlx::query("UPDATE customers SET disputed_since = $1, updated_at = $2 WHERE id = $3")
        .bind(since)
        .bind(now)
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    let action = if since.is_some() { "customer.access_disputed" } else { "customer.access_undisputed" };
    let detail = serde_json::json!({"from": current, "to": since});
    audit::record(conn, actor, action, customer_id, Some(customer_id), detail, now).await?;
    Ok(true)
}

/// Inside the caller's transaction: records the customer's payment standing as Stripe
/// reports it (`past_due`, `unpaid`, or `None` when paid up), with a
/// `customer.billing_status_changed` event. Returns whether it changed.
pub async fn set_billing_status(
    conn: &mut AnyConnection,
    backend: Backend,
    actor: &Actor,
    customer_id: &str,
    status: Option<&str>,
    now: i64,
) -> Result<bool, AccountsError> {
    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT billing_status FROM customers WHERE id = $1")
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((current,)) = row else { return Err(AccountsError::NotFound("customer")) };
    if current.as_deref() == status {
        return Ok(false);
    }
    // The grace period runs from the first failure: past_due after unpaid does not restart it.
    let keep_since = current.is_some() && status.is_some();
    sqlx::query(
        "UPDATE customers SET billing_status = $1,
             billing_status_since = CASE WHEN $2 = 1 THEN billing_status_since ELSE $3 END,
             access_restricted_at = CASE WHEN $1 IS NULL THEN NULL ELSE access_restricted_at END,
             updated_at = $4
         WHERE id = $5",
    )
    .bind(status)
    .bind(i64::from(keep_since))
    .bind(status.map(|_| now))
    .bind(now)
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    let event = CustomerBillingStatusChanged { from: current.clone(), to: status.map(String::from) };
    let detail = serde_json::to_value(&event).map_err(|e| AccountsError::Internal(e.to_string()))?;
    audit::record(conn, actor, "customer.billing_status_changed", customer_id, Some(customer_id), detail, now).await?;
    outbox::emit_typed(conn, backend, event, Some(customer_id), now).await?;
    Ok(true)
}

/// Inside the caller's transaction: whether Stripe holds a default payment method for
/// the customer, with a `customer.payment_method_changed` event when it changes.
pub async fn set_payment_method(
    conn: &mut AnyConnection,
    backend: Backend,
    customer_id: &str,
    on_file: bool,
    now: i64,
) -> Result<bool, AccountsError> {
    let changed = sqlx::query(
        "UPDATE customers SET payment_method_on_file = $1, updated_at = $2 WHERE id = $3 AND payment_method_on_file <> $1",
    )
    .bind(i64::from(on_file))
    .bind(now)
    .bind(customer_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if changed {
        let event = CustomerPaymentMethodChanged { on_file };
        outbox::emit_typed(conn, backend, event, Some(customer_id), now).await?;
    }
    Ok(changed)
}

/// Announces, once each, the customers whose grace period ended at or before `now`:
/// a `customer.access_restricted` event (their calls were already refused by [`admit`]).
/// Returns how many were announced.
pub async fn restrict_overdue(db: &Db, catalogue: &Catalogue, now: i64) -> Result<usize, AccountsError> {
    let grace = i64::from(catalogue.stripe.past_due_grace_days).saturating_mul(DAY_MICROS);
    let due: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT id, billing_status, billing_status_since FROM customers
         WHERE billing_status IS NOT NULL AND access_restricted_at IS NULL AND billing_status_since IS NOT NULL
           AND (billing_status = 'unpaid' OR billing_status_since <= $1)
         ORDER BY id LIMIT 500",
    )
    .bind(now.saturating_sub(grace))
    .fetch_all(db.pool())
    .await?;
    let mut announced = 0;
    for (id, status, since) in due {
        let mut tx = db.begin().await?;
        // Claimed by the update, so two job runners announce a customer once.
        let claimed = sqlx::query(
            "UPDATE customers SET access_restricted_at = $1 WHERE id = $2 AND access_restricted_at IS NULL
               AND billing_status = $3",
        )
        .bind(now)
        .bind(&id)
        .bind(&status)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 1 {
            let event = CustomerAccessRestricted { billing_status: status, since };
            outbox::emit_typed(&mut tx, db.backend(), event, Some(&id), now).await?;
            tx.commit().await?;
            announced += 1;
        }
    }
    Ok(announced)
}
