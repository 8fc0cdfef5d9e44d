//! Users: operators run the business; owners and members act for one customer.

use j1msky_core::events::{UserCreated, UserLoggedIn};
use serde::Serialize;
use sqlx::Row;

use crate::{passwords, throttle, AccountsError, Email};
use j1msky_audit::{audit, Actor};
use j1msky_core::vocab::UserRole;
use j1msky_db::{outbox, Db};

/// A user as shown (never with the password hash).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: UserRole,
    pub customer_id: Option<String>,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    pub disabled_at: Option<i64>,
}

/// What it takes to add a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub password: String,
    pub role: UserRole,
    pub customer_id: Option<String>,
}

const COLUMNS: &str = "id, email, display_name, role, customer_id, created_at, last_login_at, disabled_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<User, AccountsError> {
    let role: String = r.try_get(3)?;
    Ok(User {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        display_name: r.try_get(2)?,
        role: role.parse().map_err(|e: j1msky_core::vocab::UnknownWord| AccountsError::Internal(e.to_string()))?,
        customer_id: r.try_get(4)?,
        created_at: r.try_get(5)?,
        last_login_at: r.try_get(6)?,
        disabled_at: r.try_get(7)?,
    })
}

/// Adds a user; the email must be new (case-insensitively).
pub async fn create(db: &Db, actor: &Actor, input: NewUser, now: i64) -> Result<User, AccountsError> {
    let prepared = prepare(input, now)?;
    let mut tx = db.begin().await?;
    // Checked in the insert's transaction; a direct read (not customers::get) because
    // customers creates owners through this module.
    if let Some(cid) = prepared.user.customer_id.as_deref() {
        let found = sqlx::query("SELECT 1 FROM customers WHERE id = $1").bind(cid).fetch_optional(&mut *tx).await?;
        if found.is_none() {
            return Err(AccountsError::invalid("customer", format!("no customer `{cid}`")));
        }
    }
    let user = insert(&mut tx, db.backend(), actor, prepared, now).await?;
    tx.commit().await?;
    Ok(user)
}

/// A checked user, ready to insert.
pub(crate) struct Prepared {
    user: User,
    hash: String,
    email_key: String,
}

fn check_role(input: &NewUser) -> Result<(), AccountsError> {
    match (input.role.belongs_to_customer(), input.customer_id.as_deref()) {
        (true, None) => {
            Err(AccountsError::invalid("customer", format!("a {} belongs to a customer: name one", input.role)))
        }
        (false, Some(_)) => Err(AccountsError::invalid("customer", "an operator belongs to no customer")),
        _ => Ok(()),
    }
}

/// Checks a new user's email, password and role (not that its customer exists).
pub(crate) fn prepare(input: NewUser, now: i64) -> Result<Prepared, AccountsError> {
    let email = Email::parse(&input.email)?;
    passwords::check_policy(&input.password)?;
    check_role(&input)?;
    let hash = passwords::hash(&input.password)?;
    let user = User {
        id: j1msky_core::ids::new_id("usr"),
        email: email.as_str().to_string(),
        display_name: input.display_name.trim().to_string(),
        role: input.role,
        customer_id: input.customer_id,
        created_at: now,
        last_login_at: None,
        disabled_at: None,
    };
    Ok(Prepared { user, hash, email_key: email.key() })
}

/// Inserts a prepared user inside the caller's transaction, audited, with a
/// `user.created` event; a taken email is a conflict.
pub(crate) async fn insert(
    conn: &mut sqlx::AnyConnection,
    backend: j1msky_db::Backend,
    actor: &Actor,
    prepared: Prepared,
    now: i64,
) -> Result<User, AccountsError> {
    let Prepared { user, hash, email_key } = prepared;
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, email_lower, display_name, password_hash, role, customer_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&email_key)
    .bind(&user.display_name)
    .bind(&hash)
    .bind(user.role.as_str())
    .bind(&user.customer_id)
    .bind(now)
    .execute(&mut *conn)
    .await;
    if let Err(e) = inserted {
        return Err(if j1msky_db::is_unique_violation(&e) {
            AccountsError::Conflict(format!("a user with email {} already exists", user.email))
        } else {
            e.into()
        });
    }
    let detail = serde_json::json!({"email": user.email, "role": user.role});
    audit::record(conn, actor, "user.created", &user.id, user.customer_id.as_deref(), detail.clone(), now).await?;
    let event = UserCreated { user_id: user.id.clone(), role: user.role };
    outbox::emit_typed(conn, backend, event, user.customer_id.as_deref(), now).await?;
    Ok(user)
}

/// One user by id.
pub async fn get(db: &Db, id: &str) -> Result<User, AccountsError> {
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = $1")).bind(id).fetch_optional(db.pool()).await?;
    row.as_ref().map(from_row).unwrap_or(Err(AccountsError::NotFound("user")))
}

/// One user by email (any case).
pub async fn find_by_email(db: &Db, email: &str) -> Result<User, AccountsError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE email_lower = $1"))
        .bind(email.trim().to_lowercase())
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).unwrap_or(Err(AccountsError::NotFound("user")))
}

/// Users, optionally of one customer, oldest first.
pub async fn list(db: &Db, customer_id: Option<&str>) -> Result<Vec<User>, AccountsError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM users WHERE ($1 IS NULL OR customer_id = $1) ORDER BY created_at, id"
    ))
    .bind(customer_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// The operators who can sign in (not disabled), oldest first: who operator mail goes to.
pub async fn active_operators(db: &Db) -> Result<Vec<User>, AccountsError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM users WHERE role = 'operator' AND disabled_at IS NULL ORDER BY created_at, id"
    ))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Sets a new password and ends the user's sessions.
pub async fn set_password(
    db: &Db,
    actor: &Actor,
    user_id: &str,
    password: &str,
    now: i64,
) -> Result<(), AccountsError> {
    passwords::check_policy(password)?;
    let user = get(db, user_id).await?;
    let hash = passwords::hash(password)?;
    let mut tx = db.begin().await?;
    store_password(&mut tx, user_id, &hash, now).await?;
    audit::record(
        &mut tx,
        actor,
        "user.password_set",
        user_id,
        user.customer_id.as_deref(),
        serde_json::json!({}),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Inside the caller's transaction: the user's new password hash, and everything the old
/// password let someone keep ends with it: sessions, every unused one-time link
/// (`tokens`: a reset link or an invite sent earlier, maybe to a mailbox someone else
/// reads, must not set another one afterwards) and the known browsers (`devices`: one
/// that logged in with the old password must not keep guessing the new one on a count
/// of its own). Both ways of setting a password (here and a link's) go through it.
pub(crate) async fn store_password(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    hash: &str,
    now: i64,
) -> Result<(), AccountsError> {
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("UPDATE account_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    crate::devices::forget_all(conn, user_id).await
}

/// A successful login: the user, and the token its browser keeps as a known device
/// ([`crate::devices`]).
#[derive(Debug, Clone)]
pub struct Login {
    pub user: User,
    pub device: String,
}

/// Checks an email and password, with throttling per account and per client
/// address. `device` is the known-browser token the client presented, if any: a live one
/// of this account is throttled on its own count instead of the account's. On success
/// records the login time and a `user.logged_in` event.
pub async fn authenticate(
    db: &Db,
    email: &str,
    password: &str,
    client_ip: &str,
    device: Option<&str>,
    now: i64,
) -> Result<Login, AccountsError> {
    use throttle::Admission;
    let key = email.trim().to_lowercase();
    let known = match device {
        Some(token) => crate::devices::recognised(db, token, &key, now).await?.map(|hash| (token, hash)),
        None => None,
    };
    // The account's lock is everyone's but its known browsers': each of those has a
    // count of its own, so failures from elsewhere cannot lock the owner out. A browser
    // whose own count is spent is forgotten and counts with everyone from then on.
    let mut device_scope = None;
    if let Some((token, hash)) = known {
        let scope = throttle::device_scope(&hash);
        match throttle::admit(db, &scope, throttle::PER_ACCOUNT, now).await? {
            Admission::Admitted => device_scope = Some((token, hash, scope)),
            Admission::Refused { .. } => crate::devices::forget(db, &hash).await?,
        }
    }
    let address_scope = throttle::address_scope(client_ip);
    // Every attempt is counted before the password is checked, so a parallel burst
    // gets no more checks than the limits allow.
    let address = throttle::admit(db, &address_scope, throttle::PER_ADDRESS, now).await?;
    let pair_scope = match address {
        Admission::Admitted => None,
        // A slowed-down address still has one try at each account, so the people behind
        // it are not locked out of their own accounts by someone else there.
        Admission::Refused { .. } => {
            // ... within a budget of such tries for the whole address.
            let slowed = throttle::slowed_address_scope(client_ip);
            if let Admission::Refused { retry_after_secs } =
                throttle::admit(db, &slowed, throttle::PER_SLOWED_ADDRESS, now).await?
            {
                return Err(AccountsError::Throttled { retry_after_secs });
            }
            let scope = throttle::address_account_scope(client_ip, &key);
            if let Admission::Refused { retry_after_secs } =
                throttle::admit(db, &scope, throttle::PER_ADDRESS_ACCOUNT, now).await?
            {
                return Err(AccountsError::Throttled { retry_after_secs });
            }
            Some(scope)
        }
    };
    let account_scope = match &device_scope {
        Some((_, _, scope)) => scope.clone(),
        None => {
            let scope = throttle::account_scope(&key);
            if let Admission::Refused { retry_after_secs } =
                throttle::admit(db, &scope, throttle::PER_ACCOUNT, now).await?
            {
                return Err(AccountsError::Throttled { retry_after_secs });
            }
            scope
        }
    };
    let row = sqlx::query(&format!("SELECT {COLUMNS}, password_hash FROM users WHERE email_lower = $1"))
        .bind(&key)
        .fetch_optional(db.pool())
        .await?;
    let (user, hash) = match &row {
        Some(r) => (Some(from_row(r)?), r.try_get::<String, _>(8)?),
        None => (None, passwords::decoy_hash().to_string()),
    };
    let password = password.to_string();
    // argon2 is CPU-heavy: keep it off the async executor threads.
    let matches = tokio::task::spawn_blocking(move || passwords::verify(&password, &hash)).await.unwrap_or(false);
    let user = match user {
        Some(u) if matches && u.disabled_at.is_none() => u,
        // The failure is already counted.
        _ => return Err(AccountsError::BadCredentials),
    };
    throttle::clear(db, &account_scope).await?;
    match &pair_scope {
        Some(scope) => {
            throttle::clear(db, scope).await?;
            let slowed = throttle::slowed_address_scope(client_ip);
            throttle::refund(db, &slowed, throttle::PER_SLOWED_ADDRESS).await?;
        }
        None => throttle::refund(db, &address_scope, throttle::PER_ADDRESS).await?,
    }
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2").bind(now).bind(&user.id).execute(&mut *tx).await?;
    let device =
        crate::devices::remember(&mut tx, &user.id, device_scope.as_ref().map(|(t, h, _)| (*t, h.as_str())), now)
            .await?;
    let event = UserLoggedIn { user_id: user.id.clone() };
    outbox::emit_typed(&mut tx, db.backend(), event, user.customer_id.as_deref(), now).await?;
    tx.commit().await?;
    Ok(Login { user: User { last_login_at: Some(now), ..user }, device })
}
