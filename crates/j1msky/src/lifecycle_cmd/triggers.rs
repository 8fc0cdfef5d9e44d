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
    },
}

pub async fn run(g: &Globals, cmd: TriggersCommand) -> Result<(), Failure> {
    match cmd {
        TriggersCommand::Sweep { dry_run } => {
            let db = context::open_db(g).await?;
            let catalogue = Arc::new(context::load_catalogue(g)?);
            // The sweep only enrolls, opens to-dos and raises alerts: it sends nothing and
            // calls no Stripe, so the mail settings are not needed here.
            let ctx = j1msky_lifecycle::Ctx {
                db,
                catalogue,
                clock: Arc::new(SystemClock),
                transport: Arc::new(j1msky_lifecycle::transport::Recording::default()),
                stripe: None,
                base_url: String::new(),
                templates_dir: "config/templates".into(),
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
