//! Browsers that logged in to an account before (`known_devices`). A successful login
//! gives the browser a random token in a long-lived cookie; its digest is kept here. A
//! login attempt that presents a live token of the account it names is throttled on that
//! browser's own count instead of the account's, so failures sent from anywhere else (an
//! attacker locking the account on purpose, five tries each quarter of an hour) cannot
//! keep the owner out, while guesses from the attacker's side stay locked as before.

use sqlx::Row;

use crate::secrets::{digest, random_token};
use crate::AccountsError;
use j1msky_core::clock::DAY;
use j1msky_db::Db;

/// How long a browser stays known without logging in (the cookie lives as long).
pub const DEVICE_TTL: i64 = 90 * DAY;
/// Browsers kept per user: the most recently used ones.
pub const DEVICES_PER_USER: i64 = 10;

/// The digest of `token` when it is a live known browser of the account `email_key`
/// (lower-cased email) names.
pub async fn recognised(db: &Db, token: &str, email_key: &str, now: i64) -> Result<Option<String>, AccountsError> {
    let hash = digest(token);
    let row = sqlx::query(
        "SELECT d.token_hash FROM known_devices d JOIN users u ON u.id = d.user_id
         WHERE d.token_hash = $1 AND u.email_lower = $2 AND d.last_seen_at > $3",
    )
    .bind(&hash)
    .bind(email_key)
    .bind(now - DEVICE_TTL)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
}

/// After a successful login: the token the browser keeps. A recognised browser keeps its
/// token (seen now); any other gets a new one. The user's oldest browsers beyond
/// [`DEVICES_PER_USER`], and expired ones, are forgotten.
pub(crate) async fn remember(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    presented: Option<(&str, &str)>,
    now: i64,
) -> Result<String, AccountsError> {
    let token = match presented {
        Some((token, hash)) => {
            sqlx::query("UPDATE known_devices SET last_seen_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(hash)
                .execute(&mut *conn)
                .await?;
            token.to_string()
        }
        None => {
            let token = random_token();
            sqlx::query(
                "INSERT INTO known_devices (token_hash, user_id, created_at, last_seen_at) VALUES ($1, $2, $3, $3)",
            )
            .bind(digest(&token))
            .bind(user_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            token
        }
    };
    sqlx::query(
        "DELETE FROM known_devices WHERE user_id = $1 AND (last_seen_at <= $2 OR token_hash NOT IN (
             SELECT token_hash FROM known_devices WHERE user_id = $1
             ORDER BY last_seen_at DESC, token_hash LIMIT $3))",
    )
    .bind(user_id)
    .bind(now - DEVICE_TTL)
    .bind(DEVICES_PER_USER)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Inside the caller's transaction: the user's browsers are known no more (a new
/// password, `users::store_password`).
pub(crate) async fn forget_all(conn: &mut sqlx::AnyConnection, user_id: &str) -> Result<(), AccountsError> {
    sqlx::query("DELETE FROM known_devices WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    Ok(())
}

/// A browser whose own count locked it is known no more: its next attempts count against
/// the account like anyone's. A stolen token buys [`crate::throttle::PER_ACCOUNT`]'s tries
/// once, not every quarter of an hour.
pub(crate) async fn forget(db: &Db, token_hash: &str) -> Result<(), AccountsError> {
    sqlx::query("DELETE FROM known_devices WHERE token_hash = $1").bind(token_hash).execute(db.pool()).await?;
    Ok(())
}
