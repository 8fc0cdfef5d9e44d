//! `j1msky lifecycle`: messages and suppressions.

use clap::Subcommand;
use j1msky_lifecycle::delivery::{self, SuppressReason};

use crate::context::{self, Globals};
use crate::{output, Failure};

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// Lifecycle mail, newest first: its state, recipient and last error
    /// (`messages requeue ID` sends an unknown or failed one again).
    #[command(args_conflicts_with_subcommands = true)]
    Messages {
        #[command(subcommand)]
        action: Option<MessageAction>,
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

#[derive(Debug, Subcommand)]
pub enum MessageAction {
    /// Puts an `unknown` or `failed` message back in the queue (audited). An `unknown`
    /// one may already be in the recipient's mailbox: it may arrive twice; --yes says
    /// you accept that.
    Requeue {
        id: String,
        #[arg(long)]
        yes: bool,
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
        MessagesCommand::Messages { action: Some(MessageAction::Requeue { id, yes }), .. } => {
            if !yes {
                return Err(Failure {
                    code: crate::EXIT_INVALID,
                    error: anyhow::anyhow!(
                        "requeue: the mail server may already have received message {id}; sending it again may deliver it twice. Add --yes to requeue it anyway"
                    ),
                });
            }
            let m = delivery::requeue(&db, &j1msky_audit::Actor::cli(), &id, context::now()).await.map_err(fail)?;
            output::done(g, &format!("message {id} queued again"), serde_json::json!({"id": m.id, "state": m.state}));
        }
        MessagesCommand::Messages { action: None, state, customer, limit } => {
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
