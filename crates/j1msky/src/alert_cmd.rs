//! `j1msky alert list|ack|resolve`: the operator alerts, and acknowledging ("seen, on
//! it") or resolving ("fixed") one, through the same audit functions as `/admin/alerts`.

use clap::Subcommand;
use j1msky_audit::alerts::{self, AlertRow, Status};

use crate::context::{self, Globals};
use crate::{output, Failure};

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Alerts, newest first, with where each stands (default: the open ones).
    List {
        /// open, acknowledged, resolved or all.
        #[arg(long, default_value = "open")]
        status: String,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Marks an alert acknowledged (audited).
    Ack { id: String },
    /// Marks an alert resolved (audited).
    Resolve { id: String },
}

fn row(a: &AlertRow) -> Vec<String> {
    vec![
        a.id.clone(),
        a.kind.clone(),
        a.status().to_string(),
        output::when(Some(a.created_at)),
        output::opt(a.acknowledged_by.clone().or(a.resolved_by.clone())),
        a.message.clone(),
    ]
}

fn missing(id: &str) -> Failure {
    Failure {
        code: crate::EXIT_INVALID,
        error: anyhow::anyhow!("no alert `{id}` (see `j1msky alert list --status all`)"),
    }
}

pub async fn alert(g: &Globals, c: AlertCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let header = ["id", "kind", "status", "raised", "by", "message"];
    match c {
        AlertCommand::List { status, limit } => {
            let Some(status) = Status::parse(&status) else {
                return Err(Failure {
                    code: crate::EXIT_INVALID,
                    error: anyhow::anyhow!("--status `{status}`: use open, acknowledged, resolved or all"),
                });
            };
            let list = alerts::list(&db, status, limit.clamp(1, 1000)).await?;
            output::list(g, &list, &header, row);
        }
        AlertCommand::Ack { id } => {
            let a =
                alerts::acknowledge(&db, &context::actor(), &id, context::now()).await?.ok_or_else(|| missing(&id))?;
            output::done(g, &format!("alert {id} is {}", a.status()), serde_json::json!(a));
        }
        AlertCommand::Resolve { id } => {
            let a = alerts::resolve(&db, &context::actor(), &id, context::now()).await?.ok_or_else(|| missing(&id))?;
            output::done(g, &format!("alert {id} is {}", a.status()), serde_json::json!(a));
        }
    }
    Ok(())
}
