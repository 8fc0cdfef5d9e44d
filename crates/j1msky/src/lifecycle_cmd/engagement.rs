//! `j1msky lifecycle`: staff to-dos, surveys and the newsletter (the functions the
//! admin pages call).

use clap::Subcommand;
use j1msky_lifecycle::newsletter;
use j1msky_lifecycle::surveys;
use j1msky_lifecycle::todos::{self, Filter};
use j1msky_lifecycle::LifecycleError;
use serde_json::json;

use crate::context::{self, Globals};
use crate::{output, Failure, EXIT_INVALID};

#[derive(Debug, Subcommand)]
pub enum EngagementCommand {
    /// Staff to-dos: open ones (overdue first by due date); --all includes done ones.
    Todos {
        #[arg(long)]
        all: bool,
        /// Only overdue ones.
        #[arg(long, conflicts_with = "all")]
        overdue: bool,
        /// Only this customer's.
        #[arg(long)]
        customer: Option<String>,
    },
    /// Act on one to-do.
    Todo {
        #[command(subcommand)]
        action: TodoAction,
    },
    /// Operator-composed newsletters.
    Newsletter {
        #[command(subcommand)]
        action: NewsletterAction,
    },
    /// Answered surveys (NPS, testimonials), newest first.
    Surveys {
        #[arg(long)]
        customer: Option<String>,
        /// Approve this testimonial for publishing (the customer must have consented).
        #[arg(long)]
        approve: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TodoAction {
    /// Mark it done.
    Done { id: String },
    /// Assign it to an operator.
    Assign {
        id: String,
        #[arg(long)]
        to: String,
    },
    /// Open it again.
    Reopen { id: String },
    /// Open a to-do by hand.
    Open {
        #[arg(long)]
        reason: String,
        #[arg(long)]
        customer: Option<String>,
        /// YYYY-MM-DD in the business time zone (default: the catalogue's delay).
        #[arg(long, default_value = "")]
        due: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NewsletterAction {
    /// Every newsletter with its progress.
    List,
    /// Save a draft; the body is read from a file (`-` for stdin).
    Create {
        #[arg(long)]
        subject: String,
        #[arg(long)]
        body_file: std::path::PathBuf,
    },
    /// Print what will be sent (subject, text part, HTML part), rendered from the
    /// `newsletter` template.
    Preview { id: String },
    /// Sends it, as it would be queued now, to one address (marked as a test; nothing is
    /// queued) through --smtp-url or --mail-dir (the same flags as `serve`).
    SendTest {
        id: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        mail: crate::serve::MailArgs,
    },
    /// Queue it to every recipient (batches are queued by the running `reactions` role).
    Send {
        id: String,
        /// Confirm sending to every recipient.
        #[arg(long)]
        yes: bool,
    },
}

fn failure(e: LifecycleError) -> Failure {
    let code = match e {
        LifecycleError::Invalid { .. }
        | LifecycleError::NotFound(_)
        | LifecycleError::Conflict(_)
        | LifecycleError::Template { .. } => EXIT_INVALID,
        _ => 1,
    };
    Failure { code, error: anyhow::anyhow!(e) }
}

pub async fn run(g: &Globals, cmd: EngagementCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let result = exec(g, &db, cmd).await;
    db.close().await;
    result
}

fn todo_row(t: &todos::Todo) -> Vec<String> {
    let state = match t.done_at {
        Some(at) => format!(
            "done {}{}",
            output::when(Some(at)),
            t.done_by_email.as_ref().map(|e| format!(" by {e}")).unwrap_or_default()
        ),
        None if t.overdue => "OVERDUE".into(),
        None => "open".into(),
    };
    vec![
        t.id.clone(),
        output::when(Some(t.due_at)),
        t.customer_name.clone().or_else(|| t.customer_id.clone()).unwrap_or_else(|| "-".into()),
        t.reason.clone(),
        t.assignee_email.clone().unwrap_or_else(|| "-".into()),
        state,
    ]
}

const TODO_HEADER: &[&str] = &["id", "due", "customer", "reason", "assignee", "state"];

async fn exec(g: &Globals, db: &j1msky_db::Db, cmd: EngagementCommand) -> Result<(), Failure> {
    let actor = context::actor();
    let now = context::now();
    match cmd {
        EngagementCommand::Todos { all, overdue, customer } => {
            let filter = if all {
                Filter::All
            } else if overdue {
                Filter::Overdue
            } else {
                Filter::Open
            };
            let list = todos::list(db, filter, customer.as_deref(), now, 1_000).await.map_err(failure)?;
            output::list(g, &list, TODO_HEADER, todo_row);
            Ok(())
        }
        EngagementCommand::Todo { action } => {
            let t = match action {
                TodoAction::Done { id } => todos::done(db, &actor, &id, None, now).await,
                TodoAction::Assign { id, to } => todos::assign(db, &actor, &id, &to, now).await,
                TodoAction::Reopen { id } => {
                    let catalogue = context::catalogue_in_force(g, db).await?;
                    let due = todos::due_at(&catalogue, "", now).map_err(failure)?;
                    todos::reopen(db, &actor, &id, due, now).await
                }
                TodoAction::Open { reason, customer, due } => {
                    let catalogue = context::catalogue_in_force(g, db).await?;
                    let due_at = todos::due_at(&catalogue, &due, now).map_err(failure)?;
                    match todos::open_manual(db, &actor, customer.as_deref(), &reason, due_at, now).await {
                        Ok(id) => todos::get(db, &id, now).await,
                        Err(e) => Err(e),
                    }
                }
            }
            .map_err(failure)?;
            output::list(g, std::slice::from_ref(&t), TODO_HEADER, todo_row);
            Ok(())
        }
        EngagementCommand::Surveys { customer, approve } => {
            if let Some(id) = approve {
                let s = surveys::approve_testimonial(db, &actor, &id, now).await.map_err(failure)?;
                output::done(g, &format!("testimonial {id} approved for publishing"), json!({"approved": s.id}));
                return Ok(());
            }
            let list = surveys::list(db, customer.as_deref(), true, 1_000).await.map_err(failure)?;
            output::list(g, &list, &["id", "answered", "customer", "kind", "score", "comment", "testimonial"], |s| {
                let testimonial = match (&s.testimonial, s.approved_at, s.publish_consent) {
                    (None, _, _) => "-".to_string(),
                    (Some(t), Some(_), _) => format!("{t} [approved]"),
                    (Some(t), None, true) => format!("{t} [may publish]"),
                    (Some(t), None, false) => format!("{t} [private]"),
                };
                vec![
                    s.id.clone(),
                    output::when(s.answered_at),
                    s.customer_name.clone(),
                    s.kind.as_str().into(),
                    s.score.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    s.comment.clone().unwrap_or_else(|| "-".into()),
                    testimonial,
                ]
            });
            Ok(())
        }
        EngagementCommand::Newsletter { action } => newsletter_cmd(g, db, action, &actor, now).await,
    }
}

async fn newsletter_cmd(
    g: &Globals,
    db: &j1msky_db::Db,
    action: NewsletterAction,
    actor: &j1msky_audit::Actor,
    now: i64,
) -> Result<(), Failure> {
    match action {
        NewsletterAction::List => {
            let list = newsletter::list(db, 1_000).await.map_err(failure)?;
            output::list(g, &list, &["id", "created", "subject", "state", "queued", "sent"], |n| {
                vec![
                    n.id.clone(),
                    output::when(Some(n.created_at)),
                    n.subject.clone(),
                    n.state.clone(),
                    n.queued.to_string(),
                    n.sent.to_string(),
                ]
            });
            Ok(())
        }
        NewsletterAction::Create { subject, body_file } => {
            let body = if body_file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&body_file)
            }
            .map_err(|e| Failure { code: EXIT_INVALID, error: anyhow::anyhow!("{}: {e}", body_file.display()) })?;
            let n = newsletter::create(db, actor, &subject, &body, now).await.map_err(failure)?;
            output::done(
                g,
                &format!("draft {} saved; preview it with `j1msky lifecycle newsletter preview {}`", n.id, n.id),
                json!({"id": n.id}),
            );
            Ok(())
        }
        NewsletterAction::Preview { id } => {
            let recording: std::sync::Arc<dyn j1msky_lifecycle::transport::Transport> =
                std::sync::Arc::new(j1msky_lifecycle::transport::Recording::default());
            let c = super::journeys::ctx(g, recording).await?;
            let n = newsletter::get(db, &id).await.map_err(failure)?;
            let audience = newsletter::audience(db).await.map_err(failure)?;
            let r = newsletter::render(&c, &n, now).await.map_err(failure)?;
            if g.json {
                output::json(
                    &json!({"id": n.id, "audience": audience, "subject": r.subject, "text": r.text, "html": r.html}),
                );
            } else {
                println!("To: {audience} customer(s) with a contact address (marketing consent checked at send time)");
                println!("Subject: {}\n\n{}\n--- HTML ---\n{}", r.subject, r.text, r.html);
            }
            Ok(())
        }
        NewsletterAction::SendTest { id, to, mail } => {
            let Some(transport) = mail.transport()? else {
                return Err(Failure {
                    code: EXIT_INVALID,
                    error: anyhow::anyhow!(
                        "send-test needs a transport: --smtp-url URL or --mail-dir DIR (or J1MSKY_SMTP_URL / J1MSKY_MAIL_DIR)"
                    ),
                });
            };
            let c = super::journeys::ctx(g, transport).await?;
            let message_id = newsletter::send_test(&c, &id, &to).await.map_err(failure)?;
            output::done(
                g,
                &format!("test of newsletter {id} sent to {to}: Message-ID <{message_id}>"),
                json!({"id": id, "to": to, "message_id": message_id}),
            );
            Ok(())
        }
        NewsletterAction::Send { id, yes } => {
            if !yes {
                return Err(Failure {
                    code: EXIT_INVALID,
                    error: anyhow::anyhow!("sending goes to every recipient: add --yes to confirm (preview it first)"),
                });
            }
            let n = newsletter::send(db, actor, &id, now).await.map_err(failure)?;
            output::done(
                g,
                &format!("newsletter {} is being queued ({})", n.id, n.state),
                json!({"id": n.id, "state": n.state}),
            );
            Ok(())
        }
    }
}
