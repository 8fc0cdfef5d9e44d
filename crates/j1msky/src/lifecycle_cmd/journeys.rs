//! `j1msky lifecycle`: journeys, enrollments, preview and send-test.

use clap::Subcommand;

use crate::context::Globals;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum JourneysCommand {
    /// Not built yet.
    #[command(hide = true)]
    JourneysTodo,
}

pub async fn run(_g: &Globals, cmd: JourneysCommand) -> Result<(), Failure> {
    match cmd {
        JourneysCommand::JourneysTodo => {
            Err(Failure { code: crate::EXIT_INVALID, error: anyhow::anyhow!("not built yet") })
        }
    }
}
