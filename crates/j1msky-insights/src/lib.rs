//! The operator's numbers (plan §8) and the daily reviews (plan §7). Consumers on the
//! outbox keep rollup tables current; the board, `j1msky kpi` and the CSV exports read
//! the rollups through [`kpis::for_month`]. Definitions live in `docs/KPIS.md`.

use std::sync::Arc;

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_core::Clock;
use j1msky_db::Db;

mod bulk;
pub mod csv;
mod direct;
mod error;
pub mod evening;
pub mod figures;
mod file_rebuild;
pub mod kpis;
mod month;
pub mod morning;
pub mod mrr;
pub mod people;
mod rewrite;
pub mod rollups;
pub mod usage;

pub use error::InsightsError;
pub use month::Month;
pub use rewrite::{Changes, TableChanges};

/// What the insights need.
#[derive(Clone)]
pub struct Ctx {
    pub db: Db,
    /// The catalogue in force: follows applied versions, so no restart is needed.
    pub catalogue: LiveCatalogue,
    pub clock: Arc<dyn Clock>,
}

impl Ctx {
    /// The business's time zone (`business.time_zone`), in which months are counted.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// The month containing the clock's now.
    pub fn this_month(&self) -> Month {
        Month::of(self.tz(), self.clock.now_micros())
    }
}
