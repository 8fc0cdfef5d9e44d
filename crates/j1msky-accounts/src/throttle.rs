//! Login throttling, per account and per client address, kept in the database so
//! that every server process shares the same counters.
//!
//! An attempt is counted (and the scope locked when it reaches the limit) in one
//! atomic statement *before* the password is checked, so a burst of parallel
//! attempts cannot all slip past a count that is only bumped after each check.

use sqlx::Row;

use crate::AccountsError;
use j1msky_core::clock::SECOND;
use j1msky_db::Db;

/// How many attempts lock a scope, within which window, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_failures: i64,
    pub window_micros: i64,
    pub lock_micros: i64,
}

/// Failures allowed per account: 5 in 15 minutes, then 15 minutes locked.
pub const PER_ACCOUNT: Policy = Policy { max_failures: 5, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };
/// Failures allowed per client address: 20 in 15 minutes, then the address is slowed
/// down to [`PER_ADDRESS_ACCOUNT`] for 15 minutes.
pub const PER_ADDRESS: Policy = Policy { max_failures: 20, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };
/// What a slowed-down address may still do: one try per account per 15 minutes. Not a
/// lock of the whole address, so one client behind a shared address (an office, a
/// carrier NAT) cannot keep everyone else there out of their own accounts.
pub const PER_ADDRESS_ACCOUNT: Policy =
    Policy { max_failures: 1, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };

/// What a slowed-down address may try in all, one account at a time: 50 more attempts
/// in 15 minutes, then the whole address waits 15 minutes. Without it one try per account
/// let a client try a password on every account it knows of (a spray); an office behind
/// the address is held up only once it has failed 70 times in a quarter of an hour.
pub const PER_SLOWED_ADDRESS: Policy =
    Policy { max_failures: 50, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };

/// A login name as part of a scope key. Anything longer than an email can be (so no
/// account) is kept as its digest: the key is a primary key, and PostgreSQL refuses an
/// index entry of more than about 2.7 kB.
fn bounded(email_key: &str) -> String {
    if email_key.len() <= 254 {
        return email_key.to_string();
    }
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(email_key.as_bytes())))
}

/// The scope key of an account.
pub fn account_scope(email_key: &str) -> String {
    format!("account:{}", bounded(email_key))
}

/// The scope key of an account's known browser ([`crate::devices`]), by its token's
/// digest: it stands in for [`account_scope`] when the browser presents it.
pub fn device_scope(token_hash: &str) -> String {
    format!("device:{token_hash}")
}

/// The scope key of a client address. An IPv6 address counts by its /64 prefix: one
/// host, or one customer's line, is given a whole /64 and could otherwise take a fresh
/// address for every try. An IPv4-mapped IPv6 address is its IPv4 address.
pub fn address_scope(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                format!("ip:{}/64", std::net::Ipv6Addr::from(prefix))
            }
        },
        Ok(std::net::IpAddr::V4(v4)) => format!("ip:{v4}"),
        Err(_) => format!("ip:{ip}"),
    }
}

/// The scope key of the tries of a slowed-down client address ([`PER_SLOWED_ADDRESS`]),
/// which counts as [`address_scope`] does (an IPv6 address by its /64: otherwise each new
/// address in it would bring a fresh budget of tries).
pub fn slowed_address_scope(ip: &str) -> String {
    format!("{}|slowed", address_scope(ip))
}

/// The scope key of one account tried from one client address (counted as
/// [`address_scope`] does).
pub fn address_account_scope(ip: &str, email_key: &str) -> String {
    format!("{}|account:{}", address_scope(ip), bounded(email_key))
}

/// The outcome of [`admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The attempt may be checked; it is already counted.
    Admitted,
    /// The scope is locked for this long.
    Refused { retry_after_secs: i64 },
}

/// Counts one attempt against `scope`, locking the scope when this attempt reaches the
/// limit. Attempts while locked are refused (and counted, which keeps them refused
/// under any interleaving). A lock that ended starts a fresh window.
pub async fn admit(db: &Db, scope: &str, policy: Policy, now: i64) -> Result<Admission, AccountsError> {
    // Every column's new value is computed from the row as it was, in one statement:
    // PostgreSQL holds the row lock, SQLite its single writer, so no two attempts
    // read the same count.
    let row = sqlx::query(
        "INSERT INTO login_failures (scope, failures, window_start, locked_until)
         VALUES ($1, 1, $2, CASE WHEN 1 >= $3 THEN $2 + $5 ELSE NULL END)
         ON CONFLICT (scope) DO UPDATE SET
           failures = CASE
             WHEN login_failures.locked_until > $2 THEN login_failures.failures + 1
             WHEN login_failures.locked_until IS NOT NULL OR login_failures.window_start <= $2 - $4 THEN 1
             ELSE login_failures.failures + 1 END,
           window_start = CASE
             WHEN login_failures.locked_until > $2 THEN login_failures.window_start
             WHEN login_failures.locked_until IS NOT NULL OR login_failures.window_start <= $2 - $4 THEN $2
             ELSE login_failures.window_start END,
           locked_until = CASE
             WHEN login_failures.locked_until > $2 THEN login_failures.locked_until
             WHEN login_failures.locked_until IS NOT NULL OR login_failures.window_start <= $2 - $4
               THEN CASE WHEN 1 >= $3 THEN $2 + $5 ELSE NULL END
             WHEN login_failures.failures + 1 >= $3 THEN $2 + $5
             ELSE NULL END
         RETURNING failures, locked_until",
    )
    .bind(scope)
    .bind(now)
    .bind(policy.max_failures)
    .bind(policy.window_micros)
    .bind(policy.lock_micros)
    .fetch_one(db.pool())
    .await?;
    let failures: i64 = row.try_get(0)?;
    let locked_until: Option<i64> = row.try_get(1)?;
    if failures <= policy.max_failures {
        if failures == policy.max_failures {
            tracing::warn!(scope, "login locked after repeated failures");
        }
        return Ok(Admission::Admitted);
    }
    let until = locked_until.unwrap_or(now + policy.lock_micros);
    Ok(Admission::Refused { retry_after_secs: ((until - now + SECOND - 1) / SECOND).max(1) })
}

/// Takes back one admitted attempt that turned out to be a success, so people logging
/// in correctly never add up to a limit. If that attempt set the lock and nothing was
/// refused since, the lock goes too.
pub async fn refund(db: &Db, scope: &str, policy: Policy) -> Result<(), AccountsError> {
    sqlx::query(
        "UPDATE login_failures SET
           locked_until = CASE WHEN failures = $2 THEN NULL ELSE locked_until END,
           failures = failures - 1
         WHERE scope = $1 AND failures > 0 AND failures <= $2",
    )
    .bind(scope)
    .bind(policy.max_failures)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Forgets the failures of `scope` (after a successful login).
pub async fn clear(db: &Db, scope: &str) -> Result<(), AccountsError> {
    sqlx::query("DELETE FROM login_failures WHERE scope = $1").bind(scope).execute(db.pool()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::address_scope;

    #[test]
    fn an_ipv6_address_is_throttled_by_its_64_bit_prefix() {
        // One host is given a /64: its every address is the same client.
        assert_eq!(address_scope("2001:db8:1:2:aaaa::1"), address_scope("2001:DB8:1:2:bbbb:cccc:dddd:eeee"));
        assert_eq!(address_scope("2001:db8:1:2::5"), "ip:2001:db8:1:2::/64");
        assert_ne!(address_scope("2001:db8:1:2::1"), address_scope("2001:db8:1:3::1"));
        // IPv4, also written as an IPv4-mapped IPv6 address, is the address itself.
        assert_eq!(address_scope("203.0.113.7"), "ip:203.0.113.7");
        assert_eq!(address_scope("::ffff:203.0.113.7"), "ip:203.0.113.7");
        // Not an address (a test's or a proxy's label): kept as it is.
        assert_eq!(address_scope("unknown"), "ip:unknown");
    }
}
