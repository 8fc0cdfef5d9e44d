//! Budget escalation: as the day's spend crosses the alert levels of the catalogue, the
//! operator is alerted; at the second-highest level Opus (every reserved model) is
//! paused, at the highest only the economy model runs. Each step leaves an alert
//! record and an event saying why. The mode is only ever raised here; lowering it is
//! the operator's decision.

use j1msky_audit::{alerts, Actor};
use j1msky_core::events::{BudgetLevelCrossed, LedgerBacklog, ProviderAuthFailed, Typed};
use j1msky_db::outbox;

use crate::policy::Mode;
use crate::{controls, limits, Gateway, GatewayError};
use j1msky_core::windows;

/// The mode a spend level calls for, given the ascending alert levels.
pub fn mode_for(levels: &[u32], percent_spent: u64) -> Mode {
    let n = levels.len();
    let crossed = |i: usize| u64::from(levels[i]) <= percent_spent;
    if n >= 1 && crossed(n - 1) {
        Mode::CheapOnly
    } else if n >= 2 && crossed(n - 2) {
        Mode::OpusPaused
    } else {
        Mode::Normal
    }
}

/// Checks the day's spend after a settlement.
pub async fn after_spend(gw: &Gateway) -> Result<(), GatewayError> {
    after_spend_at(gw, None).await
}

/// As [`after_spend`], with the day's spend when the settlement already returned it
/// (saving a read per call).
pub async fn after_spend_at(gw: &Gateway, day_spent: Option<j1msky_core::Money>) -> Result<(), GatewayError> {
    let now = gw.clock.now_micros();
    let tz = gw.catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let (day_start, _) = windows::day(tz, now);
    let spent = match day_spent
        .or_else(|| gw.in_process.as_ref().and_then(|ip| ip.spent(crate::admission::BUSINESS_DAY, day_start)))
    {
        Some(spent) => spent,
        None => limits::budget_state(&gw.db, crate::admission::BUSINESS_DAY, day_start).await?.0,
    };
    let controls = gw.controls().await?;
    let budget = controls.daily_budget(&gw.catalogue);
    if budget.micros() <= 0 {
        return Ok(());
    }
    let percent = (spent.micros().max(0) as u128 * 100 / budget.micros() as u128) as u64;
    let levels = &gw.catalogue.routing.alert_levels_percent;
    for level in levels.iter().filter(|l| u64::from(**l) <= percent) {
        let id = format!("alr_budget_{day_start}_{level}");
        let message = format!("daily spend {spent} has crossed {level}% of the {budget} budget");
        let payload =
            BudgetLevelCrossed { level: *level, spent_micros: spent.micros(), budget_micros: budget.micros() };
        if raise(gw, &id, "budget_level", &message, Some(payload.into()), now).await? {
            tracing::warn!(%message, "budget alert");
        }
    }
    let wanted = mode_for(levels, percent);
    if wanted.severity() > controls.mode.severity() {
        let reason = format!("daily spend at {percent}% of the {budget} budget");
        escalate(&gw.db, wanted, &reason, now).await?;
        gw.controls_changed();
    }
    Ok(())
}

/// Raises the cost mode to `wanted` when it is stricter than the current one (never
/// lowers it); true when it changed. The one path for automatic escalation: the budget
/// levels above and ops' cost-spike check.
pub async fn escalate(db: &j1msky_db::Db, wanted: Mode, reason: &str, now: i64) -> Result<bool, GatewayError> {
    let current = controls::load(db).await?.mode;
    if wanted.severity() <= current.severity() {
        return Ok(false);
    }
    controls::set_mode(db, &Actor::system(), wanted, reason, now).await?;
    tracing::warn!(mode = %wanted, %reason, "cost mode raised automatically");
    Ok(true)
}

/// The mode one step stricter than `mode` (cheap-only stays cheap-only).
pub fn stricter(mode: Mode) -> Mode {
    match mode {
        Mode::Normal => Mode::OpusPaused,
        Mode::OpusPaused | Mode::CheapOnly => Mode::CheapOnly,
    }
}

/// A provider's circuit just opened: calls to it are skipped for a while. One alert per
/// provider per hour; failing to record it is logged, not fatal.
pub async fn circuit_opened(gw: &Gateway, provider: &str) {
    let now = gw.clock.now_micros();
    let (hour, _) = windows::hour(now);
    let id = format!("alr_circuit_{provider}_{hour}");
    let message = format!("provider {provider} keeps failing: its circuit is open and calls go to fallbacks");
    tracing::error!(provider, "circuit opened");
    if let Err(e) = raise(gw, &id, "circuit_open", &message, None, now).await {
        tracing::error!(error = %e, "could not record the circuit alert");
    }
}

/// A provider refused our credentials: the operator must fix the key, so leave an alert
/// (one per provider per hour) and an event. Failing to record it is logged, not fatal.
pub async fn provider_auth_failed(gw: &Gateway, provider: &str) {
    let now = gw.clock.now_micros();
    let (hour, _) = windows::hour(now);
    let id = format!("alr_auth_{provider}_{hour}");
    let message =
        format!("provider {provider} rejected our API key; check the environment variable the catalogue names");
    let payload = ProviderAuthFailed { provider: provider.into() };
    let result = raise(gw, &id, "provider_auth", &message, Some(payload.into()), now).await;
    tracing::error!(provider, "the provider rejected our credentials");
    if let Err(e) = result {
        tracing::error!(error = %e, "could not record the provider auth alert");
    }
}

/// The ledger writer cannot commit and calls are being refused: the operator must look
/// at the database (one alert per hour). Recording it may fail for the same reason; that
/// is logged.
pub async fn ledger_backlog(gw: &Gateway, unflushed: usize) {
    let now = gw.clock.now_micros();
    let (hour, _) = windows::hour(now);
    let id = format!("alr_ledger_backlog_{hour}");
    let message = format!(
        "the cost ledger cannot be written ({unflushed} rows waiting); model calls are refused until the database \
         accepts them"
    );
    let payload = LedgerBacklog { unflushed: u64::try_from(unflushed).unwrap_or(u64::MAX) };
    tracing::error!(unflushed, "ledger backlog: refusing model calls");
    if let Err(e) = raise(gw, &id, "ledger_backlog", &message, Some(payload.into()), now).await {
        tracing::error!(error = %e, "could not record the ledger backlog alert");
    }
}

/// Records alert `id` once (later calls with the same id do nothing) and, the first time,
/// emits `event` (when given) in the same transaction. True when the alert is new.
async fn raise(
    gw: &Gateway,
    id: &str,
    kind: &str,
    message: &str,
    event: Option<Typed>,
    now: i64,
) -> Result<bool, GatewayError> {
    if gw.raised.lock().unwrap_or_else(|p| p.into_inner()).contains(id) {
        return Ok(false);
    }
    let mut tx = gw.db.begin().await?;
    let payload = match &event {
        Some(event) => event
            .to_value()
            .map_err(|e| GatewayError::Db(j1msky_db::DbError::Corrupt(format!("{} event: {e}", event.kind()))))?,
        None => serde_json::json!({}),
    };
    let new = alerts::record(&mut tx, id, kind, message, &payload, now).await?;
    if let (true, Some(event)) = (new, event) {
        outbox::emit_typed(&mut tx, gw.db.backend(), event, None, now).await?;
    }
    tx.commit().await?;
    let mut raised = gw.raised.lock().unwrap_or_else(|p| p.into_inner());
    if raised.len() > 10_000 {
        raised.clear();
    }
    raised.insert(id.to_string());
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_modes() {
        let levels = [50, 80, 100];
        assert_eq!(mode_for(&levels, 10), Mode::Normal);
        assert_eq!(mode_for(&levels, 50), Mode::Normal);
        assert_eq!(mode_for(&levels, 80), Mode::OpusPaused);
        assert_eq!(mode_for(&levels, 99), Mode::OpusPaused);
        assert_eq!(mode_for(&levels, 100), Mode::CheapOnly);
        assert_eq!(mode_for(&[90], 95), Mode::CheapOnly);
        assert_eq!(mode_for(&[], 500), Mode::Normal);
    }
}
