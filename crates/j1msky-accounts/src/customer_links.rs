//! The customer columns other domains decide but accounts owns: the Stripe link, the
//! monthly spending budget, and the row lock others serialise on. Billing and the
//! gateway call these instead of writing `customers` themselves.

use sqlx::AnyConnection;

use crate::AccountsError;
use j1msky_audit::{audit, settings, Actor};
use j1msky_db::{outbox, Db};

/// Links Stripe customer `stripe_customer` to ours unless ours is linked to another one;
/// true when ours is (now) linked to it.
pub async fn link_stripe(
    conn: &mut AnyConnection,
    customer_id: &str,
    stripe_customer: &str,
    now: i64,
) -> Result<bool, AccountsError> {
    let done = sqlx::query(
        "UPDATE customers SET stripe_customer_id = $1, updated_at = $2
         WHERE id = $3 AND (stripe_customer_id IS NULL OR stripe_customer_id = $1)",
    )
    .bind(stripe_customer)
    .bind(now)
    .bind(customer_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Drops every customer's Stripe link (the database is being pointed at another Stripe
/// account).
pub async fn unlink_all_stripe(conn: &mut AnyConnection) -> Result<(), AccountsError> {
    sqlx::query("UPDATE customers SET stripe_customer_id = NULL WHERE stripe_customer_id IS NOT NULL")
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the customer's row lock until the caller's transaction ends, so concurrent
/// checks for the same customer queue (PostgreSQL; SQLite's BEGIN IMMEDIATE already
/// serialises).
pub async fn lock(conn: &mut AnyConnection, customer_id: &str) -> Result<(), AccountsError> {
    sqlx::query("UPDATE customers SET updated_at = updated_at WHERE id = $1").bind(customer_id).execute(conn).await?;
    Ok(())
}

/// The history key of customer `customer_id`'s monthly budget (its changes sit with the
/// operator settings' in `settings_history`, amounts as `$50.00`).
pub fn budget_history_key(customer_id: &str) -> String {
    format!("{BUDGET_HISTORY_PREFIX}{customer_id}")
}

/// Where customer budgets' history keys start.
pub const BUDGET_HISTORY_PREFIX: &str = "customer.monthly_budget.";

/// Sets (or with `None` removes) a customer's monthly spending budget, audited, announced
/// and kept in the settings history with the old amount and `reason`. The rules (above
/// zero, a reason) are checked here so every path refuses alike.
pub async fn set_monthly_budget(
    db: &Db,
    actor: &Actor,
    customer_id: &str,
    budget: Option<j1msky_core::Money>,
    reason: &str,
    now: i64,
) -> Result<(), AccountsError> {
    if budget.is_some_and(|m| m.micros() <= 0) {
        return Err(AccountsError::invalid(
            "monthly_budget",
            "a monthly budget must be above zero (use `none` to remove it)",
        ));
    }
    let reason = settings::check_reason(reason).map_err(|m| AccountsError::invalid("reason", m))?;
    let mut tx = db.begin().await?;
    // Taken under the row's write lock (the UPDATE below is first on PostgreSQL), so the
    // old amount kept in the history is the one this change replaced.
    lock(&mut tx, customer_id).await?;
    let previous: Option<(Option<i64>,)> = sqlx::query_as("SELECT monthly_budget_micros FROM customers WHERE id = $1")
        .bind(customer_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((previous,)) = previous else { return Err(AccountsError::NotFound("customer")) };
    sqlx::query("UPDATE customers SET monthly_budget_micros = $1, updated_at = $2 WHERE id = $3")
        .bind(budget.map(|m| m.micros()))
        .bind(now)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
    let shown = |m: Option<i64>| m.map(|m| j1msky_core::Money::from_micros(m).to_string());
    let (old, new) = (shown(previous), shown(budget.map(|m| m.micros())));
    let key = budget_history_key(customer_id);
    settings::record(&mut tx, actor, &key, old.as_deref(), new.as_deref(), reason, now).await?;
    let detail = serde_json::json!({"monthly_budget": budget, "reason": reason});
    audit::record(&mut tx, actor, "customer.budget_changed", customer_id, Some(customer_id), detail, now).await?;
    let event = j1msky_core::events::CustomerBudgetChanged { monthly_budget: budget };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(customer_id), now).await?;
    tx.commit().await?;
    Ok(())
}
