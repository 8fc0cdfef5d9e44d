//! The business catalogue (`config/business.json`): plans, teams, models, providers,
//! routing and Stripe settings, with validation that names the JSON path of each error.

pub mod alerts;
pub mod lifecycle;
mod live;
mod types;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use live::LiveCatalogue;
pub use types::*;

/// The catalogue shipped with j1msky: the business plan's figures.
pub const SHIPPED: &str = include_str!("../../../../config/business.json");

/// One thing wrong with a catalogue file, located by its JSON path (`plans.starter.teams`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a catalogue could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}", render_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl CatalogueError {
    /// The located problems (empty for an I/O error).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            CatalogueError::Invalid(issues) => issues,
            CatalogueError::Io { .. } => &[],
        }
    }
}

fn render_issues(issues: &[ConfigIssue]) -> String {
    let lines: Vec<String> = issues.iter().map(ToString::to_string).collect();
    format!("invalid catalogue ({} problem(s)):\n  {}", issues.len(), lines.join("\n  "))
}

impl Catalogue {
    /// Parses and validates catalogue JSON.
    pub fn from_json_str(text: &str) -> Result<Catalogue, CatalogueError> {
        let raw: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| CatalogueError::Invalid(vec![ConfigIssue::new(".", format!("not valid JSON: {e}"))]))?;
        // Secrets are looked for before the typed parse so that a pasted key is reported
        // as such even where it also breaks the schema.
        let mut issues = validate::literal_secrets(&raw);
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, Catalogue>(&mut de) {
            Ok(catalogue) => {
                issues.extend(validate::semantics(&catalogue));
                if issues.is_empty() {
                    Ok(catalogue)
                } else {
                    Err(CatalogueError::Invalid(issues))
                }
            }
            Err(e) => {
                // An empty path (an unknown key `""` at the top, or the document itself)
                // is the document: every issue names where it is.
                let path = match e.path().to_string() {
                    p if p.is_empty() => ".".to_string(),
                    p => p,
                };
                let message = e.into_inner().to_string();
                issues.push(ConfigIssue::new(path, message));
                Err(CatalogueError::Invalid(issues))
            }
        }
    }

    /// Reads and validates a catalogue file.
    pub fn load(path: &Path) -> Result<Catalogue, CatalogueError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CatalogueError::Io { path: path.to_path_buf(), source })?;
        Catalogue::from_json_str(&text)
    }

    /// `config/business.json` relative to the working directory.
    pub fn default_path() -> PathBuf {
        PathBuf::from("config").join("business.json")
    }

    /// The model a task category is routed to (the default model for unknown categories).
    pub fn model_for_category(&self, category: &str) -> &str {
        self.routing.categories.get(category).map(String::as_str).unwrap_or(&self.routing.default_model)
    }
}
