//! The words of admission, shared by the paths that decide it ([`crate::limits`] on
//! SQLite and per call, [`crate::roundtrip`] on PostgreSQL, [`crate::leases`] for slices)
//! so none of them needs another's module for its types: caps, budgets, reservations,
//! refusals and the lease times of what a process holds in the database.

use j1msky_core::clock::SECOND;
use j1msky_core::Money;
use j1msky_db::DbError;

/// One clock hour, in microseconds.
pub const HOUR: i64 = 3600 * SECOND;

/// How long a reservation lease in the database lasts without renewal. A live owner
/// renews its leases every [`RESERVATION_RENEW_EVERY`], so a long call keeps its
/// reservation; a dead owner's leases run out within this.
pub const RESERVATION_TTL: i64 = 2 * 60 * SECOND;
/// How often a live process renews its reservation leases (a quarter of the lease, so
/// three renewals can be missed before another process may release them).
pub const RESERVATION_RENEW_EVERY: i64 = 30 * SECOND;

/// The business's own budget of the day, shared by every call.
pub const BUSINESS_DAY: &str = "business:day";

/// A cap to respect: at most `cap` requests per clock hour in `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    pub scope: String,
    pub cap: i64,
}

/// A budget window to reserve from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub scope: String,
    pub window_start: i64,
    pub window_end: i64,
    pub cap: Money,
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("hourly cap reached for {scope} ({cap} requests/hour); retry in {retry_after_secs} s")]
    Cap { scope: String, cap: i64, retry_after_secs: u64 },
    #[error("budget exhausted for {scope}: {cap} cap, {committed} committed, this request may cost up to {asked}")]
    Budget { scope: String, cap: Money, committed: Money, asked: Money, retry_after_secs: u64 },
    /// The cost ledger cannot be written: calls wait until it can, so a crash meanwhile
    /// cannot lose more than a bounded number of ledger rows.
    #[error("the cost ledger is not being written ({unflushed} rows waiting); calls are paused until it is")]
    Backlog { unflushed: usize },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for LimitError {
    fn from(e: sqlx::Error) -> Self {
        LimitError::Db(DbError::Sqlx(e))
    }
}

/// A held admission: the budget reserved for one request, to settle after the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Its rows in `budget_reservations` (empty when limits are held in memory).
    pub id: String,
    /// The budget windows reserved per call (those not taken from a slice).
    pub budgets: Vec<(String, i64)>,
    pub amount: Money,
    /// The parts taken from this process's slices of shared limits ([`crate::leases`]).
    pub leased: Vec<Leased>,
}

/// What a slice is cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseKind {
    /// An hourly cap's counter (`usage_counters`): calls.
    Cap,
    /// A budget window (`budget_windows`): micro-USD.
    Budget,
}

impl LeaseKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LeaseKind::Cap => "cap",
            LeaseKind::Budget => "budget",
        }
    }
}

/// The part of one call's admission taken from a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub kind: LeaseKind,
    pub scope: String,
    pub window_start: i64,
    /// The lease (`limit_leases.id`) it was taken from.
    pub lease: String,
    /// Calls (a cap) or micro-USD (a budget).
    pub amount: i64,
}
