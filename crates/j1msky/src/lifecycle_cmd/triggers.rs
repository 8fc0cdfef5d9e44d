//! `j1msky lifecycle`: the retention triggers' sweep.

use clap::Subcommand;

use crate::context::Globals;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum TriggersCommand {
    /// Not built yet.
    #[command(hide = true)]
    TriggersTodo,
}

pub async fn run(_g: &Globals, cmd: TriggersCommand) -> Result<(), Failure> {
    match cmd {
        TriggersCommand::TriggersTodo => {
            Err(Failure { code: crate::EXIT_INVALID, error: anyhow::anyhow!("not built yet") })
        }
    }
}
