//! One-time links: set a first password (a trial's owner), reset a forgotten one, accept
//! an invitation to a customer account. The link carries a random 256-bit token; only
//! its digest is stored. A link works once (the redeeming UPDATE claims it, so two
//! clicks racing cannot both set a password) and not after it expires.

use sqlx::{AnyConnection, Row};

use crate::throttle::{self, Admission, Policy};
use crate::users::{self, User};
use crate::{passwords, secrets, AccountsError};
use j1msky_audit::{audit, Actor};
use j1msky_core::clock::SECOND;
use j1msky_db::Db;

/// How long a set-password or invite link works: 7 days.
pub const INVITE_TTL: i64 = 7 * 86_400 * SECOND;
/// How long a reset link works: 1 hour.
pub const RESET_TTL: i64 = 3_600 * SECOND;
/// Reset requests one client address may make: 5 in 15 minutes.
pub const RESETS_PER_ADDRESS: Policy =
    Policy { max_failures: 5, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };
/// Reset mails one account may be sent: 3 an hour (more requests are answered alike
/// but send nothing, so nobody can fill a mailbox).
pub const RESETS_PER_ACCOUNT: Policy =
    Policy { max_failures: 3, window_micros: 3_600 * SECOND, lock_micros: 3_600 * SECOND };

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// The first password of a trial's owner.
    SetPassword,
    /// A forgotten password.
    Reset,
    /// A member invited by their customer's owner.
    Invite,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::SetPassword => "set_password",
            Purpose::Reset => "reset",
            Purpose::Invite => "invite",
        }
    }

    fn parse(s: &str) -> Result<Purpose, AccountsError> {
        match s {
            "set_password" => Ok(Purpose::SetPassword),
            "reset" => Ok(Purpose::Reset),
            "invite" => Ok(Purpose::Invite),
            other => Err(AccountsError::Internal(format!("stored token purpose `{other}`"))),
        }
    }
}

/// A link that still works: whose it is and what for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Link {
    pub purpose: Purpose,
    pub user: User,
    pub expires_at: i64,
}

/// Inside the caller's transaction: a new link for `user_id`; returns the token (shown
/// or mailed once, never stored).
pub async fn issue(
    conn: &mut AnyConnection,
    user_id: &str,
    purpose: Purpose,
    ttl: i64,
    now: i64,
) -> Result<String, AccountsError> {
    let token = secrets::random_token();
    sqlx::query(
        "INSERT INTO account_tokens (digest, purpose, user_id, expires_at, used_at, created_at)
         VALUES ($1, $2, $3, $4, NULL, $5)",
    )
    .bind(secrets::digest(&token))
    .bind(purpose.as_str())
    .bind(user_id)
    .bind(now.saturating_add(ttl))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// The link a token opens. Unknown: `NotFound`; used or expired: `Invalid` on `link`,
/// saying which.
pub async fn check(db: &Db, token: &str, now: i64) -> Result<Link, AccountsError> {
    let row = sqlx::query("SELECT purpose, user_id, expires_at, used_at FROM account_tokens WHERE digest = $1")
        .bind(secrets::digest(token))
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Err(AccountsError::NotFound("link")) };
    let purpose = Purpose::parse(&row.try_get::<String, _>(0)?)?;
    let expires_at: i64 = row.try_get(2)?;
    if row.try_get::<Option<i64>, _>(3)?.is_some() {
        return Err(AccountsError::invalid("link", "this link was already used; ask for a new one"));
    }
    if now >= expires_at {
        return Err(AccountsError::invalid("link", "this link has expired; ask for a new one"));
    }
    let user = users::get(db, &row.try_get::<String, _>(1)?).await?;
    if user.disabled_at.is_some() {
        return Err(AccountsError::invalid("link", "this account is disabled"));
    }
    Ok(Link { purpose, user, expires_at })
}

/// Sets the password a link allows, once: the link is claimed and the password set in
/// one transaction, and the user's other sessions end.
pub async fn redeem(db: &Db, token: &str, password: &str, now: i64) -> Result<User, AccountsError> {
    let link = check(db, token, now).await?;
    passwords::check_policy(password)?;
    let pw = password.to_string();
    // argon2 is CPU-heavy: keep it off the async executor threads.
    let hash = tokio::task::spawn_blocking(move || passwords::hash(&pw))
        .await
        .map_err(|e| AccountsError::Internal(e.to_string()))??;
    let mut tx = db.begin().await?;
    let claimed =
        sqlx::query("UPDATE account_tokens SET used_at = $1 WHERE digest = $2 AND used_at IS NULL AND expires_at > $1")
            .bind(now)
            .bind(secrets::digest(token))
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if claimed != 1 {
        return Err(AccountsError::invalid("link", "this link was already used; ask for a new one"));
    }
    let user_id = &link.user.id;
    users::store_password(&mut tx, user_id, &hash, now).await?;
    let detail = serde_json::json!({"by": link.purpose.as_str()});
    let actor = Actor::user(user_id);
    let customer = link.user.customer_id.as_deref();
    audit::record(&mut tx, &actor, "user.password_set", user_id, customer, detail, now).await?;
    tx.commit().await?;
    Ok(link.user)
}

/// A reset request for `email` from `client_ip`. Throttled per address (refused with
/// `Throttled`, whether the address exists or not) and per account (quietly: no link);
/// `Ok(None)` for an unknown or disabled address, so the caller answers alike.
pub async fn request_reset(
    db: &Db,
    email: &str,
    client_ip: &str,
    now: i64,
) -> Result<Option<(User, String)>, AccountsError> {
    let scope = format!("reset:{}", throttle::address_scope(client_ip));
    if let Admission::Refused { retry_after_secs } = throttle::admit(db, &scope, RESETS_PER_ADDRESS, now).await? {
        return Err(AccountsError::Throttled { retry_after_secs });
    }
    let key = email.trim().to_lowercase();
    let user = match users::find_by_email(db, &key).await {
        Ok(u) if u.disabled_at.is_none() => u,
        Ok(_) | Err(AccountsError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let account = format!("reset:{}", throttle::account_scope(&key));
    if let Admission::Refused { .. } = throttle::admit(db, &account, RESETS_PER_ACCOUNT, now).await? {
        tracing::warn!(user = %user.id, "password reset mails to this account are throttled");
        return Ok(None);
    }
    let mut tx = db.begin().await?;
    let token = issue(&mut tx, &user.id, Purpose::Reset, RESET_TTL, now).await?;
    tx.commit().await?;
    Ok(Some((user, token)))
}
