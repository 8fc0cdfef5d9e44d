//! `j1msky lifecycle`: messages and suppressions.

use clap::Subcommand;
use j1msky_lifecycle::delivery::{self, SuppressReason};

use crate::context::{self, Globals};
use crate::{output, Failure};

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// Lifecycle mail, newest first: its state, recipient and last error.
    Messages {
        /// Only this state (queued, sending, sent, failed, unknown, stale, suppressed, deferred).
        #[arg(long)]
        state: Option<String>,
        /// Only this customer's messages.
        #[arg(long)]
        customer: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Stops all lifecycle mail to an address (or, with --remove, allows it again);
    /// without an address, lists the suppressed addresses.
    Suppress {
        email: Option<String>,
        #[arg(long)]
        remove: bool,
        /// Why (kept with the entry and in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn fail(e: j1msky_lifecycle::LifecycleError) -> Failure {
    let code = match e {
        j1msky_lifecycle::LifecycleError::Invalid { .. } => crate::EXIT_INVALID,
        _ => 1,
    };
    Failure { code, error: anyhow::anyhow!(e) }
}

pub async fn run(g: &Globals, cmd: MessagesCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    match cmd {
        MessagesCommand::Messages { state, customer, limit } => {
            let list = delivery::list(&db, state.as_deref(), customer.as_deref(), limit).await.map_err(fail)?;
            output::list(
                g,
                &list,
                &["id", "customer", "step", "category", "state", "to", "not before", "sent", "error"],
                |m| {
                    vec![
                        m.id.clone(),
                        m.customer_id.clone(),
                        format!("{}/{}", m.source, m.step),
                        m.category.clone(),
                        m.state.clone(),
                        output::opt(m.to_addr.clone()),
                        output::when(Some(m.not_before)),
                        output::when(m.sent_at),
                        output::opt(m.last_error.clone()),
                    ]
                },
            );
        }
        MessagesCommand::Suppress { email: None, .. } => {
            let list = delivery::suppressions(&db, 1000).await.map_err(fail)?;
            output::list(g, &list, &["email", "reason", "detail", "at"], |s| {
                vec![s.email.clone(), s.reason.clone(), s.detail.clone(), output::when(Some(s.at))]
            });
        }
        MessagesCommand::Suppress { email: Some(email), remove, reason } => {
            let actor = j1msky_audit::Actor::cli();
            let now = context::now();
            let (changed, message) = if remove {
                let changed = delivery::unsuppress(&db, &actor, &email, now).await.map_err(fail)?;
                (
                    changed,
                    if changed { format!("{email} may get mail again") } else { format!("{email} was not suppressed") },
                )
            } else {
                let changed = delivery::suppress(&db, &actor, &email, SuppressReason::Operator, &reason, now)
                    .await
                    .map_err(fail)?;
                (
                    changed,
                    if changed { format!("{email} suppressed") } else { format!("{email} was already suppressed") },
                )
            };
            output::done(g, &message, serde_json::json!({"email": email, "changed": changed, "removed": remove}));
        }
    }
    Ok(())
}
