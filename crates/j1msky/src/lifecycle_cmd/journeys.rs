//! `j1msky lifecycle journeys|enrollments|preview|send-test`.

use std::sync::Arc;

use clap::Subcommand;

use crate::context::{catalogue_in_force, open_db, Globals};
use crate::{output, Failure};

#[derive(Debug, Subcommand)]
pub enum JourneysCommand {
    /// The journeys of the catalogue, with enrollments counted per step and state.
    Journeys,
    /// Enrollments, newest first (one customer's with --customer).
    Enrollments {
        #[arg(long)]
        customer: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Renders a template with the sample context, or a customer's own.
    Preview {
        template: String,
        #[arg(long)]
        customer: Option<String>,
    },
    /// Sends a template to an address (marked as a test; nothing is queued) through
    /// --smtp-url or --mail-dir (the same flags and variables as `serve`).
    SendTest {
        template: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        customer: Option<String>,
        #[command(flatten)]
        mail: crate::serve::MailArgs,
    },
}

/// The lifecycle context the CLI runs with. Mail leaves through `transport`.
pub(super) async fn ctx(
    g: &Globals,
    transport: Arc<dyn j1msky_lifecycle::transport::Transport>,
) -> Result<j1msky_lifecycle::Ctx, Failure> {
    let db = open_db(g).await?;
    let catalogue = Arc::new(catalogue_in_force(g, &db).await?).into();
    Ok(j1msky_lifecycle::Ctx {
        db,
        catalogue,
        clock: Arc::new(j1msky_core::clock::SystemClock),
        transport,
        stripe: None,
        base_url: std::env::var("J1MSKY_BASE_URL").unwrap_or_else(|_| "http://localhost:8080".into()),
        templates_dir: crate::context::templates_dir(g),
    })
}

pub async fn run(g: &Globals, cmd: JourneysCommand) -> Result<(), Failure> {
    let recording: Arc<dyn j1msky_lifecycle::transport::Transport> =
        Arc::new(j1msky_lifecycle::transport::Recording::default());
    match cmd {
        JourneysCommand::Journeys => {
            let c = ctx(g, recording).await?;
            let counts = j1msky_lifecycle::journeys::counts(&c.db).await.map_err(anyhow::Error::from)?;
            if g.json {
                let journeys: Vec<_> = c
                    .catalogue
                    .lifecycle
                    .journeys
                    .iter()
                    .map(|(id, j)| {
                        serde_json::json!({
                            "id": id, "version": j.version, "entry": j.entry.on, "exit_on": j.exit_on,
                            "steps": j.steps.iter().map(|s| s.id()).collect::<Vec<_>>(),
                            "enrollments": counts.iter().filter(|n| &n.journey == id).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                output::json(&journeys);
                return Ok(());
            }
            let rows = c
                .catalogue
                .lifecycle
                .journeys
                .iter()
                .map(|(id, j)| {
                    let here: Vec<String> = counts
                        .iter()
                        .filter(|n| &n.journey == id)
                        .map(|n| format!("{} {}: {}", n.state, n.step.as_deref().unwrap_or("-"), n.count))
                        .collect();
                    vec![
                        id.clone(),
                        j.version.to_string(),
                        j.entry.on.clone(),
                        j.steps.len().to_string(),
                        here.join(", "),
                    ]
                })
                .collect();
            println!("{}", output::table(&["journey", "version", "entry", "steps", "enrollments"], rows));
            Ok(())
        }
        JourneysCommand::Enrollments { customer, limit } => {
            let c = ctx(g, recording).await?;
            let list = j1msky_lifecycle::journeys::list(&c.db, customer.as_deref(), limit.clamp(1, 10_000))
                .await
                .map_err(anyhow::Error::from)?;
            output::list(g, &list, &["id", "customer", "journey", "v", "state", "step", "started", "ended"], |e| {
                vec![
                    e.id.clone(),
                    e.customer_id.clone(),
                    e.journey.clone(),
                    e.version.to_string(),
                    e.state.clone(),
                    output::opt(e.current_step.clone()),
                    output::when(Some(e.started_at)),
                    output::when(e.ended_at),
                ]
            });
            Ok(())
        }
        JourneysCommand::Preview { template, customer } => {
            let c = ctx(g, recording).await?;
            let r = j1msky_lifecycle::journeys::preview::preview(&c, &template, customer.as_deref())
                .await
                .map_err(|e| Failure { code: crate::EXIT_INVALID, error: e.into() })?;
            if g.json {
                output::json(&serde_json::json!({"subject": r.subject, "text": r.text, "html": r.html}));
            } else {
                println!("Subject: {}\n\n{}\n--- html ---\n{}", r.subject, r.text, r.html);
            }
            Ok(())
        }
        JourneysCommand::SendTest { template, to, customer, mail } => {
            let Some(transport) = mail.transport()? else {
                return Err(Failure {
                    code: crate::EXIT_INVALID,
                    error: anyhow::anyhow!(
                        "send-test needs a transport: --smtp-url URL or --mail-dir DIR (or J1MSKY_SMTP_URL / J1MSKY_MAIL_DIR)"
                    ),
                });
            };
            let c = ctx(g, transport).await?;
            let id = j1msky_lifecycle::journeys::preview::send_test(&c, &template, &to, customer.as_deref())
                .await
                .map_err(|e| Failure { code: crate::EXIT_INVALID, error: e.into() })?;
            if g.json {
                output::json(&serde_json::json!({"template": template, "to": to, "message_id": id}));
            } else {
                println!("sent {template} to {to}: Message-ID <{id}>");
            }
            Ok(())
        }
    }
}
