//! Reading Stripe objects in our terms, shared by the event applier, the invoice
//! booking and the webhook store: an event's envelope, a reference's id, the customer of
//! ours an object names, and the plan a price stands for.

use serde_json::Value;
use sqlx::AnyConnection;

use crate::BillingError;

/// The fields of an event envelope we need.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub kind: String,
    pub created: i64,
    pub livemode: bool,
    pub object_id: Option<String>,
}

/// The latest `created` an event may carry: 9999-12-31T23:59:59Z.
pub const MAX_CREATED_SECS: i64 = 253_402_300_799;

/// Reads an event envelope, naming what is missing.
pub fn envelope(v: &Value) -> Result<Envelope, BillingError> {
    let field = |name: &str| BillingError::Malformed(format!("webhook event: `{name}` missing or not the right type"));
    let id = v["id"].as_str().filter(|s| s.starts_with("evt_") && !s.contains('\0')).ok_or_else(|| field("id"))?;
    Ok(Envelope {
        id: id.to_string(),
        // Stripe's types are lowercase words and dots; anything else (a NUL, which
        // PostgreSQL cannot store) is refused here rather than failing the insert.
        kind: v["type"].as_str().filter(|k| is_event_type(k)).ok_or_else(|| field("type"))?.to_string(),
        // Seconds since 1970 up to the year 9999: the version's 12 digits order them, and
        // their micros fit an i64 (a value outside would overflow where it is scaled).
        created: v["created"]
            .as_i64()
            .filter(|c| (0..=MAX_CREATED_SECS).contains(c))
            .ok_or_else(|| field("created"))?,
        livemode: v["livemode"].as_bool().unwrap_or(false),
        object_id: v["data"]["object"]["id"].as_str().filter(|id| !id.contains('\0')).map(String::from),
    })
}

fn is_event_type(kind: &str) -> bool {
    !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

/// Whether `id` has the shape of a Stripe id starting with one of `prefixes` (letters,
/// digits and `_` only): what may go into a URL path of a Stripe call.
pub(crate) fn is_stripe_id(id: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| id.starts_with(p)) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A Stripe reference that may be an id or an expanded object.
pub(crate) fn id_of(v: &Value) -> Option<String> {
    v.as_str().map(String::from).or_else(|| v["id"].as_str().map(String::from))
}

/// Our customer linked to a Stripe customer id.
pub(crate) async fn our_customer(
    conn: &mut AnyConnection,
    stripe_customer: &str,
) -> Result<Option<String>, BillingError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM customers WHERE stripe_customer_id = $1")
        .bind(stripe_customer)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.0))
}

/// The Stripe customer an object names, and ours linked to it (if any yet).
pub(crate) async fn owner(
    conn: &mut AnyConnection,
    obj: &Value,
) -> Result<(Option<String>, Option<String>), BillingError> {
    let Some(sc) = id_of(&obj["customer"]) else { return Ok((None, None)) };
    let ours = our_customer(conn, &sc).await?;
    Ok((Some(sc), ours))
}

/// The plan a Stripe price stands for: its product's (so a price retired by a price
/// change, which lost its lookup key, still names its plan), else its lookup key, else
/// the price id `stripe sync` stored.
pub(crate) async fn plan_of_price(conn: &mut AnyConnection, price: &Value) -> Result<Option<String>, BillingError> {
    if let Some(product) = id_of(&price["product"]) {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT key FROM stripe_objects WHERE stripe_id = $1 AND key LIKE 'product:%'")
                .bind(&product)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some((key,)) = row {
            return Ok(Some(key.trim_start_matches("product:").to_string()));
        }
    }
    if let Some(plan) = price["lookup_key"].as_str().and_then(crate::plan_of_lookup_key) {
        return Ok(Some(plan.to_string()));
    }
    if let Some(plan) = crate::contracts::plan_of_contract_price(price) {
        return Ok(Some(plan.to_string()));
    }
    let Some(id) = id_of(price) else { return Ok(None) };
    let row: Option<(String,)> =
        sqlx::query_as("SELECT key FROM stripe_objects WHERE stripe_id = $1 AND key LIKE 'price:%'")
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(k,)| k.trim_start_matches("price:").to_string()))
}

/// The order of snapshots: later `created` wins, ties broken by event id.
pub fn version(created: i64, event_id: &str) -> String {
    format!("{created:012}:{event_id}")
}
