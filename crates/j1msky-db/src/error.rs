use thiserror::Error;

/// Storage failures.
#[derive(Debug, Error)]
pub enum DbError {
    #[error("database URL `{0}` is not supported: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}
