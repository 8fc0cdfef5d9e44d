//! Each process follows the version in force: a cheap poll of the newest version number,
//! and a swap of its [`LiveCatalogue`] when it changed. A poll of one indexed row works
//! the same on both engines and needs no second notification channel.

use std::time::Duration;

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_db::Db;

use super::{get, validate, versions::active_version, ConfigError};

/// Swaps `live` to the version in force when it is another; returns the version now
/// served. A stored text this binary cannot read (written by a newer one) is refused
/// and the catalogue in hand kept.
pub async fn refresh(db: &Db, live: &LiveCatalogue) -> Result<Option<i64>, ConfigError> {
    let Some(newest) = active_version(db).await? else { return Ok(live.version()) };
    if live.version() == Some(newest) {
        return Ok(Some(newest));
    }
    let stored = get(db, newest).await?;
    let catalogue = validate(&stored.body, None)?;
    live.swap(catalogue, newest);
    tracing::info!(version = newest, reason = %stored.meta.reason, by = %stored.meta.created_by, "catalogue version now in force");
    Ok(Some(newest))
}

/// Refreshes `live` every `every` until `stop`.
pub async fn follow(db: Db, live: LiveCatalogue, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        match refresh(&db, &live).await {
            Ok(_) => failing = false,
            // Logged once per run of failures, not every second.
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "cannot follow the catalogue version in force; serving the one in hand");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}
