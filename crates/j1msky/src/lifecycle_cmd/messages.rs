//! `j1msky lifecycle`: messages and suppressions.

use clap::Subcommand;

use crate::context::Globals;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// Not built yet.
    #[command(hide = true)]
    MessagesTodo,
}

pub async fn run(_g: &Globals, cmd: MessagesCommand) -> Result<(), Failure> {
    match cmd {
        MessagesCommand::MessagesTodo => {
            Err(Failure { code: crate::EXIT_INVALID, error: anyhow::anyhow!("not built yet") })
        }
    }
}
