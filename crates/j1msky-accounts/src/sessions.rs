//! Browser sessions: a random token in an HttpOnly cookie, its digest in the
//! database, with a per-session CSRF token and an absolute expiry.

use sqlx::Row;

use crate::secrets::{digest, random_token};
use crate::users::{self, User};
use crate::AccountsError;
use j1msky_core::clock::{DAY, SECOND};
use j1msky_db::Db;

/// How long a session lives.
pub const SESSION_TTL: i64 = 7 * DAY;
/// `last_seen_at` is refreshed at most this often, to keep reads cheap.
const TOUCH_EVERY: i64 = 300 * SECOND;

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// Opens a session for `user_id`; returns (cookie token, CSRF token).
pub async fn create(db: &Db, user_id: &str, ip: Option<&str>, now: i64) -> Result<(String, String), AccountsError> {
    let token = random_token();
    let csrf = random_token();
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at, last_seen_at, ip)
         VALUES ($1, $2, $3, $4, $5, $4, $6)",
    )
    .bind(digest(&token))
    .bind(user_id)
    .bind(&csrf)
    .bind(now)
    .bind(now + SESSION_TTL)
    .bind(ip)
    .execute(db.pool())
    .await?;
    Ok((token, csrf))
}

/// The session behind a cookie token, if it is live and its user is enabled.
pub async fn lookup(db: &Db, token: &str, now: i64) -> Result<Option<Session>, AccountsError> {
    let hash = digest(token);
    let row = sqlx::query("SELECT user_id, csrf_token, expires_at, last_seen_at FROM sessions WHERE token_hash = $1")
        .bind(&hash)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (user_id, csrf_token, expires_at, last_seen): (String, String, i64, i64) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
    if expires_at <= now {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(&hash).execute(db.pool()).await?;
        return Ok(None);
    }
    let user = match users::get(db, &user_id).await {
        Ok(u) if u.disabled_at.is_none() => u,
        Ok(_) | Err(AccountsError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if now - last_seen > TOUCH_EVERY {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(&hash)
            .execute(db.pool())
            .await?;
    }
    Ok(Some(Session { user, csrf_token, expires_at }))
}

/// Ends the session behind a cookie token (logout). Unknown tokens are fine.
pub async fn delete(db: &Db, token: &str) -> Result<(), AccountsError> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(digest(token)).execute(db.pool()).await?;
    Ok(())
}

/// Removes expired sessions; returns how many.
pub async fn purge_expired(db: &Db, now: i64) -> Result<u64, AccountsError> {
    Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(db.pool()).await?.rows_affected())
}
