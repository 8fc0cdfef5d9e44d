//! API keys: shown once at creation, stored as a digest, with a visible prefix,
//! a name, the last time used, and revocation.

use serde::Serialize;
use sqlx::Row;

use crate::secrets::{digest, random_token};
use crate::AccountsError;
use j1msky_audit::{audit, Actor};
use j1msky_core::clock::SECOND;
use j1msky_db::invalidation::Topic;
use j1msky_db::Db;

/// Every key starts with this, so leaked keys are recognisable.
pub const KEY_PREFIX: &str = "jk_";
/// Characters of the key shown in lists (the prefix and a few more).
const VISIBLE: usize = 11;
/// `last_used_at` is written at most this often per key, to keep requests cheap.
const USE_RESOLUTION: i64 = 60 * SECOND;

/// A key as listed (never with its secret).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub customer_id: String,
    pub name: String,
    pub prefix: String,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Who a valid key speaks for.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyAuth {
    pub key_id: String,
    pub customer_id: String,
}

const COLUMNS: &str = "id, customer_id, name, prefix, created_by, created_at, last_used_at, revoked_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<ApiKey, AccountsError> {
    Ok(ApiKey {
        id: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        name: r.try_get(2)?,
        prefix: r.try_get(3)?,
        created_by: r.try_get(4)?,
        created_at: r.try_get(5)?,
        last_used_at: r.try_get(6)?,
        revoked_at: r.try_get(7)?,
    })
}

/// Creates a key for a customer; returns it and the secret, which is never shown again.
pub async fn create(
    db: &Db,
    actor: &Actor,
    customer_id: &str,
    name: &str,
    now: i64,
) -> Result<(ApiKey, String), AccountsError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AccountsError::invalid("name", "is required (at most 100 characters)"));
    }
    crate::customers::get(db, customer_id).await?;
    let secret = format!("{KEY_PREFIX}{}", random_token());
    let key = ApiKey {
        id: j1msky_core::ids::new_id("key"),
        customer_id: customer_id.to_string(),
        name: name.to_string(),
        prefix: secret[..VISIBLE].to_string(),
        created_by: Some(actor.as_str().to_string()),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO api_keys (id, customer_id, created_by, name, prefix, key_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key.id)
    .bind(&key.customer_id)
    .bind(&key.created_by)
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(digest(&secret))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        actor,
        "api_key.created",
        &key.id,
        Some(customer_id),
        serde_json::json!({"name": key.name, "prefix": key.prefix}),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok((key, secret))
}

/// A customer's keys, newest first (revoked ones included, marked).
pub async fn list(db: &Db, customer_id: &str) -> Result<Vec<ApiKey>, AccountsError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE customer_id = $1 ORDER BY created_at DESC, id DESC"
    ))
    .bind(customer_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Revokes a key. With `customer_scope` the key must belong to that customer
/// (another customer's key answers NotFound); without it (the operator) any key.
pub async fn revoke(
    db: &Db,
    actor: &Actor,
    key_id: &str,
    customer_scope: Option<&str>,
    now: i64,
) -> Result<ApiKey, AccountsError> {
    let mut tx = db.begin().await?;
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND ($2 IS NULL OR customer_id = $2)"))
            .bind(key_id)
            .bind(customer_scope)
            .fetch_optional(&mut *tx)
            .await?;
    let mut key = match row {
        Some(r) => from_row(&r)?,
        None => return Err(AccountsError::NotFound("API key")),
    };
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2").bind(now).bind(key_id).execute(&mut *tx).await?;
    audit::record(
        &mut tx,
        actor,
        "api_key.revoked",
        key_id,
        Some(&key.customer_id),
        serde_json::json!({"name": key.name, "prefix": key.prefix}),
        now,
    )
    .await?;
    tx.commit().await?;
    REVOCATIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    db.invalidations().bump(Topic::Keys);
    key.revoked_at = Some(now);
    Ok(key)
}

/// The customer a presented key speaks for; None for unknown or revoked keys.
pub async fn authenticate(db: &Db, presented: &str, now: i64) -> Result<Option<KeyAuth>, AccountsError> {
    if !presented.starts_with(KEY_PREFIX) || presented.len() > 200 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT id, customer_id, revoked_at, last_used_at FROM api_keys WHERE key_hash = $1")
        .bind(digest(presented))
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let revoked: Option<i64> = row.try_get(2)?;
    if revoked.is_some() {
        return Ok(None);
    }
    let auth = KeyAuth { key_id: row.try_get(0)?, customer_id: row.try_get(1)? };
    let last_used: Option<i64> = row.try_get(3)?;
    if last_used.is_none_or(|t| now - t >= USE_RESOLUTION) {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&auth.key_id)
            .execute(db.pool())
            .await?;
    }
    Ok(Some(auth))
}

/// Revocations made by this process. Every [`KeyCache`] trusts only entries cached since
/// the last one, so a revocation through any path (API, dashboard, a domain call) stops
/// the key at once without its caller having to know a cache exists.
static REVOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long a process trusts a key it has checked. A key revoked through this process
/// stops at once; revoked by another process, as soon as PostgreSQL's notification
/// arrives ([`j1msky_db::invalidation`]), and without one (the CLI beside a SQLite
/// server, a lost listener) within this time.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Valid keys recently checked, so an API request does not query the key table each time.
/// Only valid keys are kept; unknown keys always go to the database.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, Entry>>,
}

/// When a key was found valid, and the revocations known (here and announced) by then.
type Entry = (std::time::Instant, u64, KeyAuth);

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`authenticate`] through the cache.
    pub async fn authenticate(&self, db: &Db, presented: &str, now: i64) -> Result<Option<KeyAuth>, AccountsError> {
        if !presented.starts_with(KEY_PREFIX) || presented.len() > 200 {
            return Ok(None);
        }
        let hash = digest(presented);
        // Both counters only grow, so their sum changes whenever either does.
        let revocations =
            REVOCATIONS.load(std::sync::atomic::Ordering::SeqCst) + db.invalidations().generation(Topic::Keys);
        let cached = self
            .lock()
            .get(&hash)
            .filter(|(at, seen, _)| at.elapsed() < KEY_CACHE_TTL && *seen == revocations)
            .map(|(_, _, a)| a.clone());
        if let Some(auth) = cached {
            crate::activity::mark_active(db, &auth.customer_id, crate::activity::Source::ApiKey, now).await;
            return Ok(Some(auth));
        }
        let auth = authenticate(db, presented, now).await?;
        if let Some(a) = &auth {
            crate::activity::mark_active(db, &a.customer_id, crate::activity::Source::ApiKey, now).await;
        }
        let mut entries = self.lock();
        match &auth {
            Some(a) => {
                if entries.len() > 100_000 {
                    entries.clear();
                }
                entries.insert(hash, (std::time::Instant::now(), revocations, a.clone()));
            }
            None => {
                entries.remove(&hash);
            }
        }
        Ok(auth)
    }
}
