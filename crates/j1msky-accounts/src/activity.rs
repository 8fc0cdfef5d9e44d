//! Facts about a customer's use the lifecycle playbook reacts to: that they are
//! active, and that their plan refused something. Both are emitted at most once
//! an hour per customer (and per limit), and never fail the request they describe.

use j1msky_core::events::{CustomerActive, LimitHit, Payload};
use j1msky_db::{hourly, Db};

/// Where activity was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A model call or /api/v1 call made with an API key.
    ApiKey,
    /// A task submitted.
    Task,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::ApiKey => "api_key",
            Source::Task => "task",
        }
    }
}

/// Notes that `customer_id` used the product (a `customer.active` event at most hourly).
pub async fn mark_active(db: &Db, customer_id: &str, source: Source, now: i64) {
    let payload = CustomerActive { source: source.as_str().to_string() };
    emit(db, customer_id, None, &payload, now).await;
}

/// Notes that the plan refused `customer_id` something (a `plan.limit_hit` event
/// at most hourly per `limit`: `hourly_cap`, `monthly_budget`, `team_not_in_plan`,
/// `model_not_in_plan`, `tasks_per_month`).
pub async fn limit_hit(db: &Db, customer_id: &str, limit: &str, detail: &str, now: i64) {
    let payload = LimitHit { limit: limit.to_string(), detail: Some(detail.to_string()) };
    emit(db, customer_id, Some("limit"), &payload, now).await;
}

async fn emit<P: Payload>(db: &Db, customer_id: &str, key: Option<&str>, payload: &P, now: i64) {
    // The request goes on either way: a missed mark delays a nudge, a refused call loses a customer.
    if let Err(e) = hourly::emit(db, customer_id, key, payload, now).await {
        tracing::warn!(customer = %customer_id, kind = %P::KIND, error = %e, "could not record the event");
    }
}
