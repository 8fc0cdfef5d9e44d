//! Customer attributes (`lifecycle_attributes`): set by `set_attribute` steps (and by
//! other parts, e.g. the NPS answer as `nps`), read by `attribute:k=v` conditions.

use sqlx::{AnyConnection, Row};

use crate::LifecycleError;

/// Sets `name` to `value` for the customer inside the caller's transaction.
pub async fn set(
    conn: &mut AnyConnection,
    customer_id: &str,
    name: &str,
    value: &str,
    now: i64,
) -> Result<(), LifecycleError> {
    if !j1msky_core::catalogue::lifecycle::is_template_name(name) {
        return Err(LifecycleError::invalid("name", format!("`{name}` must be letters, digits and `_`")));
    }
    sqlx::query(
        "INSERT INTO lifecycle_attributes (customer_id, name, value, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (customer_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(customer_id)
    .bind(name)
    .bind(value)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The customer's attribute `name`, if set.
pub async fn get(conn: &mut AnyConnection, customer_id: &str, name: &str) -> Result<Option<String>, LifecycleError> {
    let row = sqlx::query("SELECT value FROM lifecycle_attributes WHERE customer_id = $1 AND name = $2")
        .bind(customer_id)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}
