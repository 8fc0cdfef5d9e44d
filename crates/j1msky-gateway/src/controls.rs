//! Runtime controls, persisted in `settings` and audited: the cost mode and cap
//! overrides (the rate-limit panel). Read through a short cache so the hot path does
//! not query them on every request; other processes see a change within `CACHE_TTL`.

use j1msky_core::events::{GatewayCapChanged, GatewayModeChanged, Typed};
use std::collections::BTreeMap;
use std::sync::Mutex;

use j1msky_accounts::{customer_links, customers, AccountsError};
use j1msky_audit::{audit, settings, Actor};
use j1msky_core::catalogue::Catalogue;
use j1msky_core::clock::SECOND;
use j1msky_core::Money;
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

impl Controls {
    /// The business's daily budget in force: the operator's, else the catalogue's.
    pub fn daily_budget(&self, catalogue: &Catalogue) -> Money {
        self.caps.get(DAILY_BUDGET_SCOPE).map_or(catalogue.routing.daily_budget, |m| Money::from_micros(*m))
    }
}

/// A control refused: the field and the rule it broke, the same for the dashboard and
/// the CLI since both hand their raw input to the functions here.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{field}: {message}")]
    Rule { field: &'static str, message: String },
    #[error(transparent)]
    Failed(#[from] GatewayError),
}

impl ControlError {
    fn rule(field: &'static str, message: impl Into<String>) -> ControlError {
        ControlError::Rule { field, message: message.into() }
    }
}

impl From<DbError> for ControlError {
    fn from(e: DbError) -> Self {
        ControlError::Failed(e.into())
    }
}

/// Loads the controls from the database.
pub async fn load(db: &Db) -> Result<Controls, DbError> {
    let mut c = Controls::default();
    for row in settings::with_prefix(db, "gateway.").await? {
        if row.key == MODE_KEY {
            c.mode = row.value.parse().unwrap_or_default();
            c.mode_set_by = Some(row.updated_by);
            c.mode_set_at = Some(row.updated_at);
        } else if let Some(scope) = row.key.strip_prefix(CAP_PREFIX) {
            if let Ok(n) = row.value.parse() {
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
    reason: &str,
    now: i64,
    event: Typed,
) -> Result<(), GatewayError> {
    let mut tx = db.begin().await?;
    settings::put(&mut tx, actor, key, value.as_deref(), reason, now).await?;
    let kind = event.kind();
    let detail =
        event.to_value().map_err(|e| GatewayError::Db(j1msky_db::DbError::Corrupt(format!("{kind} event: {e}"))))?;
    audit::record(&mut tx, actor, kind.as_str(), key, None, detail, now).await?;
    outbox::emit_typed(&mut tx, db.backend(), event, None, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Switches the cost mode, audited and announced as an event.
pub async fn set_mode(db: &Db, actor: &Actor, mode: Mode, reason: &str, now: i64) -> Result<(), GatewayError> {
    let event = GatewayModeChanged { mode: mode.as_str().into(), reason: reason.into() }.into();
    put(db, actor, MODE_KEY, Some(mode.as_str().to_string()), reason, now, event).await
}

/// Switches the cost mode for an operator (dashboard, CLI): the reason is required.
pub async fn set_mode_with_reason(
    db: &Db,
    actor: &Actor,
    mode: Mode,
    reason: &str,
    now: i64,
) -> Result<(), ControlError> {
    let reason = check_reason(reason)?;
    Ok(set_mode(db, actor, mode, reason, now).await?)
}

/// Sets (or with `None` goes back to the catalogue's) the business's daily budget.
pub async fn set_daily_budget(
    db: &Db,
    actor: &Actor,
    budget: Option<Money>,
    reason: &str,
    now: i64,
) -> Result<(), ControlError> {
    if budget.is_some_and(|m| m.micros() <= 0) {
        return Err(ControlError::rule("daily_budget", "the daily budget must be above zero"));
    }
    let reason = check_reason(reason)?;
    Ok(put_cap(db, actor, DAILY_BUDGET_SCOPE, budget.map(|m| m.micros()), reason, now).await?)
}

/// The reason the history keeps for a change: asked of whoever changes a control, so a
/// change read back later says why it was made.
fn check_reason(reason: &str) -> Result<&str, ControlError> {
    settings::check_reason(reason).map_err(|m| ControlError::rule("reason", m))
}

/// The daily budget as typed by the operator: USD, or empty / `default` for the catalogue's.
pub async fn set_daily_budget_text(
    db: &Db,
    actor: &Actor,
    text: &str,
    reason: &str,
    now: i64,
) -> Result<Option<Money>, ControlError> {
    let budget = money_input("daily_budget", "daily budget", text, &["", "default"])?;
    set_daily_budget(db, actor, budget, reason, now).await?;
    Ok(budget)
}

/// A cap as typed by the operator: requests per hour, or empty / `default` for the catalogue's.
pub async fn set_cap_text(
    db: &Db,
    catalogue: &Catalogue,
    actor: &Actor,
    scope: &str,
    text: &str,
    reason: &str,
    now: i64,
) -> Result<Option<i64>, ControlError> {
    let scope = scope.trim();
    let cap = match text.trim() {
        "" | "default" => None,
        n => match n.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Err(ControlError::rule(
                    "cap",
                    format!(
                        "cap for {scope}: `{n}` is not a number of requests per hour (not a whole number); give one \
                         or `default`"
                    ),
                ))
            }
        },
    };
    set_cap(db, catalogue, actor, scope, cap, reason, now).await?;
    Ok(cap)
}

/// An amount of USD typed by the operator (a leading `$` allowed); one of `unset` means none.
fn money_input(field: &'static str, what: &str, text: &str, unset: &[&str]) -> Result<Option<Money>, ControlError> {
    let text = text.trim();
    if unset.contains(&text) {
        return Ok(None);
    }
    let amount = text.trim_start_matches('$');
    amount.parse::<Money>().map(Some).map_err(|e| ControlError::rule(field, format!("{what} `{amount}`: {e}")))
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
    reason: &str,
    now: i64,
) -> Result<(), ControlError> {
    if scope == DAILY_BUDGET_SCOPE {
        return Err(ControlError::rule("scope", "the daily budget is money: set it as the daily budget, not as a cap"));
    }
    check_scope(scope).map_err(|m| ControlError::rule("scope", m))?;
    if cap.is_some_and(|n| n < 0) {
        return Err(ControlError::rule("cap", "a cap cannot be negative"));
    }
    if cap.is_some() {
        check_exists(db, catalogue, scope).await?;
    }
    let reason = check_reason(reason)?;
    Ok(put_cap(db, actor, scope, cap, reason, now).await?)
}

async fn put_cap(
    db: &Db,
    actor: &Actor,
    scope: &str,
    cap: Option<i64>,
    reason: &str,
    now: i64,
) -> Result<(), GatewayError> {
    let event = GatewayCapChanged { scope: scope.into(), cap }.into();
    put(db, actor, &format!("{CAP_PREFIX}{scope}"), cap.map(|n| n.to_string()), reason, now, event).await
}

/// Puts a setting this module owns back to `value` (a rollback of a change in its
/// history), through the same path as the change itself: checked, audited, announced.
pub async fn restore(
    db: &Db,
    catalogue: &Catalogue,
    actor: &Actor,
    key: &str,
    value: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<(), ControlError> {
    if key == MODE_KEY {
        let mode: Mode = match value {
            Some(v) => v.parse().map_err(|e: String| ControlError::rule("value", e))?,
            None => Mode::default(),
        };
        let reason = check_reason(reason)?;
        return Ok(set_mode(db, actor, mode, reason, now).await?);
    }
    let Some(scope) = key.strip_prefix(CAP_PREFIX) else {
        return Err(ControlError::rule("key", format!("`{key}` is not a gateway control")));
    };
    let number = |v: &str| {
        v.parse::<i64>().map_err(|_| ControlError::rule("value", format!("`{v}` stored for {key} is not a number")))
    };
    let n = value.map(number).transpose()?;
    if scope == DAILY_BUDGET_SCOPE {
        set_daily_budget(db, actor, n.map(Money::from_micros), reason, now).await
    } else {
        set_cap(db, catalogue, actor, scope, n, reason, now).await
    }
}

/// Whether `key` is a setting of this module (what [`restore`] can put back).
pub fn owns_key(key: &str) -> bool {
    key == MODE_KEY || key.starts_with(CAP_PREFIX)
}

/// Refuses a scope that names no provider or model of the catalogue, or no customer.
async fn check_exists(db: &Db, catalogue: &Catalogue, scope: &str) -> Result<(), ControlError> {
    let missing = |what: &str, id: &str, known: Vec<&String>| {
        let known: Vec<&str> = known.into_iter().map(String::as_str).collect();
        ControlError::rule("scope", format!("`{scope}`: there is no {what} `{id}`; {what}s are: {}", known.join(", ")))
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
                return Err(ControlError::rule("scope", format!("`{scope}`: there is no customer `{id}`")));
            }
            Err(e) => return Err(GatewayError::from(e).into()),
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

/// Sets (or with `None` removes) a customer's monthly spending budget, keeping who, when,
/// the old and new amounts and `reason` in the history; accounts owns the column and its
/// rule, refusals come back as this module's rule errors.
pub async fn set_customer_budget(
    db: &Db,
    actor: &Actor,
    customer_id: &str,
    budget: Option<Money>,
    reason: &str,
    now: i64,
) -> Result<(), ControlError> {
    let reason = check_reason(reason)?;
    match customer_links::set_monthly_budget(db, actor, customer_id, budget, reason, now).await {
        Ok(()) => Ok(()),
        Err(AccountsError::NotFound(_)) => Err(ControlError::rule("customer", format!("no customer `{customer_id}`"))),
        Err(AccountsError::Invalid { field, message }) => Err(ControlError::Rule { field, message }),
        Err(e) => Err(GatewayError::from(e).into()),
    }
}

/// A customer's monthly budget as typed by the operator: USD, or `none` / empty to remove it.
pub async fn set_customer_budget_text(
    db: &Db,
    actor: &Actor,
    customer_id: &str,
    text: &str,
    reason: &str,
    now: i64,
) -> Result<Option<Money>, ControlError> {
    let budget = money_input("monthly_budget", "monthly budget", text, &["", "none"])?;
    set_customer_budget(db, actor, customer_id, budget, reason, now).await?;
    Ok(budget)
}
