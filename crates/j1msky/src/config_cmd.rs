//! `j1msky config check [FILE]`, and the configuration history: `apply`, `history`,
//! `diff`, `rollback` (the same `j1msky_ops::config_history` functions as `/admin/config`).

mod history;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use j1msky_core::catalogue::{Catalogue, CatalogueError, TeamAllowance};
use serde_json::json;

use crate::context::Globals;
use crate::{output, Failure, EXIT_INVALID};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a catalogue file (default: --config); exit 0 when valid, 2 when not.
    Check(CheckArgs),
    /// Validate FILE and make it the catalogue version in force for every process (no
    /// restart); a bad file changes nothing and exits 2 with each JSON path and reason.
    Apply(ApplyArgs),
    /// Catalogue versions and settings changes (mode, caps, budget), newest first.
    History(HistoryArgs),
    /// What changed: two catalogue versions path by path, or one settings change (seth_…).
    Diff(DiffArgs),
    /// Make an older catalogue version the new version in force, or undo a settings change.
    Rollback(RollbackArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The catalogue file; templates are checked in `templates/` beside it.
    file: PathBuf,
    /// Why (kept in the history).
    #[arg(long)]
    reason: String,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// `catalogue` for versions only, or a settings key or prefix (`gateway.cap.`).
    #[arg(long)]
    key: Option<String>,
    /// How many entries.
    #[arg(long, default_value_t = 50)]
    limit: i64,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// A catalogue version (3 or v3), or a settings change id (seth_…).
    a: String,
    /// The catalogue version to compare with (default: the one after A).
    b: Option<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// A catalogue version (3 or v3) or a settings change id (seth_…).
    target: String,
    /// Why (kept in the history).
    #[arg(long)]
    reason: String,
    /// Confirm: every process switches to it within a second.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The file to check (default: the --config file).
    file: Option<PathBuf>,
}

pub async fn config(g: &Globals, c: ConfigCommand) -> Result<(), Failure> {
    match c {
        ConfigCommand::Check(args) => check(g, args.file),
        ConfigCommand::Apply(args) => history::apply(g, args.file, &args.reason).await,
        ConfigCommand::History(args) => history::history(g, args.key.as_deref(), args.limit).await,
        ConfigCommand::Diff(args) => history::diff(g, &args.a, args.b.as_deref()).await,
        ConfigCommand::Rollback(args) => history::rollback(g, &args.target, &args.reason, args.yes).await,
    }
}

/// Validates a catalogue file: exit 0 and a summary when valid, exit 2 and every
/// problem (JSON path and reason) when not.
pub fn check(g: &Globals, file: Option<PathBuf>) -> Result<(), Failure> {
    let path = file.or_else(|| g.config.clone()).unwrap_or_else(Catalogue::default_path);
    let catalogue = match Catalogue::load(&path) {
        Ok(c) => c,
        Err(CatalogueError::Invalid(issues)) => {
            if g.json {
                output::json(&json!({ "valid": false, "path": path.display().to_string(), "issues": issues }));
            } else {
                for issue in &issues {
                    println!("{}: {issue}", path.display());
                }
            }
            return Err(Failure {
                code: EXIT_INVALID,
                error: anyhow::anyhow!("{} is not a valid catalogue ({} problem(s))", path.display(), issues.len()),
            });
        }
        Err(e @ CatalogueError::Io { .. }) => return Err(Failure { code: EXIT_INVALID, error: e.into() }),
    };
    // Every template a journey sends must exist next to the catalogue and render.
    let templates = path.parent().map_or_else(|| PathBuf::from("templates"), |d| d.join("templates"));
    let template_issues = j1msky_lifecycle::templates::check(&catalogue, &templates);
    if !template_issues.is_empty() {
        let issues: Vec<_> = template_issues.iter().map(|(p, m)| json!({"path": p, "message": m})).collect();
        if g.json {
            output::json(&json!({ "valid": false, "path": path.display().to_string(), "issues": issues }));
        } else {
            for (p, m) in &template_issues {
                println!("{}: {p}: {m}", path.display());
            }
        }
        return Err(Failure {
            code: EXIT_INVALID,
            error: anyhow::anyhow!(
                "{} names templates that do not render ({} problem(s))",
                path.display(),
                template_issues.len()
            ),
        });
    }
    let missing_env = unset_secrets(&catalogue);
    if g.json {
        output::json(&json!({
            "valid": true,
            "path": path.display().to_string(),
            "plans": catalogue.plans.keys().collect::<Vec<_>>(),
            "teams": catalogue.teams.keys().collect::<Vec<_>>(),
            "models": catalogue.models.keys().collect::<Vec<_>>(),
            "providers": catalogue.providers.keys().collect::<Vec<_>>(),
            "unset_environment": missing_env,
        }));
        return Ok(());
    }
    println!("{} is valid.", path.display());
    let rows = catalogue
        .plans
        .iter()
        .map(|(id, p)| {
            vec![
                id.clone(),
                format!("{}{}", p.monthly_price, if p.price_is_minimum { "+" } else { "" }),
                match p.teams {
                    TeamAllowance::All => "all".into(),
                    TeamAllowance::Choose(n) => format!("choose {n}"),
                },
                output::opt(p.tasks_per_month).replace('-', "unlimited"),
                p.api_calls_per_hour.to_string(),
            ]
        })
        .collect();
    println!("{}", output::table(&["plan", "per month", "teams", "tasks/month", "API calls/hour"], rows));
    let rows = catalogue
        .models
        .iter()
        .map(|(id, m)| {
            vec![
                id.clone(),
                m.provider.clone(),
                m.input_per_mtok.to_string(),
                m.output_per_mtok.to_string(),
                output::opt(m.fallback.as_deref()),
                m.prices_checked.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(&["model", "provider", "in / 1M tok", "out / 1M tok", "fallback", "prices checked"], rows)
    );
    for name in &missing_env {
        println!("note: environment variable {name} is not set here");
    }
    Ok(())
}

/// Names of the secret-holding environment variables that are not set in this shell.
fn unset_secrets(c: &Catalogue) -> Vec<String> {
    let mut names: Vec<String> = c.providers.values().map(|p| p.api_key_env.clone()).collect();
    names.push(c.stripe.secret_key_env.clone());
    names.push(c.stripe.webhook_secret_env.clone());
    names.sort();
    names.dedup();
    names.retain(|n| std::env::var_os(n).is_none());
    names
}
