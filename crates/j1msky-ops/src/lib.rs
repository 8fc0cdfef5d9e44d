//! Running the business day to day (plan §2, §7, §9, §10): backups that are proven to
//! restore, the history of every configuration change, alerts delivered to people, the
//! morning and evening reports by mail, and the road from a lead to a trial. Tables
//! named `ops_…` belong to this crate.

use std::sync::Arc;

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_core::Clock;
use j1msky_db::Db;

pub mod backup;
pub mod config_history;
pub mod leads;
pub mod notify;
pub mod reports;
pub mod timers;

/// What the operations need.
#[derive(Clone)]
pub struct Ctx {
    pub db: Db,
    /// The catalogue in force: follows applied versions, so no restart is needed.
    pub catalogue: LiveCatalogue,
    pub clock: Arc<dyn Clock>,
}
