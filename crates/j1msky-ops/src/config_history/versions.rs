//! Catalogue versions: validate, store, read. The newest row is the catalogue in force.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use j1msky_audit::{audit, Actor};
use j1msky_core::catalogue::{Catalogue, CatalogueError, ConfigIssue};
use j1msky_db::Db;

use super::{check_reason, ConfigError};

/// One stored catalogue version, without its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    pub version: i64,
    pub sha256: String,
    /// Where it came from: the file applied, `rollback to v3`, `first start`.
    pub source: String,
    pub reason: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A stored version with its JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stored {
    #[serde(flatten)]
    pub meta: Version,
    pub body: String,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub version: i64,
    /// The text equals the version in force: nothing was stored.
    pub unchanged: bool,
}

const META: &str = "version, sha256, source, reason, created_at, created_by";
type MetaRow = (i64, String, String, String, i64, String);
type StoredRow = (i64, String, String, String, i64, String, String);

fn meta((version, sha256, source, reason, created_at, created_by): MetaRow) -> Version {
    Version { version, sha256, source, reason, created_at, created_by }
}

fn stored((version, sha256, source, reason, created_at, created_by, body): StoredRow) -> Stored {
    Stored { meta: meta((version, sha256, source, reason, created_at, created_by)), body }
}

/// Checks a catalogue text as `config check` does: the JSON and its rules, and, when
/// `templates` is given, that every template its journeys send renders.
pub fn validate(text: &str, templates: Option<&Path>) -> Result<Catalogue, ConfigError> {
    let catalogue = Catalogue::from_json_str(text).map_err(|e| match e {
        CatalogueError::Invalid(issues) => ConfigError::Invalid(issues),
        e @ CatalogueError::Io { .. } => ConfigError::Invalid(vec![issue(".", e.to_string())]),
    })?;
    if let Some(dir) = templates {
        let problems = j1msky_lifecycle::templates::check(&catalogue, dir);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems.into_iter().map(|(p, m)| issue(&p, m)).collect()));
        }
    }
    Ok(catalogue)
}

fn issue(path: &str, message: impl Into<String>) -> ConfigIssue {
    // ConfigIssue's constructor is the core crate's; its fields are public.
    ConfigIssue { path: path.to_string(), message: message.into() }
}

/// Validates `text` and stores it as the new version in force, audited; a text equal to
/// the version in force stores nothing. A bad text stores nothing and says why.
pub async fn apply(
    db: &Db,
    actor: &Actor,
    text: &str,
    source: &str,
    reason: &str,
    templates: Option<&Path>,
    now: i64,
) -> Result<Applied, ConfigError> {
    let reason = check_reason(reason)?;
    validate(text, templates)?;
    store(db, actor, text, source, reason, now).await
}

/// Stores an already validated text as the next version (unless it is the one in force).
async fn store(
    db: &Db,
    actor: &Actor,
    text: &str,
    source: &str,
    reason: &str,
    now: i64,
) -> Result<Applied, ConfigError> {
    let sha = hex::encode(Sha256::digest(text.as_bytes()));
    let mut tx = db.begin().await?;
    let newest: Option<(i64, String)> =
        sqlx::query_as("SELECT version, sha256 FROM ops_catalogue_versions ORDER BY version DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((version, in_force)) = &newest {
        if *in_force == sha {
            return Ok(Applied { version: *version, unchanged: true });
        }
    }
    let version = newest.map_or(1, |(v, _)| v + 1);
    let inserted =
        sqlx::query(&format!("INSERT INTO ops_catalogue_versions ({META}, body) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
            .bind(version)
            .bind(&sha)
            .bind(source)
            .bind(reason)
            .bind(now)
            .bind(actor.as_str())
            .bind(text)
            .execute(&mut *tx)
            .await;
    if let Err(e) = inserted {
        // Two applies at once both chose this number: the other one won.
        if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
            return Err(ConfigError::Conflict(format!(
                "another catalogue was stored as version {version} at the same moment; nothing was stored, try again"
            )));
        }
        return Err(e.into());
    }
    let detail = serde_json::json!({ "version": version, "sha256": sha, "source": source, "reason": reason });
    audit::record(&mut tx, actor, "config.catalogue_applied", &format!("catalogue v{version}"), None, detail, now)
        .await?;
    tx.commit().await?;
    Ok(Applied { version, unchanged: false })
}

/// The version in force (the newest), with its text.
pub async fn active(db: &Db) -> Result<Option<Stored>, ConfigError> {
    let row: Option<StoredRow> =
        sqlx::query_as(&format!("SELECT {META}, body FROM ops_catalogue_versions ORDER BY version DESC LIMIT 1"))
            .fetch_optional(db.pool())
            .await?;
    Ok(row.map(stored))
}

/// The number of the version in force: what each process polls (one row of the key).
pub async fn active_version(db: &Db) -> Result<Option<i64>, ConfigError> {
    let (newest,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM ops_catalogue_versions").fetch_one(db.pool()).await?;
    Ok(newest)
}

/// One version with its text.
pub async fn get(db: &Db, version: i64) -> Result<Stored, ConfigError> {
    let row: Option<StoredRow> =
        sqlx::query_as(&format!("SELECT {META}, body FROM ops_catalogue_versions WHERE version = $1"))
            .bind(version)
            .fetch_optional(db.pool())
            .await?;
    row.map(stored).ok_or_else(|| ConfigError::NotFound(format!("there is no catalogue version {version}")))
}

/// The versions stored before `before` (none: all), newest first.
pub async fn versions(db: &Db, before: Option<i64>, limit: i64) -> Result<Vec<Version>, ConfigError> {
    let rows: Vec<MetaRow> = sqlx::query_as(&format!(
        "SELECT {META} FROM ops_catalogue_versions WHERE created_at < $1 ORDER BY version DESC LIMIT $2"
    ))
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(meta).collect())
}

/// The catalogue a starting process serves: the stored version in force; on the first
/// start (nothing stored) the file's text, stored as version 1. A file that differs from
/// the version in force is not applied by starting: that is `config apply`'s job, so a
/// process started with an old copy never undoes an operator's change.
pub async fn startup(
    db: &Db,
    actor: &Actor,
    file_text: &str,
    source: &str,
    now: i64,
) -> Result<(Catalogue, i64), ConfigError> {
    if active(db).await?.is_none() {
        validate(file_text, None)?;
        match store(db, actor, file_text, source, "first start: the catalogue file becomes version 1", now).await {
            Ok(_) | Err(ConfigError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let Some(in_force) = active(db).await? else {
        return Err(ConfigError::NotFound("no catalogue version is stored".into()));
    };
    if hex::encode(Sha256::digest(file_text.as_bytes())) != in_force.meta.sha256 {
        tracing::warn!(
            version = in_force.meta.version,
            file = source,
            "the catalogue file differs from the version in force, which is served; `j1msky config apply FILE \
             --reason …` makes the file the new version"
        );
    }
    let catalogue = validate(&in_force.body, None)?;
    Ok((catalogue, in_force.meta.version))
}

/// Stores a copy of an older version's text as the new version in force.
pub(super) async fn restore(
    db: &Db,
    actor: &Actor,
    version: i64,
    reason: &str,
    now: i64,
) -> Result<Applied, ConfigError> {
    let reason = check_reason(reason)?;
    let old = get(db, version).await?;
    // Checked again: the rules may have grown since it was stored.
    validate(&old.body, None)?;
    store(db, actor, &old.body, &format!("rollback to v{version}"), reason, now).await
}
