//! Options every command shares, and opening what they point at.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, CatalogueError, LiveCatalogue, SHIPPED};
use j1msky_core::{Clock, SystemClock};
use j1msky_db::Db;

use crate::Failure;

/// The SQLite database used when no URL is given.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/j1msky.db";

/// Global options.
#[derive(Debug, Clone, Args)]
pub struct Globals {
    /// Database URL: `sqlite://path/to/file.db` or `postgres://user:pass@host/db`.
    #[arg(long, global = true, env = "J1MSKY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The business catalogue (plans, teams, models, routing, Stripe settings).
    #[arg(long, global = true, env = "J1MSKY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, global = true, env = "J1MSKY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Starts structured logging to stderr (`RUST_LOG` filters; default `info`).
pub fn init_logging(g: &Globals) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match g.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests in one process) keeps the first subscriber.
    drop(result);
}

/// Connects to the configured database and applies pending migrations.
pub async fn open_db(g: &Globals) -> Result<Db, Failure> {
    let db = Db::connect(&g.database_url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(&g.database_url)))?;
    db.migrate().await.context("cannot apply database migrations")?;
    // Keys migration 0049 could not fold in SQL (names beyond ASCII); none left: one probe.
    let filled = j1msky_accounts::customers::fill_search_keys(&db).await.context("cannot fill customer search keys")?;
    if filled > 0 {
        tracing::info!(customers = filled, "customer search keys filled");
    }
    Ok(db)
}

/// The catalogue named by `--config`, else `config/business.json` when it exists, else
/// the shipped copy. An invalid file is an error (exit 2) naming each JSON path.
pub fn load_catalogue(g: &Globals) -> Result<Catalogue, Failure> {
    let (path, explicit) = match &g.config {
        Some(p) => (p.clone(), true),
        None => (Catalogue::default_path(), false),
    };
    if !explicit && !path.exists() {
        tracing::warn!(path = %path.display(), "no catalogue file; using the catalogue shipped with j1msky");
        return Catalogue::from_json_str(SHIPPED).map_err(|e| invalid_catalogue(&path, e));
    }
    Catalogue::load(&path).map_err(|e| invalid_catalogue(&path, e))
}

/// The catalogue a long-running process serves: the version in force in the database
/// (the `--config` file, stored as version 1, on the very first start), in a handle the
/// runtime keeps following (`config apply` and rollbacks reach it without a restart).
pub async fn live_catalogue(g: &Globals, db: &Db) -> Result<LiveCatalogue, Failure> {
    let path = g.config.clone().unwrap_or_else(Catalogue::default_path);
    let text = if g.config.is_none() && !path.exists() {
        SHIPPED.to_string()
    } else {
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let source = path.display().to_string();
    let (catalogue, version) = j1msky_ops::config_history::startup(db, &actor(), &text, &source, now())
        .await
        .map_err(|e| Failure { code: crate::EXIT_INVALID, error: anyhow::anyhow!("catalogue in force: {e}") })?;
    tracing::info!(version, "catalogue version in force");
    Ok(LiveCatalogue::new(catalogue, Some(version)))
}

/// The catalogue an operator command works with: the version in force when one is
/// stored (what the running processes serve), else the `--config` file.
pub async fn catalogue_in_force(g: &Globals, db: &Db) -> Result<Catalogue, Failure> {
    let stored = j1msky_ops::config_history::active(db).await.map_err(|e| Failure::from(anyhow::anyhow!("{e}")))?;
    match stored {
        Some(s) => j1msky_ops::config_history::validate(&s.body, None).map_err(|e| Failure {
            code: crate::EXIT_INVALID,
            error: anyhow::anyhow!("catalogue version {} in force: {e}", s.meta.version),
        }),
        None => load_catalogue(g),
    }
}

fn invalid_catalogue(path: &std::path::Path, e: CatalogueError) -> Failure {
    let code = match e {
        CatalogueError::Invalid(_) => crate::EXIT_INVALID,
        CatalogueError::Io { .. } => 1,
    };
    Failure { code, error: anyhow::anyhow!("{} : {e}", path.display()) }
}

/// Who the audit log says did it: `cli:<login name>`.
/// The operator-editable mail templates: `templates/` next to the catalogue file; when
/// that does not exist (a demo started outside the checkout, with the built-in
/// catalogue), the copy in the source tree this binary was built from.
pub fn templates_dir(g: &Globals) -> PathBuf {
    let catalogue = g.config.clone().unwrap_or_else(Catalogue::default_path);
    let beside = catalogue.parent().map_or_else(|| PathBuf::from("templates"), |d| d.join("templates"));
    if beside.is_dir() {
        return beside;
    }
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates");
    if built.is_dir() {
        return built;
    }
    tracing::warn!(dir = %beside.display(), "no templates directory: lifecycle mail cannot be rendered");
    beside
}

pub fn actor() -> Actor {
    let who = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    Actor(format!("cli:{who}"))
}

/// The current time in unix microseconds.
pub fn now() -> i64 {
    SystemClock.now_micros()
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_hidden_in_database_urls() {
        assert_eq!(super::redact("postgres://app:s3cret@db:5432/j1"), "postgres://app:***@db:5432/j1");
        assert_eq!(super::redact("postgres://app@db/j1"), "postgres://app@db/j1");
        assert_eq!(super::redact("sqlite://data/j1msky.db"), "sqlite://data/j1msky.db");
    }
}
