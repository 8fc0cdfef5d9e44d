//! The rate-limit panel: every cap scope with its usage this hour, its cap and where the
//! cap comes from, and today's business budget. Shared by `/admin` and the CLI.

use j1msky_core::catalogue::Catalogue;
use j1msky_core::Money;
use j1msky_db::{Db, DbError};
use serde::Serialize;

use crate::controls::Controls;
use j1msky_core::windows;

/// One capped scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapRow {
    pub scope: String,
    /// What the scope is, for humans (a customer's name, a provider's id).
    pub label: String,
    /// Requests counted in the current clock hour.
    pub used: i64,
    /// The cap in force (`None`: unlimited).
    pub cap: Option<i64>,
    /// The catalogue's cap, before any runtime override.
    pub default: Option<i64>,
    pub overridden: bool,
}

/// Today's business budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayBudget {
    pub day_start: i64,
    pub cap: Money,
    pub default: Money,
    pub spent: Money,
    pub reserved: Money,
    pub overridden: bool,
}

/// The whole panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Panel {
    pub mode: crate::policy::Mode,
    pub mode_set_by: Option<String>,
    pub mode_set_at: Option<i64>,
    pub caps: Vec<CapRow>,
    pub budget: DayBudget,
}

/// Builds the panel from the catalogue, the controls in force and the counters.
pub async fn load(db: &Db, catalogue: &Catalogue, controls: &Controls, now: i64) -> Result<Panel, DbError> {
    let (hour, _) = windows::hour(now);
    let used: Vec<(String, i64)> = sqlx::query_as("SELECT scope, used FROM usage_counters WHERE window_start = $1")
        .bind(hour)
        .fetch_all(db.pool())
        .await?;
    let used: std::collections::HashMap<String, i64> = used.into_iter().collect();
    let mut rows = Vec::new();
    let mut push = |scope: String, label: String, default: Option<i64>| {
        let over = controls.caps.get(&scope).copied();
        rows.push(CapRow {
            used: used.get(&scope).copied().unwrap_or(0),
            cap: over.or(default),
            default,
            overridden: over.is_some(),
            scope,
            label,
        });
    };
    push("global".into(), "all requests".into(), Some(i64::from(catalogue.routing.hourly_request_cap)));
    for (id, p) in &catalogue.providers {
        push(format!("provider:{id}"), format!("provider {id}"), Some(i64::from(p.requests_per_hour)));
    }
    for (id, m) in &catalogue.models {
        push(format!("model:{id}"), format!("{} ({})", m.name, m.provider), None);
    }
    let customers: Vec<(String, String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT id, name, plan, contract_calls_per_hour FROM customers WHERE stage <> 'churned' ORDER BY name, id",
    )
    .fetch_all(db.pool())
    .await?;
    for (id, name, plan, contract) in customers {
        let plan_entry = plan.as_deref().and_then(|p| catalogue.plans.get(p));
        let contract = contract.filter(|_| plan_entry.is_some_and(|p| p.custom_limits));
        let default = contract.or(plan_entry.map(|p| i64::from(p.api_calls_per_hour)));
        let label = format!("{name} ({})", plan.as_deref().unwrap_or("no plan"));
        push(format!("customer:{id}"), label, default);
    }
    let tz: chrono_tz::Tz = catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let (day_start, _) = windows::day(tz, now);
    let (spent, reserved) = crate::limits::budget_state(db, crate::admission::BUSINESS_DAY, day_start).await?;
    let budget = DayBudget {
        day_start,
        cap: controls.daily_budget(catalogue),
        default: catalogue.routing.daily_budget,
        spent,
        reserved,
        overridden: controls.caps.contains_key(crate::controls::DAILY_BUDGET_SCOPE),
    };
    Ok(Panel {
        mode: controls.mode,
        mode_set_by: controls.mode_set_by.clone(),
        mode_set_at: controls.mode_set_at,
        caps: rows,
        budget,
    })
}
