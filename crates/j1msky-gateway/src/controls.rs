//! Runtime controls, persisted in `settings` and audited: the cost mode and cap
//! overrides (the rate-limit panel). Read through a short cache so the hot path does
//! not query them on every request; other processes see a change within `CACHE_TTL`.

use j1msky_core::events::Kind;
use std::collections::BTreeMap;
use std::sync::Mutex;

use j1msky_accounts::{audit, customers, AccountsError, Actor};
use j1msky_core::catalogue::Catalogue;
use j1msky_core::clock::SECOND;
use j1msky_db::{outbox, Db, DbError};

use crate::policy::Mode;
use crate::GatewayError;

/// How long a process trusts its copy of the controls.
pub const CACHE_TTL: i64 = SECOND;

const MODE_KEY: &str = "gateway.mode";
const CAP_PREFIX: &str = "gateway.cap.";

/// The override of the business's daily budget lives among the caps, in micro-USD.
pub const DAILY_BUDGET_SCOPE: &str = "budget:daily";

/// The controls in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    pub mode: Mode,
    /// Who set the mode (`system` when the budget escalated it).
    pub mode_set_by: Option<String>,
    pub mode_set_at: Option<i64>,
    /// Cap overrides by scope (`global`, `provider:…`, `model:…`, `customer:…`).
    pub caps: BTreeMap<String, i64>,
}

/// Loads the controls from the database.
pub async fn load(db: &Db) -> Result<Controls, DbError> {
    let rows: Vec<(String, String, i64, String)> =
        sqlx::query_as("SELECT key, value, updated_at, updated_by FROM settings WHERE key LIKE 'gateway.%'")
            .fetch_all(db.pool())
            .await?;
    let mut c = Controls::default();
    for (key, value, at, by) in rows {
        if key == MODE_KEY {
            c.mode = value.parse().unwrap_or_default();
            c.mode_set_by = Some(by);
            c.mode_set_at = Some(at);
        } else if let Some(scope) = key.strip_prefix(CAP_PREFIX) {
            if let Ok(n) = value.parse() {
                c.caps.insert(scope.to_string(), n);
            }
        }
    }
    Ok(c)
}

async fn put(
    db: &Db,
    actor: &Actor,
    key: &str,
    value: Option<String>,
    now: i64,
    event: serde_json::Value,
) -> Result<(), GatewayError> {
    let mut tx = db.begin().await?;
    match &value {
        Some(v) => {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at, updated_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
                 updated_by = excluded.updated_by",
            )
            .bind(key)
            .bind(v)
            .bind(now)
            .bind(actor.as_str())
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM settings WHERE key = $1").bind(key).execute(&mut *tx).await?;
        }
    }
    let kind = if key == MODE_KEY { Kind::GatewayModeChanged } else { Kind::GatewayCapChanged };
    audit::record(&mut tx, actor, kind.as_str(), key, None, event.clone(), now).await?;
    outbox::emit(&mut tx, db.backend(), kind, None, &event, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Switches the cost mode, audited and announced as an event.
pub async fn set_mode(db: &Db, actor: &Actor, mode: Mode, reason: &str, now: i64) -> Result<(), GatewayError> {
    let event = serde_json::json!({"mode": mode, "reason": reason});
    put(db, actor, MODE_KEY, Some(mode.as_str().to_string()), now, event).await
}

/// Sets (or with `None` goes back to the catalogue's) the business's daily budget.
pub async fn set_daily_budget(
    db: &Db,
    actor: &Actor,
    budget: Option<j1msky_core::Money>,
    now: i64,
) -> Result<(), GatewayError> {
    put_cap(db, actor, DAILY_BUDGET_SCOPE, budget.map(|m| m.micros()), now).await
}

/// Sets (or with `None` removes) the hourly cap override of a scope. Only a scope that
/// exists can get a cap: a typo would otherwise be stored, shown as a cap, and limit
/// nothing. Removing is allowed for any well-formed scope, so an override left behind
/// by a model or customer that is gone can still be cleared.
pub async fn set_cap(
    db: &Db,
    catalogue: &Catalogue,
    actor: &Actor,
    scope: &str,
    cap: Option<i64>,
    now: i64,
) -> Result<(), GatewayError> {
    check_scope(scope).map_err(GatewayError::Invalid)?;
    if cap.is_some_and(|n| n < 0) {
        return Err(GatewayError::Invalid("a cap cannot be negative".into()));
    }
    if cap.is_some() {
        check_exists(db, catalogue, scope).await?;
    }
    put_cap(db, actor, scope, cap, now).await
}

async fn put_cap(db: &Db, actor: &Actor, scope: &str, cap: Option<i64>, now: i64) -> Result<(), GatewayError> {
    let event = serde_json::json!({"scope": scope, "cap": cap});
    put(db, actor, &format!("{CAP_PREFIX}{scope}"), cap.map(|n| n.to_string()), now, event).await
}

/// Refuses a scope that names no provider or model of the catalogue, or no customer.
async fn check_exists(db: &Db, catalogue: &Catalogue, scope: &str) -> Result<(), GatewayError> {
    let missing = |what: &str, id: &str, known: Vec<&String>| {
        let known: Vec<&str> = known.into_iter().map(String::as_str).collect();
        GatewayError::Invalid(format!("`{scope}`: there is no {what} `{id}`; {what}s are: {}", known.join(", ")))
    };
    if let Some(id) = scope.strip_prefix("provider:") {
        if !catalogue.providers.contains_key(id) {
            return Err(missing("provider", id, catalogue.providers.keys().collect()));
        }
    } else if let Some(id) = scope.strip_prefix("model:") {
        if !catalogue.models.contains_key(id) {
            return Err(missing("model", id, catalogue.models.keys().collect()));
        }
    } else if let Some(id) = scope.strip_prefix("customer:") {
        match customers::get(db, id).await {
            Ok(_) => {}
            Err(AccountsError::NotFound(_)) => {
                return Err(GatewayError::Invalid(format!("`{scope}`: there is no customer `{id}`")));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Cap scopes are `global` or `provider:ID`, `model:ID`, `customer:ID` (and the daily
/// budget's `budget:daily`).
pub fn check_scope(scope: &str) -> Result<(), String> {
    let ok = scope == "global"
        || scope == DAILY_BUDGET_SCOPE
        || ["provider:", "model:", "customer:"]
            .iter()
            .any(|p| scope.strip_prefix(p).is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace)));
    if ok {
        Ok(())
    } else {
        Err(format!("`{scope}` is not a cap scope; use global, provider:ID, model:ID or customer:ID"))
    }
}

/// A per-process copy of the controls, refreshed after `CACHE_TTL`.
#[derive(Debug, Default)]
pub struct ControlCache {
    inner: Mutex<Option<(i64, Controls)>>,
}

impl ControlCache {
    /// The controls, from the cache when fresh.
    pub async fn get(&self, db: &Db, now: i64) -> Result<Controls, DbError> {
        if let Ok(guard) = self.inner.lock() {
            if let Some((at, c)) = guard.as_ref() {
                if now - at < CACHE_TTL && now >= *at {
                    return Ok(c.clone());
                }
            }
        }
        let fresh = load(db).await?;
        if let Ok(mut guard) = self.inner.lock() {
            *guard = Some((now, fresh.clone()));
        }
        Ok(fresh)
    }

    /// Forgets the cached copy (after this process changed a control).
    pub fn invalidate(&self) {
        if let Ok(mut guard) = self.inner.lock() {
            *guard = None;
        }
    }
}

/// Sets (or with `None` removes) a customer's monthly spending budget, audited.
pub async fn set_customer_budget(
    db: &Db,
    actor: &Actor,
    customer_id: &str,
    budget: Option<j1msky_core::Money>,
    now: i64,
) -> Result<(), GatewayError> {
    if budget.is_some_and(|m| m.micros() <= 0) {
        return Err(GatewayError::Invalid("a monthly budget must be above zero (use `none` to remove it)".into()));
    }
    let mut tx = db.begin().await?;
    let updated = sqlx::query("UPDATE customers SET monthly_budget_micros = $1, updated_at = $2 WHERE id = $3")
        .bind(budget.map(|m| m.micros()))
        .bind(now)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(GatewayError::Invalid(format!("no customer `{customer_id}`")));
    }
    let detail = serde_json::json!({"monthly_budget": budget});
    audit::record(&mut tx, actor, "customer.budget_changed", customer_id, Some(customer_id), detail.clone(), now)
        .await?;
    outbox::emit(&mut tx, db.backend(), Kind::CustomerBudgetChanged, Some(customer_id), &detail, now).await?;
    tx.commit().await?;
    Ok(())
}
