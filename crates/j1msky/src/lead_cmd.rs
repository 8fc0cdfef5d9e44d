//! `j1msky lead list|qualify|trial|pilot`: the same functions as `/admin/leads`.

use std::sync::Arc;

use clap::Subcommand;
use j1msky_audit::Actor;
use j1msky_core::SystemClock;
use j1msky_ops::leads::trial::{self, Terms};
use j1msky_ops::leads::{self, LeadError, Mailer};
use serde_json::json;

use crate::context::{self, Globals};
use crate::{output, Failure, EXIT_INVALID};

#[derive(Debug, Subcommand)]
pub enum LeadCommand {
    /// The leads, newest first.
    List,
    /// Qualify a lead: notes and the plan to try (default: suggested from its volume).
    Qualify {
        /// The lead's customer id.
        id: String,
        #[arg(long, default_value = "")]
        notes: String,
        #[arg(long)]
        plan: Option<String>,
    },
    /// Start a lead's trial and mail its owner a set-password link (or put it in line
    /// when every pilot slot is taken). `--next` starts the first lead in line.
    Trial {
        /// The lead's customer id.
        #[arg(required_unless_present = "next")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        next: bool,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        days: Option<i64>,
        #[arg(long)]
        tasks: Option<i64>,
        /// The public URL the link in the mail points to.
        #[arg(long, env = "J1MSKY_PUBLIC_URL")]
        public_url: String,
    },
    /// Pilot mode: show it, set the number of trial slots, or turn it off.
    Pilot {
        #[arg(long, conflicts_with = "off")]
        slots: Option<i64>,
        #[arg(long)]
        off: bool,
    },
}

fn failure(e: LeadError) -> Failure {
    let code = if matches!(e, LeadError::Invalid { .. } | LeadError::Conflict(_) | LeadError::NotFound(_)) {
        EXIT_INVALID
    } else {
        1
    };
    Failure { code, error: e.into() }
}

pub async fn lead(g: &Globals, c: LeadCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    // The version the running processes serve (plans, trial terms), not the `--config` file.
    let catalogue = Arc::new(context::catalogue_in_force(g, &db).await?).into();
    let ctx = j1msky_ops::Ctx { db, catalogue, clock: Arc::new(SystemClock) };
    let now = ctx.clock.now_micros();
    let actor = Actor::cli();
    match c {
        LeadCommand::List => {
            let all = leads::list(&ctx, 500).await.map_err(failure)?;
            let header = ["id", "received", "company", "contact", "tasks/month", "suggested", "stage"];
            output::list(g, &all, &header, |l| {
                vec![
                    l.customer_id.clone(),
                    output::when(Some(l.created_at)),
                    l.company.clone(),
                    format!("{} <{}>", l.contact_name, l.email),
                    l.expected_monthly_tasks.to_string(),
                    output::opt(l.suggested_plan.as_deref()),
                    if l.waiting_since.is_some() { format!("{} (waiting)", l.stage) } else { l.stage.to_string() },
                ]
            });
        }
        LeadCommand::Qualify { id, notes, plan } => {
            let l = leads::qualify(&ctx, &actor, &id, &notes, plan.as_deref(), now).await.map_err(failure)?;
            let msg = format!("{} qualified; plan to try: {}", l.company, output::opt(l.suggested_plan.as_deref()));
            output::done(g, &msg, json!(l));
        }
        LeadCommand::Trial { id, next, plan, days, tasks, public_url } => {
            let mailer = Mailer { templates_dir: context::templates_dir(g), base_url: public_url };
            let outcome = match (next, id) {
                (true, _) => trial::start_next(&ctx, &mailer, &actor, now).await.map_err(failure)?,
                (false, Some(id)) => {
                    let terms = Terms { plan, days, tasks };
                    Some(trial::start(&ctx, &mailer, &actor, &id, &terms, now).await.map_err(failure)?)
                }
                (false, None) => None,
            };
            let msg = match &outcome {
                Some(trial::Outcome::Started { customer_id, owner_email, .. }) => {
                    format!("trial of {customer_id} started; {owner_email} was mailed a set-password link")
                }
                Some(trial::Outcome::Waiting { customer_id, position }) => {
                    format!("every pilot slot is taken: {customer_id} waits, number {position} in line")
                }
                None => "nobody is waiting".into(),
            };
            output::done(g, &msg, json!(outcome));
        }
        LeadCommand::Pilot { slots, off } => {
            if off || slots.is_some() {
                trial::set_slots(&ctx, &actor, if off { None } else { slots }, now).await.map_err(failure)?;
            }
            let p = trial::pilot(&ctx).await.map_err(failure)?;
            let msg = match p.slots {
                Some(n) => format!("pilot mode on: {} of {n} slots taken, {} waiting", p.running, p.waiting.len()),
                None => format!("pilot mode off ({} trials running)", p.running),
            };
            output::done(g, &msg, json!(p));
        }
    }
    Ok(())
}
