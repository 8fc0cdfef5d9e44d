//! `j1msky lifecycle`: to-dos, surveys and the newsletter.

use clap::Subcommand;

use crate::context::Globals;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum EngagementCommand {
    /// Not built yet.
    #[command(hide = true)]
    EngagementTodo,
}

pub async fn run(_g: &Globals, cmd: EngagementCommand) -> Result<(), Failure> {
    match cmd {
        EngagementCommand::EngagementTodo => {
            Err(Failure { code: crate::EXIT_INVALID, error: anyhow::anyhow!("not built yet") })
        }
    }
}
