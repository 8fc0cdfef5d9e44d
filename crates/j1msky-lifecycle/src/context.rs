//! What every part of the lifecycle engine runs with.

use std::sync::Arc;

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_core::Clock;
use j1msky_db::Db;

use crate::transport::Transport;

/// The database, catalogue, clock, mail transport and (when billing is configured)
/// the Stripe client, shared by consumers, timers, pages and the CLI.
#[derive(Clone)]
pub struct Ctx {
    pub db: Db,
    /// The catalogue in force: follows applied versions, so no restart is needed.
    pub catalogue: LiveCatalogue,
    pub clock: Arc<dyn Clock>,
    pub transport: Arc<dyn Transport>,
    pub stripe: Option<j1msky_billing::Stripe>,
    /// The public base URL links in mail point to (`https://app.example.com`).
    pub base_url: String,
    /// Where operator-editable templates live (`config/templates`).
    pub templates_dir: std::path::PathBuf,
}
