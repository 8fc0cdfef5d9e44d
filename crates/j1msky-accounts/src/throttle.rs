//! Login throttling, per account and per client address, kept in the database so
//! that every server process shares the same counters.

use sqlx::Row;

use crate::AccountsError;
use j1msky_core::clock::SECOND;
use j1msky_db::Db;

/// How many failures lock a scope, within which window, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_failures: i64,
    pub window_micros: i64,
    pub lock_micros: i64,
}

/// Failures allowed per account: 5 in 15 minutes, then 15 minutes locked.
pub const PER_ACCOUNT: Policy = Policy { max_failures: 5, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };
/// Failures allowed per client address: 20 in 15 minutes, then 15 minutes locked.
pub const PER_ADDRESS: Policy = Policy { max_failures: 20, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };

/// The scope key of an account.
pub fn account_scope(email_key: &str) -> String {
    format!("account:{email_key}")
}

/// The scope key of a client address.
pub fn address_scope(ip: &str) -> String {
    format!("ip:{ip}")
}

/// Fails with `Throttled` when any of the scopes is locked now.
pub async fn check(db: &Db, scopes: &[&str], now: i64) -> Result<(), AccountsError> {
    for scope in scopes {
        let row = sqlx::query("SELECT locked_until FROM login_failures WHERE scope = $1")
            .bind(*scope)
            .fetch_optional(db.pool())
            .await?;
        if let Some(row) = row {
            let locked_until: Option<i64> = row.try_get(0)?;
            if let Some(until) = locked_until.filter(|u| *u > now) {
                return Err(AccountsError::Throttled { retry_after_secs: (until - now + SECOND - 1) / SECOND });
            }
        }
    }
    Ok(())
}

/// Counts one failure against `scope`, locking it when the policy says so.
pub async fn record_failure(db: &Db, scope: &str, policy: Policy, now: i64) -> Result<(), AccountsError> {
    let mut tx = db.begin().await?;
    let row = sqlx::query("SELECT failures, window_start FROM login_failures WHERE scope = $1")
        .bind(scope)
        .fetch_optional(&mut *tx)
        .await?;
    let (failures, window_start) = match row {
        Some(r) => {
            let (f, w): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
            if now - w > policy.window_micros {
                (1, now)
            } else {
                (f + 1, w)
            }
        }
        None => (1, now),
    };
    let locked_until = (failures >= policy.max_failures).then_some(now + policy.lock_micros);
    // A lock starts a fresh window so the next lock needs a full count again.
    let (failures, window_start) = if locked_until.is_some() { (0, now) } else { (failures, window_start) };
    sqlx::query(
        "INSERT INTO login_failures (scope, failures, window_start, locked_until) VALUES ($1, $2, $3, $4)
         ON CONFLICT (scope) DO UPDATE SET failures = excluded.failures, window_start = excluded.window_start,
             locked_until = COALESCE(excluded.locked_until, login_failures.locked_until)",
    )
    .bind(scope)
    .bind(failures)
    .bind(window_start)
    .bind(locked_until)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if locked_until.is_some() {
        tracing::warn!(scope, "login locked after repeated failures");
    }
    Ok(())
}

/// Forgets the failures of `scope` (after a successful login).
pub async fn clear(db: &Db, scope: &str) -> Result<(), AccountsError> {
    sqlx::query("DELETE FROM login_failures WHERE scope = $1").bind(scope).execute(db.pool()).await?;
    Ok(())
}
