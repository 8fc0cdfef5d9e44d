//! Storage for j1msky: one handle over SQLite (embedded default) or PostgreSQL,
//! migrations, write transactions, leased jobs and the event outbox.

pub mod consumers;
mod db;
mod error;
pub mod hourly;
pub mod invalidation;
pub mod jobs;
pub mod outbox;
/// Test fixtures (fresh databases on either engine); only for other crates' tests,
/// through `features = ["testing"]` in their `[dev-dependencies]`.
#[cfg(feature = "testing")]
pub mod testing;
pub mod timers;

pub use db::{Backend, Db, Tx, DEFAULT_SQLITE_PATH};
pub use error::DbError;
pub use sqlx::{AnyConnection, Row};

/// Is this error a unique-constraint violation (on either engine)?
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation)
                || db.code().is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
        }
        _ => false,
    }
}
