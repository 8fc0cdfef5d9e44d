//! `j1msky lifecycle sweep`: runs the time-driven retention triggers now (what the
//! hourly timer runs) and prints what fired.

use std::sync::Arc;

use clap::Subcommand;
use j1msky_core::clock::SystemClock;

use crate::context::{self, Globals};
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum TriggersCommand {
    /// Run the time-driven retention triggers (inactivity, churn spike) now.
    Sweep {
        /// Print what would fire without firing it.
        #[arg(long)]
        dry_run: bool,
        /// The public base URL the queued mail's links point to (as `serve --public-url`).
        #[arg(long, env = "J1MSKY_PUBLIC_URL", default_value = "http://localhost:8080")]
        public_url: String,
    },
}

pub async fn run(g: &Globals, cmd: TriggersCommand) -> Result<(), Failure> {
    match cmd {
        TriggersCommand::Sweep { dry_run, public_url } => {
            let db = context::open_db(g).await?;
            let catalogue = Arc::new(context::catalogue_in_force(g, &db).await?);
            // The sweep enrolls (queueing the journeys' first mails), opens to-dos and raises
            // alerts; it sends nothing itself and calls no Stripe: a running process's sender
            // delivers what it queued.
            let ctx = j1msky_lifecycle::Ctx {
                db,
                catalogue: catalogue.into(),
                clock: Arc::new(SystemClock),
                transport: Arc::new(j1msky_lifecycle::transport::Recording::default()),
                stripe: None,
                base_url: public_url.trim_end_matches('/').to_string(),
                templates_dir: context::templates_dir(g),
            };
            let fired = j1msky_lifecycle::triggers::sweep(&ctx, context::now(), dry_run).await.map_err(|e| {
                let code = match e {
                    j1msky_lifecycle::LifecycleError::Invalid { .. } => crate::EXIT_INVALID,
                    _ => 1,
                };
                Failure { code, error: e.into() }
            })?;
            if g.json {
                let out = serde_json::json!({"dry_run": dry_run, "fired": fired});
                println!("{out}");
                return Ok(());
            }
            let verb = if dry_run { "would fire" } else { "fired" };
            for f in &fired {
                println!("{:<22} {:<26} {:<20} {}", f.trigger, f.customer_id, f.occurrence, f.action);
            }
            println!("{} trigger(s) {verb}", fired.len());
            Ok(())
        }
    }
}
